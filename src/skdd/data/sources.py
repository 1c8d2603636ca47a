"""Readers for the dataset sources `ingest` accepts: idx, cifar-python, imagefolder, npz, torchvision.

`read_source(kind, location, name=...)` returns the train/test splits as uint8 tensors and the list of
files it read (the caller hashes them for the lineage record). Every problem with the input (missing,
truncated, corrupt, inconsistent, unsafe) raises `SkddError` with one line naming the file.

Safety lives beside this module: `archives.py` reads tarballs in memory and refuses members that would
leave the archive; `cifar_pickle.py` unpickles CIFAR's batches admitting only numpy arrays and plain data.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from skdd.data.dataset import ImageDataset, Splits
from skdd.data.archives import iter_tar_files
from skdd.data.cifar_pickle import cifar_batch, cifar_meta
from skdd.errors import SkddError, one_line

KINDS = ("idx", "cifar-python", "imagefolder", "npz", "torchvision")
# skdd's dataset name -> torchvision's class (its download URLs and checksums are the ones used)
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}

DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")


def read_source(kind: str, location: str, *, name: str | None = None) -> tuple[Splits, list[Path]]:
    """Read a dataset source; return its splits and the source files read (to be hashed)."""
    if kind not in KINDS:
        raise SkddError(f"unknown dataset source kind {kind!r}; expected one of: {', '.join(KINDS)}")
    location = str(location)
    if location.startswith("s3://"):
        raise SkddError(f"{kind} source {location}: read_source reads local paths; fetch the s3:// prefix first")
    path = Path(location).expanduser()
    if kind == "torchvision":
        splits, files = _read_torchvision(path, name)
    else:
        if not path.exists():
            raise SkddError(f"{kind} source not found: {path}")
        reader: Callable[[Path, str | None], tuple[Splits, list[Path]]] = {
            "idx": _read_idx_source,
            "cifar-python": _read_cifar_source,
            "imagefolder": _read_imagefolder_source,
            "npz": _read_npz_source,
        }[kind]
        splits, files = reader(path, name)
    splits.train.validate(f"{kind} source {path} (train)")
    if splits.test is not None:
        splits.test.validate(f"{kind} source {path} (test)")
        if splits.test.shape != splits.train.shape:
            raise SkddError(f"{kind} source {path}: test images are {splits.test.shape}, train images {splits.train.shape}")
    return splits, files



def _dataset(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> ImageDataset:
    """Wrap numpy arrays (images uint8 [N,C,H,W]) as an ImageDataset of owned, contiguous tensors."""
    imgs = np.ascontiguousarray(images, dtype=np.uint8)
    if not imgs.flags.writeable:
        imgs = imgs.copy()
    labs = np.asarray(labels).astype(np.int64, copy=True)
    return ImageDataset(torch.from_numpy(imgs), torch.from_numpy(labs), list(classes))


# --------------------------------------------------------------------------------------------- idx
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_folder(path: Path) -> Path:
    """The folder holding the IDX files: `path` itself, or torchvision's `raw/` layout beneath it."""
    if not path.is_dir():
        raise SkddError(f"idx source {path}: expected a folder holding the MNIST-format *-ubyte[.gz] files")
    for folder in (path, path / "raw", path / "MNIST" / "raw", path / "FashionMNIST" / "raw"):
        if _find_idx_file(folder, _IDX_STEMS["train"][0]) is not None:
            return folder
    return path


