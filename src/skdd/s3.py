"""The S3 backend of the artifact store (`s3://bucket/prefix`), used only through `skdd.storage`.

An artifact is the set of objects under `prefix/`; it is complete exactly when `prefix/manifest.json`
exists. Uploads therefore delete any old manifest first, then upload every file, then drop objects
left over from an older artifact, and upload the manifest last: a failure at any point leaves no
manifest, so the artifact reads as incomplete. Downloads refuse a prefix without a manifest.

Two runs may publish the same content-keyed prefix at once (two pipeline runs with the same inputs and KFP's
cache off). Interleaved, their files would mix under one manifest, so a publish first takes a lock object,
`<prefix>.publishing` (its owner, run and start time in S3 user metadata), created with a conditional write
(`If-None-Match: *`, which AWS S3, SeaweedFS and MinIO honour); the other run waits for it (SKDD_S3_LOCK_WAIT
seconds, default 300), then publishes in turn, or fails with one line naming the lock. A lock left by an earlier attempt of the same run (same SKDD_RUN_ID, as a
Kubeflow retry has; or, locally, same host and cache) is taken over at once, so a retry after a crash is not
blocked; a lock older than SKDD_S3_LOCK_TTL seconds (default 1800) belongs to a run that died and is broken too
(conditionally, so two runs cannot both break it). Before its manifest lands a run checks the lock is still its
own, which also covers a server that ignored the condition.

Configuration comes from the environment:
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any source of boto3's usual credential chain),
  AWS_REGION or AWS_DEFAULT_REGION (default us-east-1),
  SKDD_S3_ENDPOINT_URL or AWS_ENDPOINT_URL (an S3-compatible server; path-style addressing),
  SKDD_S3_MAX_ATTEMPTS (default 5, botocore "standard" retries with backoff),
  SKDD_S3_CONNECT_TIMEOUT / SKDD_S3_READ_TIMEOUT (seconds; defaults 5 and 60),
  SKDD_S3_LOCK_WAIT / SKDD_S3_LOCK_TTL (seconds; the publish lock above),
  SKDD_CACHE (local cache root; default ~/.cache/skdd/s3), artifacts cached at <root>/<bucket>/<prefix>.
Every failure becomes a one-line `SkddError` naming the URI; secrets are never part of it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, unquote

from skdd.errors import SkddError
from skdd.layout import MANIFEST, STAGING_SUFFIX, swap_into_place

MIB = 1 << 20
MULTIPART_THRESHOLD = 8 * MIB
MULTIPART_CHUNKSIZE = 8 * MIB


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str  # no leading or trailing slash, never empty

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"


def parse(uri: str | object) -> S3Uri:
    text = str(uri)
    if not text.startswith("s3://"):
        raise SkddError(f"{text}: not an s3:// URI")
    bucket, _, prefix = text[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise SkddError(f"{text}: S3 URI has no bucket (use s3://bucket/prefix)")
    if not prefix:
        raise SkddError(f"{text}: S3 URI has no prefix (use s3://bucket/prefix; an artifact is never a whole bucket)")
    if any(part in ("", ".", "..") for part in prefix.split("/")):
        raise SkddError(f"{text}: S3 prefix has an empty, '.' or '..' component")
    return S3Uri(bucket, prefix)


# --- local cache -----------------------------------------------------------------------------

def cache_root() -> Path:
    root = os.environ.get("SKDD_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "skdd" / "s3"


def cache_dir(uri: str | S3Uri) -> Path:
    """Where an artifact is cached locally: <cache root>/<bucket>/<prefix>."""
    s3uri = uri if isinstance(uri, S3Uri) else parse(uri)
    return cache_root() / s3uri.bucket / Path(*s3uri.prefix.split("/"))


# --- client ----------------------------------------------------------------------------------

def _env_number(name: str, default: float, kind: type = float) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise SkddError(f"{name}={raw!r}: expected a number") from None
    if value <= 0:
        raise SkddError(f"{name}={raw!r}: must be positive")
    return value


def endpoint_url() -> str | None:
    return os.environ.get("SKDD_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def client(uri: str | S3Uri = "s3://", **overrides: Any):
    """A boto3 S3 client from the environment (path-style, standard retries, bounded timeouts).

    `overrides` (connect_timeout, read_timeout, max_attempts) win over the SKDD_S3_* variables.
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise SkddError(f"{uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or session.region_name or "us-east-1"
    config = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard",
                 "max_attempts": int(overrides.get("max_attempts") or _env_number("SKDD_S3_MAX_ATTEMPTS", 5, int))},
        connect_timeout=overrides.get("connect_timeout") or _env_number("SKDD_S3_CONNECT_TIMEOUT", 5),
        read_timeout=overrides.get("read_timeout") or _env_number("SKDD_S3_READ_TIMEOUT", 60),
        # Plain checksums only: some S3-compatible servers reject the newer default trailing checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    try:
        return session.client("s3", region_name=region, endpoint_url=endpoint_url(), config=config)
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed endpoint URL
        raise _error(uri, "client setup", exc) from None


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE,
                          max_concurrency=4)


