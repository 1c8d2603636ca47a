"""Stage 1: read a dataset from its source into Parquet shards plus a manifest.

Every later stage reads this artifact, never the source, so the source files' sha256 recorded
here is where an audit's chain ends.

Where the data comes from: `source` + `location` in params, overridden by the environment
(`$SKDD_DATA_SOURCE` for the kind, `$SKDD_DATA_LOCATION` for the folder, file or `s3://` prefix), so one
params file serves a connected machine (torchvision download) and an offline or cluster one. The
manifest records the *effective* source and location, whichever won. An `s3://` location is fetched
into the local cache first and every source file is recorded by its s3:// URI.

The validation split: `val_per_class` images of every class are held out of the source's *training*
data into `val/` (drawn with a private generator seeded by `val_seed`, so the same source and params
give the same bytes), for later stages to choose checkpoints and measure classifiers without touching
`test/`. No stage trains on it. The rest stays in `train/` in source order; `val/` is class-major in
ascending source index; the manifest records the sha256 of the sorted held-out source indices.

`train_per_class` caps what stays in `train/` (a class-balanced draw, same seed): the smoke profile and the
tests that run whole pipelines use it, because a teacher's pass over 60 000 images is most of their time.
The manifest then records the sha256 of the kept source indices as well.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.dataset import ImageDataset
from skdd.data.parquet import write_shards
from skdd.data.sources import KINDS, read_source
from skdd.errors import SkddError

LOCATION_ENV = "SKDD_DATA_LOCATION"
SOURCE_ENV = "SKDD_DATA_SOURCE"


@dataclass
class IngestParams:
    name: str = param("mnist", help="dataset name: mnist, fashion-mnist, cifar10, or your own")
    source: str = param("torchvision", choices=KINDS, help=f"${SOURCE_ENV} overrides")
    location: str = param("data/downloads", help=f"folder, file or s3:// prefix of the source (torchvision: "
                                                 f"the download folder); ${LOCATION_ENV} overrides")
    rows_per_shard: int = param(20000, ge=1)
    val_per_class: int = param(500, ge=0, help="training images per class held out into val/ (never trained on; "
                                               "for checkpoint/hyper-parameter choice and probes); 0: no val split")
    val_seed: int = param(0, ge=0, help="seed of the val split's draw (a private generator)")
    train_per_class: int | None = param(None, ge=1, help="keep at most this many training images per class, "
                                                         "drawn with val_seed after val is held out (smoke runs "
                                                         "and quick looks); null: all")


def effective_params(params: IngestParams) -> IngestParams:
    """The params with the environment's overrides applied: what the manifest must record."""
    source = os.environ.get(SOURCE_ENV) or params.source
    if source not in KINDS:
        raise SkddError(f"${SOURCE_ENV}={source!r}: expected one of {', '.join(KINDS)}")
    return replace(params, source=source, location=os.environ.get(LOCATION_ENV) or params.location)


def read_any(kind: str, location: str, name: str) -> tuple:
    """Read a local or s3:// source; returns the splits and [(recorded path, local file)]."""
    if location.startswith("s3://"):
        if kind == "torchvision":
            raise SkddError(f"{location}: the torchvision source downloads from the internet; "
                            "for a copy in S3 name its format (idx, cifar-python, imagefolder, npz)")
        from skdd.data.s3_sources import fetch_source

        local, origin = fetch_source(location)
        splits, files = read_source(kind, str(local), name=name)
        return splits, [(origin.get(str(Path(f)), str(f)), Path(f)) for f in files]
    splits, files = read_source(kind, location, name=name)
    return splits, [(str(Path(f)), Path(f)) for f in files]


def draw_per_class(labels: torch.Tensor, num_classes: int, per_class: int, seed: int) -> list[torch.Tensor]:
    """For every class, at most `per_class` of its positions in `labels`, drawn by a fresh generator seeded with
    `seed` (so the draw depends only on the labels and params, never on the global RNG)."""
    labels = labels.detach().to("cpu", torch.int64)
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()   # ascending source index
        picked.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return picked


