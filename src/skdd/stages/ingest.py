"""Stage 1: read a dataset from its source into Parquet shards plus a manifest.

Every later stage reads this artifact, never the source, so the source files' sha256 recorded
here is where an audit's chain ends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.parquet import write_shards
from skdd.data.sources import read_source
from skdd.errors import SkddError

SOURCES = ("torchvision", "idx", "cifar-python", "imagefolder", "npz")
LOCATION_ENV = "SKDD_DATA_LOCATION"


@dataclass
class IngestParams:
    name: str = param("mnist", help="dataset name: mnist, fashion-mnist, cifar10, or your own")
    source: str = param("idx", choices=SOURCES)
    location: str = param("../shared/datasets/mnist", help=f"folder/file of the source; ${LOCATION_ENV} overrides")
    rows_per_shard: int = param(20000, ge=1)


def run(params: IngestParams, inputs: dict[str, str], output: str) -> dict:
    location = os.environ.get(LOCATION_ENV) or params.location
    splits, files = read_source(params.source, location, name=params.name)
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
        sources = [{"path": str(Path(f)), "bytes": Path(f).stat().st_size, "sha256": lineage.sha256_file(Path(f))}
                   for f in files]
        return lineage.write_manifest(
            stage, kind="dataset", stage="ingest", params=as_dict(params), params_hash=params_hash(params),
            inputs=[{"name": "source", "uri": str(location), "kind": params.source, "files": sources}],
            metrics={"counts": counts}, extra={"dataset": info, "sources": sources})
