"""Manifests: what every artifact records about itself, and how it is verified.

A manifest lists every file of the artifact with its size and sha256, the stage and params that
made it, and its inputs (by URI and the sha256 of *their* manifests), so the chain from a
synthetic set back to the source files can be re-hashed end to end. It never holds credentials.

A manifest also carries a digest of its own canonical content (`manifest_digest`), checked by every reader,
so an edit of any manifest, a root's included (nobody else records a root's hash), is refused. The digest
catches edits, not forgers (anyone can recompute it): for that, a manifest written while `SKDD_SIGNING_KEY` is
set also carries an HMAC-SHA256 of its digest under that key (`signature`; the key itself is never stored, only
a short id of it), which `skdd lineage verify --key` checks for every artifact of the ancestry.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

import skdd
from skdd.errors import SkddError
from skdd.layout import MANIFEST

KEY_CHARS = 20              # hex characters of a content key
SCHEMA_VERSION = 2          # 2: manifest_digest (and optional signature); 1 had neither
DIGEST_FIELD, SIGNATURE_FIELD = "manifest_digest", "signature"
SIGNING_KEY_ENV = "SKDD_SIGNING_KEY"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _artifact_files(root: Path) -> list[Path]:
    skip = {MANIFEST}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in skip
                  and "checkpoints" not in p.relative_to(root).parts)


def code_version() -> dict[str, Any]:
    info: dict[str, Any] = {"skdd": skdd.__version__, "git_commit": None, "image": os.environ.get("SKDD_IMAGE")}
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def environment(device: str | None = None) -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "platform": platform.platform()}


def input_record(name: str, uri: str | Path, path: Path) -> dict[str, Any]:
    """How a manifest refers to a parent artifact: its URI and the hash of the parent's manifest."""
    return {"name": name, "uri": str(uri), "manifest_sha256": sha256_file(path / MANIFEST)}


def run_key(params_hash: str, inputs: list[dict[str, Any]]) -> str:
    """The key a stage's checkpoints are kept under: its params and its inputs' manifests (a checkpoint made
    from other inputs is never resumed)."""
    blob = json.dumps({"params": params_hash, "inputs": [r["manifest_sha256"] for r in inputs]},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace), its digest and signature left out."""
    body = {k: v for k, v in manifest.items() if k not in (DIGEST_FIELD, SIGNATURE_FIELD)}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def signing_key() -> bytes | None:
    """The key from the environment, or None when signing is off (an empty value counts as unset)."""
    value = os.environ.get(SIGNING_KEY_ENV, "")
    return value.encode() if value else None


def key_id(key: bytes) -> str:
    """A short public name for a key, so a mismatch says "signed with another key" rather than "tampered"."""
    return hashlib.sha256(b"skdd-key-id:" + key).hexdigest()[:16]


def signature(digest: str, key: bytes) -> dict[str, str]:
    return {"alg": "hmac-sha256", "key_id": key_id(key),
            "value": hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()}


def signature_problem(manifest: dict[str, Any], key: bytes) -> str | None:
    """Why the manifest's signature does not prove it was written by a holder of `key` (None: it does)."""
    sig = manifest.get(SIGNATURE_FIELD)
    if not isinstance(sig, dict) or sig.get("alg") != "hmac-sha256":
        return "not signed"
    if sig.get("key_id") != key_id(key):
        return f"signed with another key (key id {sig.get('key_id')}, yours {key_id(key)})"
    if not hmac.compare_digest(str(sig.get("value")), signature(manifest_digest(manifest), key)["value"]):
        return "signature does not match its content"
    return None


def write_manifest(root: Path, *, kind: str, stage: str, params: dict[str, Any], params_hash: str,
                   inputs: list[dict[str, Any]] | None = None, metrics: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """Hash every file under `root` and write `manifest.json` last (atomically): the artifact is now complete."""
    files = [{"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _artifact_files(root)]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(),
        "params": params,
        "params_hash": params_hash,
        "inputs": inputs or [],
        "files": files,
        "environment": environment(device),
        "metrics": metrics or {},
        **(extra or {}),
    }
    manifest = json.loads(json.dumps(manifest))   # the digest is of what a reader will load (str keys, lists)
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    key = signing_key()
    if key is not None:
        manifest[SIGNATURE_FIELD] = signature(manifest[DIGEST_FIELD], key)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, root / MANIFEST)
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise SkddError(f"{root}: incomplete artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SkddError(f"{path}: manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or "files" not in manifest or "kind" not in manifest:
        raise SkddError(f"{path}: not a skdd manifest")
    version = manifest.get("schema_version")
    if version == 1:
        raise SkddError(f"{path}: manifest schema 1 has no digest of its own, so edits to it cannot be caught; "
                        "re-run the stage that made it")
    if version != SCHEMA_VERSION:
        raise SkddError(f"{path}: unsupported manifest schema_version {version!r}")
    if manifest.get(DIGEST_FIELD) != manifest_digest(manifest):
        raise SkddError(f"{path}: manifest edited since it was written (its content does not match its "
                        f"{DIGEST_FIELD})")
    return manifest


def verify_artifact(root: Path, expect_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Re-hash every recorded file; refuse the artifact naming the first file that is missing or changed."""
    manifest = read_manifest(root)
    kinds = (expect_kind,) if isinstance(expect_kind, str) else expect_kind
    if kinds and manifest["kind"] not in kinds:
        raise SkddError(f"{root}: expected a {' or '.join(kinds)} artifact, got '{manifest['kind']}'")
    problem = next(file_problems(root, manifest), None)
    if problem is not None:
        raise SkddError(problem)
    return manifest


def file_problems(root: Path, manifest: dict[str, Any]) -> Iterator[str]:
    """One line per recorded file that is missing or whose bytes no longer match its sha256, lazily."""
    for entry in manifest["files"]:
        path = root / entry["path"]
        if not path.is_file():
            yield f"{path}: missing (listed in {root / MANIFEST})"
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            yield f"{path}: contents do not match the sha256 recorded in {root / MANIFEST}"


# --------------------------------------------------------------------- content-addressed artifacts
def content_key(stage: str, params: dict[str, Any], inputs: Mapping[str, str], extra: str = "") -> str:
    """Where a stage's output lives in a content-addressed store (Kubeflow's `{root}/{stage}/{key}`): the same
    stage, skdd version, params and input manifests give the same key, so a finished artifact is found again."""
    blob = json.dumps({"stage": stage, "skdd": skdd.__version__, "params": params, "inputs": dict(inputs),
                       "extra": extra}, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_CHARS]


def _remote_manifest_exists(uri: str) -> bool:
    from skdd import s3

    s3uri = s3.parse(uri)
    try:
        return s3.etag(s3.client(s3uri), s3uri.bucket, s3uri.key(MANIFEST)) is not None
    except Exception as exc:  # noqa: BLE001 - botocore errors become one line
        raise s3._error(s3uri, "lookup", exc) from None


def existing_artifact(uri: str) -> dict[str, Any] | None:
    """The manifest of a complete artifact already at `uri` (re-verified), or None when there is none."""
    if uri.startswith("s3://"):
        if not _remote_manifest_exists(uri):
            return None
        from skdd import storage

        path = storage.input_dir(uri)
    else:
        path = Path(uri)
        if not (path / MANIFEST).is_file():
            return None
    try:
        return verify_artifact(path)
    except SkddError as exc:
        raise SkddError(f"{uri}: an artifact exists at this content key but fails verification ({exc}); "
                        "delete it to recompute") from None
