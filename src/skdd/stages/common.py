"""What every stage shares: reading verified input artifacts and the training-loop plumbing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skdd import lineage, storage
from skdd.data.dataset import ImageDataset
from skdd.data.parquet import read_shards
from skdd.errors import SkddError


@dataclass
class DatasetArtifact:
    path: Path
    manifest: dict[str, Any]
    train: ImageDataset | None   # None only when `splits` left it out
    test: ImageDataset | None
    val: ImageDataset | None = None   # held out of the training data at ingest; never trained on

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest["dataset"]

    @property
    def name(self) -> str:
        return self.info["name"]


def open_input(uri: str | Path, kind: str | tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    """Resolve an input URI and verify every file against its manifest before anything reads it."""
    path = storage.input_dir(uri)
    return path, lineage.verify_artifact(path, expect_kind=kind)


DATASET_SPLITS = ("train", "val", "test")


def load_dataset(uri: str | Path, *, splits: tuple[str, ...] = ("train", "test")) -> DatasetArtifact:
    """The verified dataset artifact with the named splits read; an absent `val` or `test` folder gives None.

    `val` is read only when asked for (the default leaves it out): it is for choosing and measuring, not training."""
    path, manifest = open_input(uri, "dataset")
    unknown = [s for s in splits if s not in DATASET_SPLITS]
    if unknown:
        raise SkddError(f"load_dataset: unknown split {unknown[0]!r} (expected one of {', '.join(DATASET_SPLITS)})")
    loaded: dict[str, ImageDataset | None] = {s: None for s in DATASET_SPLITS}
    for split in splits:
        folder = path / split
        if not folder.is_dir():
            if split == "train":
                raise SkddError(f"{path}: dataset artifact has no '{split}' split")
            continue
        ds = read_shards(folder)
        ds.validate(str(folder))
        loaded[split] = ds
    return DatasetArtifact(path=path, manifest=manifest, train=loaded["train"], test=loaded["test"], val=loaded["val"])
