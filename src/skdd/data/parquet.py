"""Parquet shards of an ImageDataset: `part-00000.parquet`, `part-00001.parquet`, ...

Schema: `image` fixed_size_binary(C*H*W) holding the uint8 pixels in CHW order, `label` int16; schema
metadata `skdd.shape` (JSON [C, H, W]), `skdd.classes` (JSON list of names), `skdd.split`.

Writing is deterministic: the same dataset gives byte-identical files (fixed zstd level, no
statistics or timestamps, one row group per shard); pages carry CRCs, verified on read. Reading goes through column buffers with
numpy (no per-row Python) and checks every shard against the schema and against the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from skdd.data.dataset import ImageDataset
from skdd.errors import SkddError

SHARD_GLOB = "part-*.parquet"
META_SHAPE, META_CLASSES, META_SPLIT = b"skdd.shape", b"skdd.classes", b"skdd.split"
_COMPRESSION, _COMPRESSION_LEVEL = "zstd", 3


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _schema(shape: tuple[int, int, int], classes: list[str], split: str) -> pa.Schema:
    c, h, w = shape
    return pa.schema(
        [pa.field("image", pa.binary(c * h * w), nullable=False), pa.field("label", pa.int16(), nullable=False)],
        metadata={
            META_SHAPE: json.dumps([c, h, w]).encode(),
            META_CLASSES: json.dumps(list(classes), ensure_ascii=False).encode(),
            META_SPLIT: split.encode(),
        },
    )


def write_shards(ds: ImageDataset, folder: Path, *, split: str, rows_per_shard: int = 20000) -> list[Path]:
    """Write `ds` as Parquet shards of at most `rows_per_shard` rows into `folder`; return their paths."""
    folder = Path(folder)
    if rows_per_shard < 1:
        raise SkddError(f"write_shards {folder}: rows_per_shard must be >= 1, got {rows_per_shard}")
    ds.validate(f"write_shards {folder}")
    if ds.num_classes > np.iinfo(np.int16).max + 1:
        raise SkddError(f"write_shards {folder}: {ds.num_classes} classes do not fit the int16 label column")
    folder.mkdir(parents=True, exist_ok=True)
    stale = sorted(folder.glob(SHARD_GLOB))
    if stale:
        raise SkddError(f"write_shards {folder}: already holds shards ({stale[0].name}); write into an empty folder")
    images = np.ascontiguousarray(ds.images.detach().cpu().numpy()).reshape(len(ds), -1)
    labels = ds.labels.detach().cpu().numpy().astype(np.int16)
    row_bytes = images.shape[1]
    schema = _schema(ds.shape, ds.classes, split)
    paths = []
    for index, start in enumerate(range(0, len(ds), rows_per_shard)):
        stop = min(start + rows_per_shard, len(ds))
        image_col = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(row_bytes), stop - start, [None, pa.py_buffer(images[start:stop])]
        )
        table = pa.Table.from_arrays([image_col, pa.array(labels[start:stop], pa.int16())], schema=schema)
        path = folder / shard_name(index)
        pq.write_table(
            table,
            path,
            row_group_size=rows_per_shard,
            compression=_COMPRESSION,
            compression_level=_COMPRESSION_LEVEL,
            use_dictionary=False,
            write_statistics=False,
            write_page_index=False,
            write_page_checksum=True,
        )
        paths.append(path)
    return paths


def _parse_meta(meta: dict[bytes, bytes] | None, path: Path) -> tuple[tuple[int, int, int], list[str], str]:
    meta = meta or {}
    missing = [k.decode() for k in (META_SHAPE, META_CLASSES, META_SPLIT) if k not in meta]
    if missing:
        raise SkddError(f"{path}: schema metadata lacks {', '.join(missing)}")
    try:
        shape = json.loads(meta[META_SHAPE])
        classes = json.loads(meta[META_CLASSES])
        split = meta[META_SPLIT].decode()
    except (ValueError, UnicodeDecodeError) as err:
        raise SkddError(f"{path}: unreadable skdd schema metadata ({err})") from None
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise SkddError(f"{path}: skdd.shape must be [C, H, W] of positive integers, got {shape!r}")
    if not (isinstance(classes, list) and classes and all(isinstance(v, str) for v in classes)):
        raise SkddError(f"{path}: skdd.classes must be a non-empty list of names, got {classes!r}")
    return (shape[0], shape[1], shape[2]), classes, split


def _read_shard(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int, int], list[str], str]]:
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        arrow_schema = pf.schema_arrow
    except (OSError, pa.ArrowException) as err:
        raise SkddError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") from None
    meta = _parse_meta(arrow_schema.metadata, path)
    (c, h, w), _, _ = meta
    row_bytes = c * h * w
    names = arrow_schema.names
    if names != ["image", "label"]:
        raise SkddError(f"{path}: columns are {names}, expected ['image', 'label']")
    image_type, label_type = arrow_schema.field("image").type, arrow_schema.field("label").type
    if not pa.types.is_fixed_size_binary(image_type):
        raise SkddError(f"{path}: column image is {image_type}, expected fixed_size_binary[{row_bytes}]")
    if image_type.byte_width != row_bytes:
        raise SkddError(
            f"{path}: images are {image_type.byte_width} bytes each, skdd.shape {[c, h, w]} needs {row_bytes}"
        )
    if label_type != pa.int16():
        raise SkddError(f"{path}: column label is {label_type}, expected int16")
    try:
        table = pf.read()
    except (OSError, pa.ArrowException) as err:
        raise SkddError(f"{path}: corrupt Parquet data ({' '.join(str(err).split())})") from None
    image_col, label_col = table.column("image"), table.column("label")
    if image_col.null_count or label_col.null_count:
        raise SkddError(f"{path}: null images or labels")
    images = np.empty((table.num_rows, row_bytes), dtype=np.uint8)
    row = 0
    for chunk in image_col.chunks:
        n = len(chunk)
        buf = chunk.buffers()[1]
        images[row : row + n] = np.frombuffer(buf, dtype=np.uint8, count=n * row_bytes, offset=chunk.offset * row_bytes).reshape(n, row_bytes)
        row += n
    labels = label_col.to_numpy().astype(np.int64)
    return images.reshape(-1, c, h, w), labels, meta


def read_shards(folder: Path, *, split: str | None = None) -> ImageDataset:
    """Read all `part-*.parquet` in `folder` (in name order) into one ImageDataset.

    With `split`, the shards' `skdd.split` must equal it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SkddError(f"Parquet folder not found: {folder}")
    paths = sorted(folder.glob(SHARD_GLOB))
    if not paths:
        raise SkddError(f"{folder}: no {SHARD_GLOB} shards")
    all_images, all_labels = [], []
    first_meta = None
    for path in paths:
        images, labels, meta = _read_shard(path)
        if first_meta is None:
            first_meta = meta
            if split is not None and meta[2] != split:
                raise SkddError(f"{path}: holds split {meta[2]!r}, expected {split!r}")
        elif meta != first_meta:
            what = ["shape", "classes", "split"][next(i for i in range(3) if meta[i] != first_meta[i])]
            raise SkddError(f"{path}: skdd.{what} differs from {paths[0].name}'s")
        num_classes = len(meta[1])
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
            raise SkddError(f"{path}: label {bad} is out of range [0, {num_classes})")
        all_images.append(images)
        all_labels.append(labels)
    assert first_meta is not None
    images = all_images[0] if len(all_images) == 1 else np.concatenate(all_images)
    labels = all_labels[0] if len(all_labels) == 1 else np.concatenate(all_labels)
    if images.shape[0] == 0:
        raise SkddError(f"{folder}: the shards hold no rows")
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), list(first_meta[1]))
