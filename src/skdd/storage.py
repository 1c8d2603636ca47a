"""The artifact store: where stages read inputs and write outputs.

One interface for every backend, so stages never touch paths directly:
  * `input_dir(uri)`      a local directory holding a *complete* artifact (its manifest exists);
  * `staged_output(uri)`  a context manager yielding a local staging directory; when the block
                          exits cleanly the staged files become the artifact in one step.

An artifact is complete exactly when its `manifest.json` exists, and the manifest is written last.
Locally the staging folder `<out>.partial/` sits beside the output and is renamed into place, so
a crash leaves either the previous output or nothing. The staging folder also holds checkpoints,
which is why it is not a random temp dir: a re-run finds them and resumes.

`s3://bucket/prefix` URIs (see `skdd.s3`) use the local cache `<cache>/<bucket>/<prefix>`:
`input_dir` downloads a complete artifact there; `staged_output` stages in `<cached>.partial/`
(so checkpoints survive a crash) and on success uploads every file and the manifest last, then
keeps the published copy as the cache. A failed upload leaves no manifest in the bucket. Their
checkpoints are also mirrored to `s3://bucket/<prefix>.partial/checkpoints/` (`checkpointer`), because
the local cache does not outlive a preempted pod; the mirror is deleted once the artifact is published.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from skdd.errors import SkddError
from skdd.layout import MANIFEST, STAGING_SUFFIX, swap_into_place

if TYPE_CHECKING:
    from skdd.checkpoint import Checkpointer

__all__ = ["MANIFEST", "STAGING_SUFFIX", "checkpointer", "input_dir", "local_path", "publish", "staged_output",
           "staging_dir", "swap_into_place"]


def _is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def local_path(uri: str | Path) -> Path:
    """The local folder of an artifact URI (for s3:// its cache copy); it may not exist."""
    text = str(uri)
    if _is_s3(text):
        from skdd import s3

        return s3.cache_dir(text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme == "file":
            return Path(text[len("file://"):])
        raise SkddError(f"{text}: storage scheme '{scheme}://' is not supported (use a local path or s3://)")
    return Path(text)


def input_dir(uri: str | Path) -> Path:
    """A local directory with a complete artifact; raises if missing or incomplete."""
    if _is_s3(uri):
        from skdd import s3

        return s3.download(str(uri))
    path = local_path(uri)
    if not path.exists():
        raise SkddError(f"{uri}: input artifact not found")
    if not path.is_dir():
        raise SkddError(f"{uri}: input artifact is not a directory")
    if not (path / MANIFEST).is_file():
        raise SkddError(f"{uri}: incomplete artifact (no {MANIFEST}); re-run the stage that produces it")
    return path


def staging_dir(uri: str | Path) -> Path:
    path = local_path(uri)
    return path.with_name(path.name + STAGING_SUFFIX)


def checkpointer(uri: str | Path, key: str) -> "Checkpointer":
    """The checkpoints of the output at `uri` (in its staging folder), mirrored to S3 for an s3:// output."""
    from skdd.checkpoint import Checkpointer

    mirror = None
    if _is_s3(uri):
        from skdd import s3

        mirror = s3.CheckpointMirror(str(uri))
    return Checkpointer(staging_dir(uri) / "checkpoints", key, mirror=mirror)


@contextlib.contextmanager
def staged_output(uri: str | Path) -> Iterator[Path]:
    """Yield a staging directory; publish it as the artifact only if the block succeeds and wrote a manifest."""
    final = local_path(uri)
    if final.exists() and not final.is_dir():
        raise SkddError(f"{uri}: output path exists and is not a directory")
    stage = staging_dir(uri)
    stage.mkdir(parents=True, exist_ok=True)
    stale = stage / MANIFEST
    if stale.exists():
        stale.unlink()
    yield stage
    if not (stage / MANIFEST).is_file():
        raise RuntimeError(f"stage finished without writing {MANIFEST} in {stage}")
    if _is_s3(uri):
        from skdd import s3

        s3.upload(stage, str(uri))  # raises SkddError and keeps the staging folder (and checkpoints) on failure
        try:
            s3.CheckpointMirror(str(uri)).clear()
        except SkddError as exc:   # the artifact is complete; what is left is only clutter
            print(f"skdd: warning: mirrored checkpoints not deleted: {exc}", file=sys.stderr, flush=True)
    publish(stage, final)


def publish(stage: Path, final: Path) -> None:
    """Swap the staging folder into place; checkpoints are dropped as the artifact is now complete."""
    shutil.rmtree(stage / "checkpoints", ignore_errors=True)
    swap_into_place(stage, final)