def read_idx_file(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (magic 0x0000080N, big-endian dims); `.gz` is decompressed."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SkddError(f"{path}: cannot read: {one_line(err)}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise SkddError(f"{path}: corrupt gzip data ({one_line(err)})") from None
    expected_magic = 0x00000800 | ndim
    if len(raw) < 4:
        raise SkddError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise SkddError(f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x} (uint8, {ndim}-D)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SkddError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        raise SkddError(
            f"{path}: IDX size mismatch: header says {'x'.join(map(str, dims))} = {size} bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(dims).copy()


def _read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[Path]] | None:
    img_stem, lab_stem = _IDX_STEMS[split]
    img_path, lab_path = _find_idx_file(folder, img_stem), _find_idx_file(folder, lab_stem)
    if img_path is None and lab_path is None and split == "test":
        return None
    for stem, found in ((img_stem, img_path), (lab_stem, lab_path)):
        if found is None:
            raise SkddError(f"idx source {folder}: missing {stem} (or {stem}.gz)")
    assert img_path is not None and lab_path is not None
    images = read_idx_file(img_path, 3)
    labels = read_idx_file(lab_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise SkddError(f"{lab_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path.name}")
    return images[:, None, :, :], labels, [img_path, lab_path]


def _read_idx_source(path: Path, name: str | None) -> tuple[Splits, list[Path]]:
    folder = _idx_folder(path)
    classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    train = _read_idx_split(folder, "train")
    assert train is not None
    test = _read_idx_split(folder, "test")
    files = train[2] + (test[2] if test else [])
    return Splits(
        train=_dataset(train[0], train[1], classes),
        test=_dataset(test[0], test[1], classes) if test else None,
    ), files


# ------------------------------------------------------------------------------------- archives
def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


# ------------------------------------------------------------------------------------ cifar-python
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")


def _read_cifar_source(path: Path, name: str | None) -> tuple[Splits, list[Path]]:
    blobs: dict[str, bytes] = {}
    if path.is_dir() and not (path / "data_batch_1").exists():
        if (path / "cifar-10-batches-py").is_dir():
            path = path / "cifar-10-batches-py"
        elif (path / "cifar-10-python.tar.gz").is_file():
            path = path / "cifar-10-python.tar.gz"
    if path.is_dir():
        files = [path / f for f in _CIFAR_FILES]
        for f in files:
            if not f.is_file():
                raise SkddError(f"cifar-python source {path}: missing {f.name}")
            blobs[f.name] = f.read_bytes()
        where = {f.name: str(f) for f in files}
    elif _is_archive(path):
        files = [path]
        for parts, data in iter_tar_files(path, lambda parts: parts[-1] in _CIFAR_FILES):
            if parts[-1] in blobs:
                raise SkddError(f"{path}: more than one {parts[-1]} in the archive")
            blobs[parts[-1]] = data
        missing = [f for f in _CIFAR_FILES if f not in blobs]
        if missing:
            raise SkddError(f"{path}: archive lacks {', '.join(missing)}")
        where = {f: f"{path}:{f}" for f in _CIFAR_FILES}
    else:
        raise SkddError(f"cifar-python source {path}: expected cifar-10-batches-py/, its parent, or its .tar.gz")
    classes = cifar_meta(blobs["batches.meta"], where["batches.meta"])
    parts = [cifar_batch(blobs[f], where[f]) for f in _CIFAR_TRAIN]
    test_x, test_y = cifar_batch(blobs["test_batch"], where["test_batch"])
    train = _dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), classes)
    return Splits(train=train, test=_dataset(test_x, test_y, classes)), files


# -------------------------------------------------------------------------------------- imagefolder
_PIL_FORMATS = ("PNG", "JPEG")  # only these decoders ever see the files' bytes
_GRAY_MODES = {"1", "L", "LA"}
_COLOR_MODES = {"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


def _mode_family(mode: str) -> str | None:
    return "L" if mode in _GRAY_MODES else "RGB" if mode in _COLOR_MODES else None


def decode_images(items: list[tuple[str, bytes | Path]], where: str) -> np.ndarray:
    """Decode images (bytes or file paths) to uint8 [N, C, H, W]; all must share one size and mode family."""
    out: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    family = ""
    first = ""
    for i, (label, src) in enumerate(items):
        try:
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src, formats=_PIL_FORMATS) as im:
                im.load()
                fam = _mode_family(im.mode)
                if fam is None:
                    raise SkddError(f"{where}: image {label} has unsupported mode {im.mode} (want grayscale or RGB)")
                if out is None:
                    size, family, first = im.size, fam, label
                    out = np.empty((len(items), im.size[1], im.size[0], 1 if fam == "L" else 3), dtype=np.uint8)
                if im.size != size:
                    raise SkddError(
                        f"{where}: image {label} is {im.size[0]}x{im.size[1]}, but {first} is {size[0]}x{size[1]}"
                    )
                if fam != family:
                    raise SkddError(
                        f"{where}: image {label} is {'grayscale' if fam == 'L' else 'color'} ({im.mode}), "
                        f"but {first} is {'grayscale' if family == 'L' else 'color'}"
                    )
                pixels = np.asarray(im if im.mode == family else im.convert(family))
        except SkddError:
            raise
        except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad image
            raise SkddError(f"{where}: cannot decode image {label} ({one_line(err)})") from None
        out[i] = pixels.reshape(out.shape[1:])
    if out is None:
        raise SkddError(f"{where}: no images")
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _parse_classes_txt(text: str, where: str) -> list[str]:
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise SkddError(f"{where}: classes.txt is empty")
    if len(set(classes)) != len(classes):
        raise SkddError(f"{where}: classes.txt lists a class twice")
    return classes


