"""A hash of a dataset source's *content*, so that a cache keyed on it (Kubeflow's, for ingest) changes whenever
the data does, without reading the data into skdd first.

Local folder or file: every file's path, size and sha256. s3:// prefix or object: every object's key, size and
ETag (no download). torchvision: the fixed download URLs and md5 sums (the download is verified against them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from skdd.errors import SkddError, one_line
from skdd.lineage import sha256_file


def _hash_tree(path: Path, digest: "hashlib._Hash") -> int:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if f == path else f.relative_to(path).as_posix()
        digest.update(f"{rel}\0{f.stat().st_size}\0{sha256_file(f)}\n".encode())
    return len(files)


def _hash_s3(location: str, digest: "hashlib._Hash") -> int:
    from skdd import s3
    from skdd.data.s3_sources import list_source

    s3uri = s3.parse(location)
    try:
        objects, _ = list_source(s3.client(s3uri), s3uri)
    except Exception as exc:  # noqa: BLE001 - botocore errors become one line
        raise s3._error(s3uri, "listing", exc) from None
    for key, (size, etag) in sorted(objects.items()):
        digest.update(f"{key}\0{size}\0{etag}\n".encode())
    return len(objects)


def source_fingerprint(source: str, name: str, location: str) -> str:
    """`sha256:<hex>` of the source's content (see the module docstring); one line when it cannot be read."""
    from skdd.data.sources import torchvision_resources

    digest = hashlib.sha256(json.dumps({"source": source, "name": name}).encode())
    if source == "torchvision":
        digest.update(json.dumps(torchvision_resources(name)).encode())
        return f"sha256:{digest.hexdigest()}"
    location = str(location)
    try:
        if location.startswith("s3://"):
            count = _hash_s3(location, digest)
        else:
            path = Path(location).expanduser()
            if not path.exists():
                raise SkddError(f"{source} source not found: {path}")
            count = _hash_tree(path, digest)
    except OSError as exc:
        raise SkddError(f"{location}: cannot read the dataset source ({one_line(exc)})") from None
    if not count:
        raise SkddError(f"{location}: the dataset source holds no files")
    return f"sha256:{digest.hexdigest()}"