def split_val(train: ImageDataset, per_class: int, seed: int) -> tuple[ImageDataset, ImageDataset | None, np.ndarray]:
    """Hold `per_class` images of every class out of `train`: (rest of train in source order, val class-major in
    ascending source index or None when per_class is 0, the held-out source indices sorted as int64)."""
    if per_class == 0:
        return train, None, np.zeros(0, dtype=np.int64)
    counts = train.class_counts()
    for c, n in enumerate(counts):
        if n <= per_class:
            raise SkddError(f"ingest.val_per_class={per_class}: class {train.classes[c]!r} has only {n} training "
                            f"images, and at least one must stay in train (lower ingest.val_per_class, 0 for no val)")
    val_idx = torch.cat([torch.sort(chosen).values
                         for chosen in draw_per_class(train.labels, train.num_classes, per_class, seed)])
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val_idx] = False
    return train.subset(keep), train.subset(val_idx), np.sort(val_idx.numpy()).astype(np.int64)


def cap_train(train: ImageDataset, per_class: int | None, seed: int) -> tuple[ImageDataset, np.ndarray | None]:
    """At most `per_class` images of every class of `train`, kept in source order: (the subset, positions kept
    in `train`, int64) or (train, None) when there is no cap."""
    if per_class is None:
        return train, None
    kept = torch.sort(torch.cat(draw_per_class(train.labels, train.num_classes, per_class, seed))).values
    return train.subset(kept), kept.numpy().astype(np.int64)


def run(params: IngestParams, inputs: dict[str, str], output: str) -> dict:
    params = effective_params(params)
    location = params.location
    splits, files = read_any(params.source, location, params.name)
    for split_name, split in (("train", splits.train), ("test", splits.test)):
        if split is not None:
            split.validate(f"{location} ({split_name})")
    if splits.test is not None and splits.test.shape != splits.train.shape:
        raise SkddError(f"{location}: test images {splits.test.shape} differ from train images {splits.train.shape}")
    train, val, val_indices = split_val(splits.train, params.val_per_class, params.val_seed)
    train, kept = cap_train(train, params.train_per_class, params.val_seed)
    with storage.staged_output(output) as stage:
        for name in ("train", "val", "test"):
            folder = stage / name
            if folder.exists():
                shutil.rmtree(folder)
        write_shards(train, stage / "train", split="train", rows_per_shard=params.rows_per_shard)
        counts = {"train": len(train)}
        class_counts = {"train": train.class_counts()}
        if val is not None:
            write_shards(val, stage / "val", split="val", rows_per_shard=params.rows_per_shard)
            counts["val"] = len(val)
            class_counts["val"] = val.class_counts()
        if splits.test is not None:
            write_shards(splits.test, stage / "test", split="test", rows_per_shard=params.rows_per_shard)
            counts["test"] = len(splits.test)
            class_counts["test"] = splits.test.class_counts()
        mean, std = train.mean_std()   # of the training images only: val and test stay unseen
        info = {"name": params.name, "classes": list(train.classes), "shape": list(train.shape),
                "num_classes": train.num_classes, "counts": counts, "class_counts": class_counts,
                "mean": [round(m, 6) for m in mean], "std": [round(s, 6) for s in std],
                "val_per_class": params.val_per_class, "val_seed": params.val_seed,
                "train_per_class": params.train_per_class}
        if kept is not None:             # which source images train sees, for an auditor (source index order)
            rest = np.setdiff1d(np.arange(len(splits.train), dtype=np.int64), val_indices)
            info["train_source_indices_sha256"] = hashlib.sha256(rest[kept].astype("<i8").tobytes()).hexdigest()
        if val is not None:
            info["val_source_indices_sha256"] = hashlib.sha256(val_indices.astype("<i8").tobytes()).hexdigest()
        sources = [{"path": recorded, "bytes": local.stat().st_size, "sha256": lineage.sha256_file(local)}
                   for recorded, local in files]
        return lineage.write_manifest(
            stage, kind="dataset", stage="ingest", params=as_dict(params), params_hash=params_hash(params),
            inputs=[{"name": "source", "uri": str(location), "kind": params.source, "files": sources}],
            metrics={"counts": counts}, extra={"dataset": info, "sources": sources})