def _scrub(text: str) -> str:
    """Drop anything secret-looking from a message, and keep it to one line."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())


def _error(uri: object, action: str, exc: BaseException) -> SkddError:
    """One readable line: URI, what was being done, and why (classified where we can)."""
    from botocore import exceptions as bce

    code = _error_code(exc)
    if not isinstance(exc, bce.ClientError):  # boto3's transfer wrappers (S3UploadFailedError) carry the text only
        for known in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AccessDenied"):
            if known in str(exc):
                code = known
                break
    endpoint = endpoint_url() or "the default AWS endpoint"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "AuthorizationHeaderMalformed"):
        reason = f"credentials rejected by {endpoint} ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    elif code in ("AccessDenied", "403"):
        reason = f"access denied by {endpoint}"
    elif code == "NoSuchBucket":
        reason = f"bucket does not exist on {endpoint}"
    elif isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        reason = "no usable S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    elif isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ConnectionClosedError,
                          bce.ReadTimeoutError)) or "Could not connect" in str(exc) or "timeout" in str(exc).lower():
        reason = f"cannot reach S3 endpoint {endpoint} ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return SkddError(_scrub(f"{uri}: S3 {action} failed: {reason}"))


def _error_code(exc: BaseException) -> str:
    from botocore import exceptions as bce

    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, bce.ClientError) else ""


# error codes of an object that is not there, and of a conditional request whose condition failed
MISSING = ("NoSuchKey", "404", "NotFound")
PRECONDITION_FAILED = ("PreconditionFailed", "412")


def _republished(s3uri: S3Uri) -> SkddError:
    return SkddError(f"{s3uri}: the artifact was republished while it was being read; read it again")


def _list(cli: Any, s3uri: S3Uri) -> dict[str, int]:
    """key -> size for every object under the prefix (as a folder: `prefix/`)."""
    return {key: size for key, (size, _) in _list_detailed(cli, s3uri.bucket, s3uri.prefix + "/").items()}


# --- download --------------------------------------------------------------------------------

def _download_files(cli: Any, s3uri: S3Uri, rels: Iterable[str], tmp: Path) -> None:
    """Download `s3uri/<rel>` for each rel into a fresh folder `tmp` (the caller renames it into place)."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = transfer_config()
    for rel in sorted(rels):
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        cli.download_file(s3uri.bucket, s3uri.key(rel), str(target), Config=config)


def _head(cli: Any, bucket: str, key: str) -> dict | None:
    """The object's HEAD response, or None when there is no such object."""
    try:
        return cli.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001
        if _error_code(exc) in MISSING:
            return None
        raise


def etag(cli: Any, bucket: str, key: str) -> str | None:
    """The object's ETag, or None when there is no such object."""
    head = _head(cli, bucket, key)
    return None if head is None else head["ETag"]


def _cache_matches(local: Path, manifest_bytes: bytes, sizes: dict[str, int]) -> bool:
    try:
        if (local / MANIFEST).read_bytes() != manifest_bytes:
            return False
    except OSError:
        return False
    return all((local / rel).is_file() and (local / rel).stat().st_size == size for rel, size in sizes.items())


