"""Dataset sources in S3: plain objects (no manifest) that `ingest` reads and `lineage verify` re-hashes.

Kept apart from `skdd.s3`, which stores skdd artifacts: a source is one object or every object under a prefix,
cached by size and ETag under `<cache>/_sources/`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from skdd.errors import SkddError
from skdd.s3 import (MIB, MISSING, S3Uri, _error, _error_code, _list_detailed, cache_root, client, parse,
                     transfer_config)


def source_cache_dir(uri: str | S3Uri) -> Path:
    s3uri = uri if isinstance(uri, S3Uri) else parse(uri)
    return cache_root() / "_sources" / s3uri.bucket / Path(*s3uri.prefix.split("/"))


def fetch_source(uri: str, **client_overrides: Any) -> tuple[Path, dict[str, str]]:
    """Download a dataset source (one object, or every object under a prefix) into the cache.

    Returns the local path to read (the file, or the folder) and local path -> s3:// URI for every file,
    so ingest records where each source byte came from. Files already cached with the remote size and
    ETag are not fetched again.
    """
    s3uri = parse(uri)
    cli = client(s3uri, **client_overrides)
    local_root = source_cache_dir(s3uri)
    try:
        objects, single = list_source(cli, s3uri)
        if not objects:
            raise SkddError(f"{s3uri}: dataset source not found (no object or prefix with that name)")
        origin: dict[str, str] = {}
        for key, (size, etag) in sorted(objects.items()):
            if key.endswith("/"):
                continue
            target = local_root if single else local_root / Path(*key[len(s3uri.prefix) + 1:].split("/"))
            stamp = target.with_name(target.name + ".etag")
            if not (target.is_file() and target.stat().st_size == size and stamp.is_file()
                    and stamp.read_text() == etag):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f"{target.name}.download-{os.getpid()}")
                cli.download_file(s3uri.bucket, key, str(tmp), Config=transfer_config())
                os.replace(tmp, target)
                stamp.write_text(etag)
            origin[str(target)] = f"s3://{s3uri.bucket}/{key}"
    except SkddError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/boto3/transfer errors
        raise _error(s3uri, "source download", exc) from None
    return local_root, origin


def list_source(cli: Any, s3uri: S3Uri) -> tuple[dict[str, tuple[int, str]], bool]:
    """key -> (size, ETag) of a dataset source: every object under `prefix/`, or else the one object named
    `prefix` (an archive, an .npz); the flag says which. Empty when neither exists."""
    objects = _list_detailed(cli, s3uri.bucket, s3uri.prefix + "/")
    if objects:
        return objects, False
    return {k: v for k, v in _list_detailed(cli, s3uri.bucket, s3uri.prefix).items() if k == s3uri.prefix}, True


def object_sha256(uri: str, **client_overrides: Any) -> str | None:
    """sha256 of one object's current bytes (streamed), or None when the object is gone."""
    text = str(uri)
    bucket, _, key = text[len("s3://"):].partition("/")
    cli = client(text, **client_overrides)
    try:
        body = cli.get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as exc:  # noqa: BLE001
        if _error_code(exc) in MISSING:
            return None
        raise _error(text, "read", exc) from None
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(MIB), b""):
        digest.update(chunk)
    return digest.hexdigest()