def _assemble_imagefolder(
    found: dict[str, dict[str, list[tuple[str, bytes | Path]]]], classes_txt: str | None, where: str
) -> Splits:
    """Turn {split: {class: [(name, src)]}} into Splits, classes sorted or from classes.txt."""
    if not found.get("train"):
        raise SkddError(f"{where}: no images under train/<class>/ (expected .png/.jpg/.jpeg)")
    if classes_txt is not None:
        classes = _parse_classes_txt(classes_txt, where)
    else:
        classes = sorted(found["train"])
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, ImageDataset | None] = {"train": None, "test": None}
    for split, per_class in found.items():
        unknown = sorted(set(per_class) - set(index))
        if unknown:
            raise SkddError(f"{where}: folder {split}/{unknown[0]} is not a class listed in classes.txt")
        items: list[tuple[str, bytes | Path]] = []
        labels: list[int] = []
        for cls in classes:
            entries = sorted(per_class.get(cls, []), key=lambda e: e[0])
            items.extend(entries)
            labels.extend([index[cls]] * len(entries))
        images = decode_images(items, where)
        splits[split] = _dataset(images, np.asarray(labels, dtype=np.int64), classes)
    assert splits["train"] is not None
    return Splits(train=splits["train"], test=splits["test"])


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _read_imagefolder_dir(root: Path) -> tuple[Splits, list[Path]]:
    if not (root / "train").is_dir():
        subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) == 1 and (subdirs[0] / "train").is_dir():
            root = subdirs[0]
        else:
            raise SkddError(f"imagefolder source {root}: no train/ folder")
    found: dict[str, dict[str, list[tuple[str, bytes | Path]]]] = {}
    files: list[Path] = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        found[split] = {}
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
            images = sorted(f for f in class_dir.iterdir() if f.is_file() and _is_image_name(f.name))
            found[split][class_dir.name] = [(str(f), f) for f in images]
            files.extend(images)
    classes_file = root / "classes.txt"
    classes_txt = classes_file.read_text(encoding="utf-8") if classes_file.is_file() else None
    if classes_txt is not None:
        files.append(classes_file)
    return _assemble_imagefolder(found, classes_txt, f"imagefolder source {root}"), files


def _read_imagefolder_tar(archive: Path) -> tuple[Splits, list[Path]]:
    """Read an image-folder tarball as a stream, nothing extracted; allows one top-level folder."""
    members: list[tuple[tuple[str, ...], bytes]] = []
    for parts, data in iter_tar_files(archive, lambda parts: parts[-1] == "classes.txt" or _is_image_name(parts[-1])):
        members.append((parts, data))
    tops = {parts[0] for parts, _ in members if len(parts) > 1}
    if any(parts[0] in SPLITS for parts, _ in members if len(parts) > 1):
        prefix: tuple[str, ...] = ()
    elif len(tops) == 1:
        prefix = (next(iter(tops)),)
    else:
        raise SkddError(f"{archive}: no train/ folder at the top of the archive or under one top-level folder")
    found: dict[str, dict[str, list[tuple[str, bytes | Path]]]] = {}
    classes_txt = None
    for parts, data in members:
        if parts[: len(prefix)] != prefix:
            continue
        rest = parts[len(prefix) :]
        if rest == ("classes.txt",):
            try:
                classes_txt = data.decode("utf-8")
            except UnicodeDecodeError:
                raise SkddError(f"{archive}: classes.txt is not UTF-8 text") from None
        elif len(rest) == 3 and rest[0] in SPLITS and _is_image_name(rest[2]):
            found.setdefault(rest[0], {}).setdefault(rest[1], []).append((f"{archive}:{'/'.join(parts)}", data))
        elif rest and rest[0] in SPLITS and _is_image_name(rest[-1]):
            raise SkddError(f"{archive}: image {'/'.join(parts)} is not directly in a <split>/<class>/ folder")
    return _assemble_imagefolder(found, classes_txt, f"imagefolder source {archive}"), [archive]


def _read_imagefolder_source(path: Path, name: str | None) -> tuple[Splits, list[Path]]:
    if path.is_dir():
        return _read_imagefolder_dir(path)
    if _is_archive(path):
        return _read_imagefolder_tar(path)
    raise SkddError(f"imagefolder source {path}: expected a folder or a .tar[.gz] of train/<class>/ images")