def download(uri: str, *, fresh: bool = False, **client_overrides: Any) -> Path:
    """Fetch a complete artifact into the local cache and return that folder.

    A cached copy whose manifest and file sizes match the remote one is reused as is (content is
    re-hashed by `lineage.verify_artifact` where a stage needs it). `fresh=True` always re-downloads:
    an audit must see the bytes in the bucket, not a cached copy that would hide a same-size change.
    """
    s3uri = parse(uri)
    local = cache_dir(s3uri)
    cli = client(s3uri, **client_overrides)
    try:
        objects = _list(cli, s3uri)
        manifest_key = s3uri.key(MANIFEST)
        if manifest_key not in objects:
            if etag(cli, s3uri.bucket, f"{s3uri.prefix}{LOCK_SUFFIX}") is not None:
                raise SkddError(f"{s3uri}: incomplete artifact: another run is publishing it right now; read it "
                                "again when that run is done")
            if objects:
                raise SkddError(f"{s3uri}: incomplete artifact (no {MANIFEST}); re-run the stage that produces it")
            raise SkddError(f"{s3uri}: input artifact not found")
        obj = cli.get_object(Bucket=s3uri.bucket, Key=manifest_key)
        manifest_bytes, manifest_etag = obj["Body"].read(), obj["ETag"]
        files = {key[len(s3uri.prefix) + 1:]: size for key, size in objects.items() if key != manifest_key}
        if not fresh and _cache_matches(local, manifest_bytes, files):
            return local
        tmp = local.with_name(f"{local.name}.download-{os.getpid()}")
        _download_files(cli, s3uri, [rel for rel in files if not rel.endswith("/")], tmp)  # "/": folder markers
        if etag(cli, s3uri.bucket, manifest_key) != manifest_etag:   # a publish began meanwhile: files may mix
            shutil.rmtree(tmp, ignore_errors=True)
            raise _republished(s3uri)
        (tmp / MANIFEST).write_bytes(manifest_bytes)  # the manifest we listed, written last
    except SkddError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/boto3/transfer errors
        if _error_code(exc) in MISSING:   # listed, then gone: a publish is replacing it
            raise _republished(s3uri) from None
        raise _error(s3uri, "download", exc) from None
    swap_into_place(tmp, local)
    return local


def _list_detailed(cli: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for page in cli.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (obj["Size"], obj.get("ETag", ""))
    return found


# --- upload ----------------------------------------------------------------------------------

def _delete_keys(cli: Any, bucket: str, keys: list[str]) -> None:
    """Delete objects, 1000 per request (S3's DeleteObjects limit)."""
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start:start + 1000]]
        cli.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def upload_file(cli: Any, path: Path, bucket: str, key: str, config: Any) -> None:
    """Upload one file (multipart above MULTIPART_THRESHOLD). A seam for fault-injection tests."""
    cli.upload_file(str(path), bucket, key, Config=config)


LOCK_SUFFIX = ".publishing"


