"""The val split ingest carves out of the source's training data: per class, deterministic, disjoint from train
and test, recorded in the manifest so an auditor can check it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skdd.stages.registry import run_stage
from skdd.data.parquet import read_shards
from skdd.errors import SkddError
from skdd.stages.common import load_dataset

CLASSES, PER_CLASS, TEST_PER_CLASS, SIZE = 4, 9, 3, 8


def indexed_npz(path: Path) -> Path:
    """Train image i carries its source index i in its first two pixels (i = 256*p0 + p1) and a constant
    third pixel of 1; test images carry 2 there, so every image says where it came from. Labels are
    interleaved (not sorted), so class-major order differs from source order."""
    def make(n: int, marker: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n * CLASSES) % CLASSES
        x = np.zeros((len(labels), SIZE, SIZE), dtype=np.uint8)
        for i in range(len(labels)):
            x[i, 0, 0], x[i, 0, 1], x[i, 0, 2] = i // 256, i % 256, marker
            x[i, 4:, :] = 40 * labels[i] + 10           # class-dependent content
        return x, labels.astype(np.int64)

    x_train, y_train = make(PER_CLASS, 1)
    x_test, y_test = make(TEST_PER_CLASS, 2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def ingest(npz: Path, out: Path, *extra: str) -> dict:
    return run_stage("ingest", output=str(out), inputs={},
                     overrides=["source=npz", f"location={npz}", "name=idx", *extra])


def source_ids(ds) -> list[int]:
    px = ds.images[:, 0, 0, :3].to(torch.int64)
    return (px[:, 0] * 256 + px[:, 1]).tolist()


def markers(ds) -> set[int]:
    return set(ds.images[:, 0, 0, 2].tolist())


@pytest.fixture
def npz(tmp_path) -> Path:
    return indexed_npz(tmp_path / "indexed.npz")


def test_val_is_held_out_of_train_per_class(npz, tmp_path):
    manifest = ingest(npz, tmp_path / "d", "val_per_class=3", "val_seed=5")
    art = load_dataset(tmp_path / "d", splits=("train", "val", "test"))
    train_ids, val_ids = source_ids(art.train), source_ids(art.val)
    source_labels = np.arange(PER_CLASS * CLASSES) % CLASSES

    # disjoint, and together exactly the source's training set; labels follow the images
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(PER_CLASS * CLASSES))
    assert art.train.labels.tolist() == source_labels[train_ids].tolist()
    assert art.val.labels.tolist() == source_labels[val_ids].tolist()
    # none of it from test, and test is whole
    assert markers(art.train) == markers(art.val) == {1} and markers(art.test) == {2}
    assert len(art.test) == TEST_PER_CLASS * CLASSES
    # train keeps source order; val is class-major, ascending source index within a class
    assert train_ids == sorted(train_ids)
    assert val_ids == sorted(val_ids, key=lambda i: (source_labels[i], i))
    assert art.val.class_counts() == [3] * CLASSES and art.train.class_counts() == [PER_CLASS - 3] * CLASSES

    info = manifest["dataset"]
    assert info["counts"] == {"train": (PER_CLASS - 3) * CLASSES, "val": 3 * CLASSES, "test": TEST_PER_CLASS * CLASSES}
    assert info["class_counts"]["val"] == [3] * CLASSES
    assert (info["val_per_class"], info["val_seed"]) == (3, 5)
    expected = hashlib.sha256(np.array(sorted(val_ids), dtype="<i8").tobytes()).hexdigest()
    assert info["val_source_indices_sha256"] == expected
    assert manifest["metrics"]["counts"] == info["counts"]
    # mean/std are the remaining training images' own
    mean, std = art.train.mean_std()
    assert info["mean"] == [round(m, 6) for m in mean] and info["std"] == [round(s, 6) for s in std]
    assert read_shards(tmp_path / "d" / "val", split="val").images.equal(art.val.images)


def shard_hashes(manifest: dict) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in manifest["files"] if f["path"].endswith(".parquet")}


def test_same_params_same_bytes_other_seed_other_split(npz, tmp_path):
    a = ingest(npz, tmp_path / "a", "val_per_class=3")
    torch.manual_seed(123)                      # the global RNG plays no part
    b = ingest(npz, tmp_path / "b", "val_per_class=3")
    assert shard_hashes(a) == shard_hashes(b) and any(p.startswith("val/") for p in shard_hashes(a))
    assert a["dataset"]["val_source_indices_sha256"] == b["dataset"]["val_source_indices_sha256"]

    c = ingest(npz, tmp_path / "c", "val_per_class=3", "val_seed=1")
    assert c["dataset"]["val_source_indices_sha256"] != a["dataset"]["val_source_indices_sha256"]
    va = source_ids(load_dataset(tmp_path / "a", splits=("val",)).val)
    vc = source_ids(load_dataset(tmp_path / "c", splits=("val",)).val)
    assert va != vc


def test_ingest_leaves_the_global_rng_alone(npz, tmp_path):
    torch.manual_seed(7)
    ingest(npz, tmp_path / "d", "val_per_class=3")
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))


def test_zero_means_no_val_split(npz, tmp_path):
    manifest = ingest(npz, tmp_path / "d", "val_per_class=0")
    assert not (tmp_path / "d" / "val").exists()
    info = manifest["dataset"]
    assert info["counts"] == {"train": PER_CLASS * CLASSES, "test": TEST_PER_CLASS * CLASSES}
    assert set(info["class_counts"]) == {"train", "test"} and "val_source_indices_sha256" not in info
    art = load_dataset(tmp_path / "d", splits=("train", "val", "test"))
    assert art.val is None and source_ids(art.train) == list(range(PER_CLASS * CLASSES))


def test_too_large_val_per_class_is_one_line_naming_the_key(npz, tmp_path):
    with pytest.raises(SkddError) as err:
        ingest(npz, tmp_path / "d", f"val_per_class={PER_CLASS}")
    message = str(err.value)
    assert "ingest.val_per_class" in message and "'0'" in message and str(PER_CLASS) in message
    assert "\n" not in message
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_default_load_leaves_val_out(npz, tmp_path):
    ingest(npz, tmp_path / "d", "val_per_class=2")
    art = load_dataset(tmp_path / "d")
    assert art.val is None and art.train is not None and art.test is not None
    full = load_dataset(tmp_path / "d", splits=("train", "val", "test"))
    assert len(full.train) + len(full.val) == PER_CLASS * CLASSES and len(full.test) == TEST_PER_CLASS * CLASSES
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["dataset"]["counts"]["val"] == 2 * CLASSES


def test_train_per_class_caps_train_after_val_deterministically(npz, tmp_path):
    manifest = ingest(npz, tmp_path / "d", "val_per_class=3", "train_per_class=2")
    art = load_dataset(tmp_path / "d", splits=("train", "val", "test"))
    train_ids, val_ids = source_ids(art.train), source_ids(art.val)
    source_labels = np.arange(PER_CLASS * CLASSES) % CLASSES
    # val is the uncapped run's (the cap draws from what val left), train a class-balanced part of the rest
    uncapped = ingest(npz, tmp_path / "u", "val_per_class=3")
    assert val_ids == source_ids(load_dataset(tmp_path / "u", splits=("val",)).val)
    rest = set(source_ids(load_dataset(tmp_path / "u").train))
    assert set(train_ids) < rest and not set(train_ids) & set(val_ids)
    assert art.train.class_counts() == [2] * CLASSES and train_ids == sorted(train_ids)
    assert art.train.labels.tolist() == source_labels[train_ids].tolist()
    assert len(art.test) == TEST_PER_CLASS * CLASSES          # test is never capped
    info = manifest["dataset"]
    assert info["train_per_class"] == 2 and info["counts"]["train"] == 2 * CLASSES
    expected = hashlib.sha256(np.array(train_ids, dtype="<i8").tobytes()).hexdigest()
    assert info["train_source_indices_sha256"] == expected
    assert "train_source_indices_sha256" not in uncapped["dataset"]
    # mean/std are the kept images' own; the same params give the same bytes
    mean, _ = art.train.mean_std()
    assert info["mean"] == [round(m, 6) for m in mean]
    again = ingest(npz, tmp_path / "again", "val_per_class=3", "train_per_class=2")
    assert shard_hashes(again) == shard_hashes(manifest)
    # a cap above a class's size keeps the class whole
    whole = ingest(npz, tmp_path / "w", "val_per_class=3", f"train_per_class={PER_CLASS}")
    assert whole["dataset"]["counts"]["train"] == (PER_CLASS - 3) * CLASSES


def test_train_per_class_zero_is_refused_naming_the_key(npz, tmp_path):
    with pytest.raises(SkddError) as err:
        ingest(npz, tmp_path / "d", "train_per_class=0")
    assert "train_per_class" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "d" / "manifest.json").exists()