# ---------------------------------------------------------------------------------------------- npz
def _npz_images(x: np.ndarray, key: str, where: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise SkddError(f"{where}: {key} must be uint8, got {x.dtype}")
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim != 4:
        raise SkddError(f"{where}: {key} must be NHW, NHWC or NCHW, got shape {x.shape}")
    nchw, nhwc = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
    if nchw and nhwc:  # e.g. [N, 3, H, 3]: prefer the reading with square images
        nchw, nhwc = x.shape[2] == x.shape[3], x.shape[1] == x.shape[2]
        if nchw == nhwc:
            raise SkddError(f"{where}: {key} shape {x.shape} is ambiguous between NCHW and NHWC")
    if nhwc and not nchw:
        return x.transpose(0, 3, 1, 2)
    if nchw:
        return x
    raise SkddError(f"{where}: {key} shape {x.shape} has no channel axis of size 1 or 3")


def _npz_labels(y: np.ndarray, key: str, n: int, where: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise SkddError(f"{where}: {key} must be integers, got {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise SkddError(f"{where}: {key} must have shape [{n}], got {y.shape}")
    return y.astype(np.int64)


def _read_npz_source(path: Path, name: str | None) -> tuple[Splits, list[Path]]:
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # noqa: BLE001 - zip/format/pickle refusals all mean a bad file
        raise SkddError(f"{where}: cannot read .npz ({one_line(err)})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise SkddError(f"{where}: missing array {key!r} (has {sorted(arrays)})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise SkddError(f"{where}: x_test and y_test must both be present or both absent")
    data = {}
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            continue
        x = _npz_images(arrays[f"x_{split}"], f"x_{split}", where)
        y = _npz_labels(arrays[f"y_{split}"], f"y_{split}", x.shape[0], where)
        data[split] = (x, y)
    if "classes" in arrays:
        cls = arrays["classes"]
        if cls.ndim != 1 or cls.dtype.kind not in "US":
            raise SkddError(f"{where}: 'classes' must be a 1-D array of strings, got {cls.dtype} {cls.shape}")
        classes = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in cls.tolist()]
    else:
        top = max(int(y.max()) for _, y in data.values() if y.size) if any(y.size for _, y in data.values()) else 0
        classes = [str(i) for i in range(top + 1)]
    train = _dataset(*data["train"], classes)
    test = _dataset(*data["test"], classes) if "test" in data else None
    return Splits(train=train, test=test), [path]


# -------------------------------------------------------------------------------------- torchvision
def torchvision_class(name: str | None):
    """torchvision's dataset class for one of skdd's names (only its URLs and checksums are used)."""
    if name not in TORCHVISION:
        raise SkddError(f"torchvision source: name must be one of {', '.join(TORCHVISION)}, got {name!r}")
    from torchvision import datasets

    return getattr(datasets, TORCHVISION[name])


def torchvision_resources(name: str) -> list[list[str]]:
    """[url, filename, md5] of every file the torchvision source downloads for `name`."""
    cls = torchvision_class(name)
    if hasattr(cls, "tgz_md5"):
        return [[cls.url, cls.filename, cls.tgz_md5]]
    return [[cls.mirrors[0] + filename, filename, md5] for filename, md5 in cls.resources]


def _read_torchvision(root: Path, name: str | None) -> tuple[Splits, list[Path]]:
    """Download with torchvision's own URLs and checksums, then parse with the readers above.

    torchvision's dataset classes would unpickle CIFAR with plain `pickle` and extract archives to
    disk; fetching the same verified files and reading them here keeps one safe parser per format.
    """
    cls = torchvision_class(name)
    try:
        from torchvision import datasets
        from torchvision.datasets.utils import check_integrity, download_url

        root.mkdir(parents=True, exist_ok=True)
        if cls is datasets.CIFAR10:
            archive = root / cls.filename
            if not check_integrity(str(archive), cls.tgz_md5):
                download_url(cls.url, str(root), cls.filename, cls.tgz_md5)
            target = archive
        else:
            raw = root / cls.__name__ / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for filename, md5 in cls.resources:
                if check_integrity(str(raw / filename), md5):
                    continue
                errors = []
                for mirror in cls.mirrors:
                    try:
                        download_url(f"{mirror}{filename}", str(raw), filename, md5)
                        break
                    except Exception as err:  # noqa: BLE001 - try the next mirror
                        errors.append(one_line(err))
                else:
                    raise RuntimeError(f"{filename}: " + "; ".join(errors))
            target = raw
    except SkddError:
        raise
    except Exception as err:  # noqa: BLE001 - network, disk, checksum: one line for the user
        raise SkddError(f"torchvision download of {name} into {root} failed: {one_line(err)} (offline? point "
                        "ingest at a local copy: SKDD_DATA_SOURCE=idx SKDD_DATA_LOCATION=/path/to/folder)") from None
    if name == "cifar10":
        return _read_cifar_source(target, name)
    return _read_idx_source(target, name)