class PublishLock:
    """The `<prefix>.publishing` object that makes concurrent publishes of one prefix take turns (see above)."""

    def __init__(self, cli: Any, s3uri: S3Uri):
        self.cli, self.uri = cli, s3uri
        self.key = f"{s3uri.prefix}{LOCK_SUFFIX}"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        # the logical run: a retry of a Kubeflow task keeps SKDD_RUN_ID; a local re-run keeps host and cache
        # (two live processes sharing a cache would already share the staging folder, so they never run at once)
        self.holder = os.environ.get("SKDD_RUN_ID") or f"{socket.gethostname()}:{cache_root()}"
        self.etag: str | None = None

    def _holder(self) -> tuple[dict, str] | None:
        """The current lock's owner, holder and start time (its S3 user metadata) and ETag; None when there is
        no lock. Metadata, read with HEAD, not a body: a server restarted mid-publish may have lost the small
        object's data but still answers HEAD from its metadata store."""
        head = _head(self.cli, self.uri.bucket, self.key)
        if head is None:
            return None
        info = {k: unquote(v) for k, v in (head.get("Metadata") or {}).items()}
        return info, head["ETag"]

    def acquire(self) -> None:
        wait = _env_number("SKDD_S3_LOCK_WAIT", 300)
        ttl = _env_number("SKDD_S3_LOCK_TTL", 1800)
        start = time.monotonic()
        meta = {"owner": quote(self.owner), "holder": quote(self.holder), "since": f"{time.time():.3f}"}
        while True:
            try:
                self.etag = self.cli.put_object(Bucket=self.uri.bucket, Key=self.key, Body=b"", Metadata=meta,
                                                IfNoneMatch="*")["ETag"]
                return
            except Exception as exc:  # noqa: BLE001
                if _error_code(exc) not in (*PRECONDITION_FAILED, "ConditionalRequestConflict", "409"):
                    raise
            holder = self._holder()
            if holder is None:
                continue                          # released between our put and our read: try again
            info, lock_etag = holder
            try:
                age = time.time() - float(info.get("since") or 0)
            except ValueError:
                age = float("inf")                # not a lock skdd wrote: treat it as expired
            takeover = info.get("holder") == self.holder   # left by an earlier attempt of this same run
            if takeover or age > ttl:             # its run died mid-publish: break it, only if it is still that one
                if takeover:
                    print(f"skdd: taking over the publish lock s3://{self.uri.bucket}/{self.key} left by an earlier "
                          "attempt of this run", file=sys.stderr, flush=True)
                try:
                    self.cli.delete_object(Bucket=self.uri.bucket, Key=self.key, IfMatch=lock_etag)
                except Exception as exc:  # noqa: BLE001
                    if _error_code(exc) not in (*PRECONDITION_FAILED, *MISSING):
                        raise
                continue
            waited = time.monotonic() - start
            if waited > wait:
                raise SkddError(f"{self.uri}: another run ({info.get('owner', '?')}) has been publishing this "
                                f"artifact for {age:.0f} s (lock s3://{self.uri.bucket}/{self.key}); waited "
                                f"{wait:.0f} s (SKDD_S3_LOCK_WAIT); re-run later, or delete the lock if that run died")
            time.sleep(min(1.0, 0.05 + 0.1 * waited))

    def check_still_ours(self) -> None:
        holder = self._holder()
        if holder is None or holder[0].get("owner") != self.owner:
            raise SkddError(f"{self.uri}: lost the publish lock s3://{self.uri.bucket}/{self.key} to another run "
                            "before the manifest was written (the server may ignore conditional writes); "
                            "nothing was published by this run")

    def release(self, patience: float = 5.0) -> None:
        """Delete the lock if it is still ours. A publish that failed because the server went away releases
        too, so keep trying for `patience` seconds: a lock left behind blocks every publish of this prefix
        until it expires."""
        if self.etag is None:
            return
        deadline = time.monotonic() + patience
        while True:
            try:
                self.cli.delete_object(Bucket=self.uri.bucket, Key=self.key, IfMatch=self.etag)
                break
            except Exception as exc:  # noqa: BLE001
                if _error_code(exc) in (*PRECONDITION_FAILED, *MISSING):
                    break                         # not ours any more, or already gone: nothing to undo
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        self.etag = None


def upload(stage: Path, uri: str, **client_overrides: Any) -> None:
    """Publish a staged folder (which holds manifest.json) as the artifact at `uri`, manifest last, holding the
    prefix's publish lock throughout."""
    s3uri = parse(uri)
    if not (stage / MANIFEST).is_file():
        raise SkddError(f"{s3uri}: refusing to upload {stage}: no {MANIFEST}")
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.relative_to(stage).as_posix() != MANIFEST
                   and p.relative_to(stage).parts[0] != "checkpoints")   # checkpoints stay local for a retry
    cli = client(s3uri, **client_overrides)
    config = transfer_config()
    lock = PublishLock(cli, s3uri)
    try:
        lock.acquire()
        manifest_key = s3uri.key(MANIFEST)
        # 1. the old artifact stops being complete before anything of the new one lands
        cli.delete_object(Bucket=s3uri.bucket, Key=manifest_key)
        existing = _list(cli, s3uri)
        if manifest_key in existing:  # delete is idempotent; a manifest still listed means it did not take
            raise SkddError(f"{s3uri}: could not remove the previous {MANIFEST}")
        # 2. every file
        wanted = set()
        for path in files:
            key = s3uri.key(path.relative_to(stage).as_posix())
            wanted.add(key)
            upload_file(cli, path, s3uri.bucket, key, config)
        # 3. objects of an older artifact that the new one does not have
        _delete_keys(cli, s3uri.bucket, sorted(set(existing) - wanted - {manifest_key}))
        # 4. the manifest: now the artifact is complete
        lock.check_still_ours()
        upload_file(cli, stage / MANIFEST, s3uri.bucket, manifest_key, config)
    except SkddError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/boto3/transfer errors
        raise _error(s3uri, "upload", exc) from None
    finally:
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - a lock left behind expires after SKDD_S3_LOCK_TTL
            print(f"skdd: warning: publish lock s3://{s3uri.bucket}/{lock.key} not released "
                  f"({type(exc).__name__}); it expires after SKDD_S3_LOCK_TTL", file=sys.stderr, flush=True)


