"""Stage 1: read a dataset from its source into Parquet shards plus a manifest.

Every later stage reads this artifact, never the source, so the source files' sha256 recorded
here is where an audit's chain ends.

Where the data comes from: `source` + `location` in params, overridden by the environment
(`$SKDD_DATA_SOURCE` for the kind, `$SKDD_DATA_LOCATION` for the folder, file or `s3://` prefix), so one
params file serves a connected machine (torchvision download) and an offline or cluster one. The
manifest records the *effective* source and location, whichever won. An `s3://` location is fetched
into the local cache first and every source file is recorded by its s3:// URI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.parquet import write_shards
from skdd.data.sources import read_source
from skdd.errors import SkddError

SOURCES = ("torchvision", "idx", "cifar-python", "imagefolder", "npz")
LOCATION_ENV = "SKDD_DATA_LOCATION"
SOURCE_ENV = "SKDD_DATA_SOURCE"


@dataclass
class IngestParams:
    name: str = param("mnist", help="dataset name: mnist, fashion-mnist, cifar10, or your own")
    source: str = param("torchvision", choices=SOURCES, help=f"${SOURCE_ENV} overrides")
    location: str = param("data/downloads", help=f"folder, file or s3:// prefix of the source (torchvision: "
                                                 f"the download folder); ${LOCATION_ENV} overrides")
    rows_per_shard: int = param(20000, ge=1)


def effective_params(params: IngestParams) -> IngestParams:
    """The params with the environment's overrides applied: what the manifest must record."""
    source = os.environ.get(SOURCE_ENV) or params.source
    if source not in SOURCES:
        raise SkddError(f"${SOURCE_ENV}={source!r}: expected one of {', '.join(SOURCES)}")
    return replace(params, source=source, location=os.environ.get(LOCATION_ENV) or params.location)


def read_any(kind: str, location: str, name: str) -> tuple:
    """Read a local or s3:// source; returns the splits and [(recorded path, local file)]."""
    if location.startswith("s3://"):
        if kind == "torchvision":
            raise SkddError(f"{location}: the torchvision source downloads from the internet; "
                            "for a copy in S3 name its format (idx, cifar-python, imagefolder, npz)")
        from skdd import s3

        local, origin = s3.fetch_source(location)
        splits, files = read_source(kind, str(local), name=name)
        return splits, [(origin.get(str(Path(f)), str(f)), Path(f)) for f in files]
    splits, files = read_source(kind, location, name=name)
    return splits, [(str(Path(f)), Path(f)) for f in files]


def run(params: IngestParams, inputs: dict[str, str], output: str) -> dict:
    params = effective_params(params)
    location = params.location
    splits, files = read_any(params.source, location, params.name)
    for split_name, split in (("train", splits.train), ("test", splits.test)):
        if split is not None:
            split.validate(f"{location} ({split_name})")
    if splits.test is not None and splits.test.shape != splits.train.shape:
        raise SkddError(f"{location}: test images {splits.test.shape} differ from train images {splits.train.shape}")
    with storage.staged_output(output) as stage:
        for name in ("train", "test"):
            folder = stage / name
            if folder.exists():
                for old in folder.iterdir():
                    old.unlink()
        write_shards(splits.train, stage / "train", split="train", rows_per_shard=params.rows_per_shard)
        counts = {"train": len(splits.train)}
        class_counts = {"train": splits.train.class_counts()}
        if splits.test is not None:
            write_shards(splits.test, stage / "test", split="test", rows_per_shard=params.rows_per_shard)
            counts["test"] = len(splits.test)
            class_counts["test"] = splits.test.class_counts()
        mean, std = splits.train.mean_std()
        info = {"name": params.name, "classes": list(splits.train.classes), "shape": list(splits.train.shape),
                "num_classes": splits.train.num_classes, "counts": counts, "class_counts": class_counts,
                "mean": [round(m, 6) for m in mean], "std": [round(s, 6) for s in std]}
        sources = [{"path": recorded, "bytes": local.stat().st_size, "sha256": lineage.sha256_file(local)}
                   for recorded, local in files]
        return lineage.write_manifest(
            stage, kind="dataset", stage="ingest", params=as_dict(params), params_hash=params_hash(params),
            inputs=[{"name": "source", "uri": str(location), "kind": params.source, "files": sources}],
            metrics={"counts": counts}, extra={"dataset": info, "sources": sources})
