"""Offline copies of the paper's datasets, for machines that cannot download through torchvision.

`make run` calls `python -m skdd.data.offline [params.yaml]` and evaluates what it prints: when the
environment does not already choose a source (`$SKDD_DATA_SOURCE` / `$SKDD_DATA_LOCATION`) and a local
copy of the dataset named in the params file exists, it prints the two `export` lines that point ingest
at it. Otherwise it prints nothing and ingest downloads as its params say. The copy used is recorded in
the dataset's manifest (effective source and location), so results say which data they came from.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

# dataset name -> (source kind, location relative to the repository root, note for the user)
COPIES: dict[str, tuple[str, str, str]] = {
    "mnist": ("idx", "../shared/datasets/mnist", "MNIST, original idx files"),
    "fashion-mnist": ("idx", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST from Debian's dataset-fashion-mnist"),
    "cifar10": ("imagefolder", "../shared/datasets/cifar10-jpeg/cifar10-jpeg.tar.gz",
                "CIFAR-10 JPEG copy (lossy: label results as such)"),
}


def offline_source(params_file: Path, environ: dict[str, str], root: Path) -> tuple[str, Path, str] | None:
    """(kind, absolute location, note) of a local copy to use, or None to leave ingest as configured."""
    if environ.get("SKDD_DATA_SOURCE") or environ.get("SKDD_DATA_LOCATION"):
        return None
    try:
        ingest = (yaml.safe_load(params_file.read_text()) or {}).get("ingest") or {}
    except (OSError, yaml.YAMLError):
        return None   # the stage itself reports a broken params file, with the key at fault
    if ingest.get("source", "torchvision") != "torchvision" or ingest.get("name", "mnist") not in COPIES:
        return None
    kind, location, note = COPIES[ingest.get("name", "mnist")]
    path = (root / location).resolve()
    return (kind, path, note) if path.exists() else None


def main(argv: list[str]) -> int:
    params_file = Path(argv[0] if argv else "params.yaml")
    import os

    found = offline_source(params_file, dict(os.environ), Path.cwd())
    if found is not None:
        kind, path, note = found
        print(f"skdd: no network download needed: ingest reads the local {note} at {path}", file=sys.stderr)
        print(f"export SKDD_DATA_SOURCE={shlex.quote(kind)} SKDD_DATA_LOCATION={shlex.quote(str(path))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