# --- checkpoint mirror -----------------------------------------------------------------------

class CheckpointMirror:
    """The checkpoints of an s3:// output, mirrored to `s3://bucket/<prefix>.partial/checkpoints/step-N/`.

    Why: an s3:// output stages in the local cache, and on Kubernetes that cache dies with the pod. A pod that
    is preempted or evicted mid-distillation would lose every checkpoint; its retry (same content-keyed output
    URI) pulls the newest complete checkpoint from here and resumes instead of starting over. A checkpoint's
    `meta.json` is uploaded last, so a folder without it (an upload cut short) is ignored and later pruned.
    """

    def __init__(self, output_uri: str, **client_overrides: Any):
        out = parse(output_uri)
        self.root = S3Uri(out.bucket, f"{out.prefix}{STAGING_SUFFIX}/checkpoints")
        self._overrides = client_overrides
        self._cli: Any = None

    def __str__(self) -> str:
        return str(self.root)

    def _client(self) -> Any:
        if self._cli is None:
            self._cli = client(self.root, **self._overrides)
        return self._cli

    def _folders(self) -> dict[str, dict[str, int]]:
        """checkpoint folder name -> {relative file: size}, complete or not."""
        folders: dict[str, dict[str, int]] = {}
        for key, size in _list(self._client(), self.root).items():
            name, _, rel = key[len(self.root.prefix) + 1:].partition("/")
            if rel and not rel.endswith("/"):
                folders.setdefault(name, {})[rel] = size
        return folders

    def push(self, folder: Path) -> None:
        """Upload one local checkpoint folder, meta.json last (the folder is complete once it lands)."""
        cli, config = self._client(), transfer_config()
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        try:
            for path in sorted(files, key=lambda p: p.name == "meta.json"):
                rel = path.relative_to(folder).as_posix()
                upload_file(cli, path, self.root.bucket, self.root.key(f"{folder.name}/{rel}"), config)
        except Exception as exc:  # noqa: BLE001
            raise _error(self.root, "checkpoint upload", exc) from None

    def prune(self, keep: set[str]) -> None:
        """Delete every remote checkpoint folder not named in `keep` (older ones, and incomplete uploads)."""
        try:
            stale = [self.root.key(f"{name}/{rel}") for name, files in self._folders().items() if name not in keep
                     for rel in files]
            _delete_keys(self._client(), self.root.bucket, stale)
        except Exception as exc:  # noqa: BLE001
            raise _error(self.root, "checkpoint pruning", exc) from None

    def clear(self) -> None:
        """Delete every mirrored checkpoint (the artifact is complete, or the params changed)."""
        self.prune(set())

    def pull_newest(self, local_root: Path, newer_than: str | None) -> str | None:
        """Download the newest complete remote checkpoint into `local_root/<name>` if it is newer than the newest
        local one (`newer_than`); returns its name, or None when there is nothing newer."""
        try:
            folders = self._folders()
            complete = sorted(name for name, files in folders.items() if "meta.json" in files)
            if not complete or (newer_than is not None and complete[-1] <= newer_than):
                return None
            name = complete[-1]
            tmp = local_root / f".pull-{name}"
            remote = S3Uri(self.root.bucket, f"{self.root.prefix}/{name}")
            _download_files(self._client(), remote, folders[name], tmp)
            for rel, size in folders[name].items():
                if (tmp / rel).stat().st_size != size:
                    raise SkddError(f"{self.root}/{name}/{rel}: downloaded {(tmp / rel).stat().st_size} bytes, "
                                    f"listed {size}")
        except SkddError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _error(self.root, "checkpoint download", exc) from None
        final = local_root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return name
