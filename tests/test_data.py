"""Dataset readers, the in-memory dataset and Parquet shards: small data made here, plus integration runs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from skdd.data.dataset import ImageDataset
from skdd.data.parquet import read_shards, write_shards
from skdd.data.sources import FASHION_MNIST_CLASSES, KINDS, read_source
from skdd.errors import SkddError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


# ----------------------------------------------------------------------------------------- helpers
def make_arrays(n: int, c: int = 1, h: int = 4, w: int = 5, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    y = np.arange(n) % k
    rng.shuffle(y)
    return x, y.astype(np.int64)


def idx_bytes(arr: np.ndarray) -> bytes:
    magic = 0x00000800 | arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, *, gz: bool, n_train: int = 30, n_test: int = 20):
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = make_arrays(n_train, 1, 6, 7, seed=1)
    xte, yte = make_arrays(n_test, 1, 6, 7, seed=2)
    files = {
        "train-images-idx3-ubyte": idx_bytes(xtr[:, 0]),
        "train-labels-idx1-ubyte": idx_bytes(ytr.astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(xte[:, 0]),
        "t10k-labels-idx1-ubyte": idx_bytes(yte.astype(np.uint8)),
    }
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return (xtr, ytr), (xte, yte)


def png_bytes(arr_hwc: np.ndarray) -> bytes:
    buf = io.BytesIO()
    mode = "L" if arr_hwc.shape[2] == 1 else "RGB"
    Image.fromarray(arr_hwc[:, :, 0] if mode == "L" else arr_hwc, mode).save(buf, format="PNG")
    return buf.getvalue()


def write_imagefolder(root: Path, classes=("cat", "ant", "bee"), per_class=(3, 2), c: int = 3, size=(5, 4)):
    """root/{train,test}/<class>/NN.png with random pixels; returns {split: (images, labels)} in sorted order."""
    rng = np.random.default_rng(3)
    order = sorted(classes)
    expected = {}
    for split, n in zip(("train", "test"), per_class):
        imgs, labels = [], []
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 256, size=(size[1], size[0], c), dtype=np.uint8)
                (d / f"{i:02d}.png").write_bytes(png_bytes(a))
        for cls in order:
            for i in range(n):
                a = np.asarray(Image.open(root / split / cls / f"{i:02d}.png"))
                imgs.append(a.reshape(size[1], size[0], c).transpose(2, 0, 1))
                labels.append(order.index(cls))
        expected[split] = (np.stack(imgs), np.array(labels))
    return expected


def make_tar(archive: Path, folder: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return archive


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def cifar_batches(n_per_batch: int = 10, seed: int = 5, protocol: int = 2):
    """Synthesized CIFAR python batches (bytes keys, like the originals read with encoding='bytes')."""
    rng = np.random.default_rng(seed)
    out, all_x, all_y = {}, {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in np.arange(n_per_batch) % 10]
        out[name] = pickle.dumps({b"batch_label": name.encode(), b"labels": y, b"data": x,
                                  b"filenames": [b"f.png"] * n_per_batch}, protocol=protocol)
        all_x[name], all_y[name] = x, y
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    out["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, protocol=protocol)
    return out, all_x, all_y, names


def write_cifar_folder(parent: Path, **kw):
    batches, xs, ys, names = cifar_batches(**kw)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, data in batches.items():
        (folder / name).write_bytes(data)
    return folder, xs, ys, names


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_ds(n: int = 50, c: int = 3, k: int = 5) -> ImageDataset:
    x, y = make_arrays(n, c, 4, 4, k=k)
    return ImageDataset(torch.from_numpy(x), torch.from_numpy(y), [f"class {i}" for i in range(k)])


# ------------------------------------------------------------------------------------- ImageDataset
def test_dataset_basics_and_mean_std():
    ds = small_ds(40, 3, 4)
    assert len(ds) == 40 and ds.shape == (3, 4, 4) and ds.num_classes == 4
    assert ds.class_counts() == [10, 10, 10, 10]
    ds.validate("here")
    mean, std = ds.mean_std()
    x = ds.images.to(torch.float64) / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-12)
    from skdd.data.dataset import _pixel_sums

    for a, b in zip(_pixel_sums(ds.images, histogram=True), _pixel_sums(ds.images, histogram=False)):
        assert torch.equal(a, b)  # the CPU histogram and the float64 path (used on GPUs) agree exactly
    moved = ds.to("cpu")
    assert torch.equal(moved.images, ds.images) and moved.classes == ds.classes


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: setattr(d, "images", d.images.float()), "uint8"),
        (lambda d: setattr(d, "images", d.images[:, 0]), "uint8"),
        (lambda d: setattr(d, "labels", d.labels[:-1]), "labels"),
        (lambda d: setattr(d, "labels", torch.where(d.labels == 0, 7, d.labels)), "label 7"),
        (lambda d: setattr(d, "labels", torch.where(d.labels == 0, -1, d.labels)), "label -1"),
        (lambda d: setattr(d, "classes", d.classes + ["lonely"]), "'lonely' has no images"),
        (lambda d: (setattr(d, "images", d.images[:0]), setattr(d, "labels", d.labels[:0])), "no images"),
    ],
)
def test_validate_rejects(mutate, needle):
    ds = small_ds(20, 1, 4)
    mutate(ds)
    with pytest.raises(SkddError, match="^where-it-is: ") as err:
        ds.validate("where-it-is")
    assert needle in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- idx
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    (xtr, ytr), (xte, yte) = write_idx_folder(tmp_path / "m", gz=gz)
    splits, files = read_source("idx", str(tmp_path / "m"))
    assert torch.equal(splits.train.images, torch.from_numpy(xtr))
    assert torch.equal(splits.train.labels, torch.from_numpy(ytr))
    assert torch.equal(splits.test.images, torch.from_numpy(xte))
    assert torch.equal(splits.test.labels, torch.from_numpy(yte))
    assert splits.train.classes == [str(i) for i in range(10)]
    assert splits.train.labels.dtype == torch.int64 and splits.train.images.dtype == torch.uint8
    assert len(files) == 4 and all(f.exists() and f.name.endswith(".gz") == gz for f in files)


def test_idx_fashion_names(tmp_path):
    write_idx_folder(tmp_path, gz=True)
    splits, _ = read_source("idx", str(tmp_path), name="fashion-mnist")
    assert splits.train.classes == FASHION_MNIST_CLASSES and splits.train.classes[0] == "T-shirt/top"


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda b: b[:-7], "size mismatch"),
        (lambda b: b[:10], "truncated IDX header"),
        (lambda b: b[:2], "truncated IDX file"),
        (lambda b: b + b"\0", "size mismatch"),
        (lambda b: struct.pack(">I", 0x00000801) + b[4:], "bad IDX magic 0x00000801"),
        (lambda b: b"\x1f\x8b" + b[2:], "bad IDX magic"),
    ],
)
def test_idx_damaged(tmp_path, damage, needle):
    write_idx_folder(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(SkddError, match="train-images-idx3-ubyte") as err:
        read_source("idx", str(tmp_path))
    assert needle in str(err.value)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:20] + bytes(len(b) - 20), lambda b: b"not gzip"])
def test_idx_corrupt_gzip(tmp_path, damage):
    write_idx_folder(tmp_path, gz=True)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(SkddError, match=r"t10k-labels-idx1-ubyte\.gz.*corrupt gzip"):
        read_source("idx", str(tmp_path))


def test_idx_label_count_and_range(tmp_path):
    write_idx_folder(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(SkddError, match="train-labels-idx1-ubyte: 29 labels for 30 images"):
        read_source("idx", str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(30, 12, np.uint8)))
    with pytest.raises(SkddError, match=r"\(train\): label 12 .* out of range \[0, 10\)"):
        read_source("idx", str(tmp_path))


def test_idx_missing_file(tmp_path):
    write_idx_folder(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(SkddError, match="missing train-labels-idx1-ubyte"):
        read_source("idx", str(tmp_path))


# ---------------------------------------------------------------------------------------------- npz
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_npz_round_trip(tmp_path, layout):
    c = 1 if layout == "NHW" else 3
    xtr, ytr = make_arrays(20, c, 6, 6, k=4)
    xte, yte = make_arrays(8, c, 6, 6, k=4, seed=9)
    conv = {"NCHW": lambda x: x, "NHWC": lambda x: x.transpose(0, 2, 3, 1), "NHW": lambda x: x[:, 0]}[layout]
    path = tmp_path / "d.npz"
    np.savez(path, x_train=conv(xtr), y_train=ytr, x_test=conv(xte), y_test=yte.reshape(-1, 1),
             classes=np.array(["a", "b", "c", "d"]))
    splits, files = read_source("npz", str(path))
    assert files == [path]
    assert torch.equal(splits.train.images, torch.from_numpy(xtr))
    assert torch.equal(splits.test.images, torch.from_numpy(xte))
    assert torch.equal(splits.test.labels, torch.from_numpy(yte))
    assert splits.train.classes == ["a", "b", "c", "d"]


def test_npz_errors(tmp_path):
    xtr, ytr = make_arrays(20, 1, 6, 6, k=4)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=xtr, y_train=ytr, classes=np.array(["a", "b", "c"]))
    with pytest.raises(SkddError, match=r"d\.npz \(train\): label 3 .* out of range \[0, 3\)"):
        read_source("npz", str(path))
    np.savez(path, x_train=xtr, y_train=ytr % 2, classes=np.array(["a", "b", "c"]))
    with pytest.raises(SkddError, match=r"d\.npz \(train\): class 'c' has no images"):
        read_source("npz", str(path))
    np.savez(path, x_train=xtr.astype(np.float32), y_train=ytr)
    with pytest.raises(SkddError, match=r"d\.npz: x_train must be uint8"):
        read_source("npz", str(path))
    np.savez(path, x_train=np.array([object()], dtype=object), y_train=ytr)
    with pytest.raises(SkddError, match=r"d\.npz: cannot read"):
        read_source("npz", str(path))
    path.write_bytes(b"garbage")
    with pytest.raises(SkddError, match=r"d\.npz: cannot read"):
        read_source("npz", str(path))


# -------------------------------------------------------------------------------------- imagefolder
def test_imagefolder_dir_and_tar_agree(tmp_path):
    expected = write_imagefolder(tmp_path / "ds")
    splits, files = read_source("imagefolder", str(tmp_path / "ds"))
    assert splits.train.classes == ["ant", "bee", "cat"]
    for split in ("train", "test"):
        got = getattr(splits, split)
        assert torch.equal(got.images, torch.from_numpy(expected[split][0]))
        assert torch.equal(got.labels, torch.from_numpy(expected[split][1]))
    assert len(files) == 15
    for arcname in ("ds", "."):  # one top-level folder in the archive, or train/ and test/ at its top
        archive = make_tar(tmp_path / f"ds{len(arcname)}.tar.gz", tmp_path / "ds", arcname)
        from_tar, tar_files = read_source("imagefolder", str(archive))
        assert tar_files == [archive]
        assert torch.equal(from_tar.train.images, splits.train.images)
        assert torch.equal(from_tar.test.labels, splits.test.labels)
        assert from_tar.train.classes == splits.train.classes


def test_imagefolder_grayscale_and_classes_txt(tmp_path):
    write_imagefolder(tmp_path, classes=("zebra", "ant"), per_class=(2, 1), c=1)
    (tmp_path / "classes.txt").write_text("zebra\nant\n")
    splits, files = read_source("imagefolder", str(tmp_path))
    assert splits.train.classes == ["zebra", "ant"] and splits.train.shape == (1, 4, 5)
    assert splits.train.labels.tolist() == [0, 0, 1, 1]
    assert tmp_path / "classes.txt" in files
    (tmp_path / "classes.txt").write_text("zebra\nant\nyak\n")
    with pytest.raises(SkddError, match=r"\(train\): class 'yak' has no images"):
        read_source("imagefolder", str(tmp_path))
    (tmp_path / "classes.txt").write_text("zebra\n")
    with pytest.raises(SkddError, match="folder train/ant is not a class listed in classes.txt"):
        read_source("imagefolder", str(tmp_path))


def test_imagefolder_mismatching_images(tmp_path):
    write_imagefolder(tmp_path)
    odd = tmp_path / "train" / "bee" / "99.png"
    odd.write_bytes(png_bytes(np.zeros((4, 6, 3), np.uint8)))
    with pytest.raises(SkddError, match=r"99\.png is 6x4, but .*00\.png is 5x4"):
        read_source("imagefolder", str(tmp_path))
    odd.write_bytes(png_bytes(np.zeros((4, 5, 1), np.uint8)))
    with pytest.raises(SkddError, match=r"99\.png is grayscale"):
        read_source("imagefolder", str(tmp_path))
    odd.write_bytes(b"\x89PNG not really")
    with pytest.raises(SkddError, match=r"cannot decode image .*99\.png"):
        read_source("imagefolder", str(tmp_path))


def test_imagefolder_tar_mismatch_names_member(tmp_path):
    write_imagefolder(tmp_path / "ds")
    (tmp_path / "ds" / "test" / "ant" / "05.png").write_bytes(png_bytes(np.zeros((3, 3, 3), np.uint8)))
    archive = make_tar(tmp_path / "ds.tar.gz", tmp_path / "ds", "top")
    with pytest.raises(SkddError, match=r"ds\.tar\.gz:top/test/ant/05\.png is 3x3"):
        read_source("imagefolder", str(archive))


@pytest.mark.parametrize(
    "member",
    ["../evil.png", "top/../../evil.png", "/abs/train/a/x.png", "symlink", "hardlink"],
)
def test_tar_unsafe_members_refused(tmp_path, member):
    write_imagefolder(tmp_path / "ds")
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "ds", arcname="top")
        if member in ("symlink", "hardlink"):
            info = tarfile.TarInfo("top/train/ant/link.png")
            info.type = tarfile.SYMTYPE if member == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            add_bytes(tf, member, png_bytes(np.zeros((4, 5, 3), np.uint8)))
    with pytest.raises(SkddError, match=r"bad\.tar\.gz: refusing archive member") as err:
        read_source("imagefolder", str(archive))
    assert "leaves the archive root" in str(err.value) or "links are not allowed" in str(err.value)
    assert not (tmp_path / "evil.png").exists()


def _plain_tar(tmp_path: Path) -> bytes:
    write_imagefolder(tmp_path / "ds")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        tf.add(tmp_path / "ds", arcname="ds")
    return buf.getvalue()


def _cut_at_last_member(data: bytes) -> bytes:
    """A plain tar cut exactly before its last member's header: tarfile alone would read it as valid."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        last = tf.getmembers()[-1]
    return data[: last.offset]


@pytest.mark.parametrize(
    "name, damage, needle",
    [
        ("ds.tar.gz", lambda d: gzip.compress(d, mtime=0)[: len(gzip.compress(d, mtime=0)) // 2], "corrupt or unreadable archive"),
        ("ds.tar.gz", lambda d: gzip.compress(d, mtime=0)[:-6], "corrupt or unreadable archive"),
        ("ds.tar", _cut_at_last_member, "truncated or damaged tar archive"),
        ("ds.tar", lambda d: d[:1536] + b"\x07" * 512 + d[2048:], "truncated or damaged tar archive"),
        ("ds.tar", lambda d: d[:3000], "truncated or damaged tar archive"),
        ("ds.tar", lambda d: d[: len(d) // 2 + 100], "(corrupt or unreadable archive|truncated or damaged tar archive)"),
    ],
)
def test_tar_corrupt(tmp_path, name, damage, needle):
    archive = tmp_path / name
    archive.write_bytes(damage(_plain_tar(tmp_path)))
    with pytest.raises(SkddError, match=rf"{name.replace('.', '[.]')}: {needle}"):
        read_source("imagefolder", str(archive))


def test_plain_tar_reads(tmp_path):
    archive = tmp_path / "ds.tar"
    archive.write_bytes(_plain_tar(tmp_path))
    splits, _ = read_source("imagefolder", str(archive))
    assert len(splits.train) == 9 and len(splits.test) == 6


# ------------------------------------------------------------------------------------- cifar-python
@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_python_folder_parent_and_tar(tmp_path, protocol):
    folder, xs, ys, names = write_cifar_folder(tmp_path, protocol=protocol)
    train_x = np.concatenate([xs[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    for location in (folder, tmp_path):
        splits, files = read_source("cifar-python", str(location))
        assert splits.train.classes == names
        assert torch.equal(splits.train.images, torch.from_numpy(train_x))
        assert splits.train.labels.tolist() == sum((ys[f"data_batch_{i}"] for i in range(1, 6)), [])
        assert torch.equal(splits.test.images, torch.from_numpy(xs["test_batch"].reshape(-1, 3, 32, 32)))
        assert len(files) == 7
    archive = make_tar(tmp_path / "cifar-10-python.tar.gz", folder, "cifar-10-batches-py")
    from_tar, files = read_source("cifar-python", str(archive))
    assert files == [archive] and torch.equal(from_tar.train.images, splits.train.images)


class _Py2StylePickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` opcodes (BINSTRING), as the original CIFAR batches have them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data if len(data) < 256
                   else pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def test_cifar_python2_style_pickle(tmp_path):
    folder, xs, ys, names = write_cifar_folder(tmp_path)
    for name in ("data_batch_1", "batches.meta"):
        obj = ({"batch_label": "b", "labels": ys[name], "data": xs[name]} if name != "batches.meta"
               else {"label_names": names, "num_vis": 3072})
        buf = io.BytesIO()
        _Py2StylePickler(buf, protocol=2).dump(obj)
        data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"_codecs" not in data
        (folder / name).write_bytes(data)
    splits, _ = read_source("cifar-python", str(folder))
    assert splits.train.classes == names
    assert torch.equal(splits.train.images[:10], torch.from_numpy(xs["data_batch_1"].reshape(-1, 3, 32, 32)))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_forbidden_global_refused(tmp_path):
    folder, *_ = write_cifar_folder(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8), b"x": _Evil(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(SkddError, match=r"data_batch_3: refusing to unpickle global (posix|os|nt)\.system"):
        read_source("cifar-python", str(folder))
    assert not marker.exists()
    # the same through the archive path
    archive = make_tar(tmp_path / "c.tar.gz", folder, "cifar-10-batches-py")
    with pytest.raises(SkddError, match=r"c\.tar\.gz:data_batch_3: refusing to unpickle global"):
        read_source("cifar-python", str(archive))
    assert not marker.exists()


def test_cifar_object_array_and_garbage_refused(tmp_path):
    folder, *_ = write_cifar_folder(tmp_path)
    obj = np.array([1, "x"], dtype=object)
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0], b"data": obj}, protocol=2))
    with pytest.raises(SkddError, match=r"test_batch: not a valid CIFAR python batch"):
        read_source("cifar-python", str(folder))
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(SkddError, match=r"test_batch: not a valid CIFAR python batch"):
        read_source("cifar-python", str(folder))
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0], b"data": np.zeros((1, 10), np.uint8)}))
    with pytest.raises(SkddError, match=r"test_batch: 'data' must be a uint8 array \[N, 3072\]"):
        read_source("cifar-python", str(folder))


# ------------------------------------------------------------------------------------- read_source
def test_unknown_kind_and_missing_path(tmp_path):
    with pytest.raises(SkddError, match="unknown dataset source kind 'csv'.*" + ".*".join(KINDS)):
        read_source("csv", str(tmp_path))
    with pytest.raises(SkddError, match=r"idx source not found: .*nowhere"):
        read_source("idx", str(tmp_path / "nowhere"))
    with pytest.raises(SkddError, match="name must be one of mnist, fashion-mnist, cifar10"):
        read_source("torchvision", str(tmp_path), name="imagenet")


def test_torchvision_path_offline(tmp_path, monkeypatch):
    """The download path with torchvision's helpers stubbed: files land in MNIST/raw, parsed by the idx reader."""
    import torchvision.datasets.utils as tv_utils

    write_idx_folder(tmp_path / "made", gz=True)
    fetched = []

    def fake_download(url, root, filename=None, md5=None, max_redirect_hops=3):
        fetched.append(url)
        (Path(root) / filename).write_bytes((tmp_path / "made" / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    monkeypatch.setattr(tv_utils, "check_integrity", lambda path, md5=None: Path(path).exists())
    splits, files = read_source("torchvision", str(tmp_path / "tv"), name="mnist")
    assert len(fetched) == 4 and len(splits.train) == 30 and len(splits.test) == 20
    assert all(f.parent == tmp_path / "tv" / "MNIST" / "raw" for f in files)
    read_source("torchvision", str(tmp_path / "tv"), name="mnist")  # present now: nothing fetched again
    assert len(fetched) == 4

    def failing_download(url, root, filename=None, md5=None, max_redirect_hops=3):
        raise OSError("Name or service not known\n(more detail)")

    monkeypatch.setattr(tv_utils, "download_url", failing_download)
    with pytest.raises(SkddError, match=r"^torchvision download of cifar10 into .*tv2 failed: .*Name or service") as err:
        read_source("torchvision", str(tmp_path / "tv2"), name="cifar10")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ parquet
def test_parquet_round_trip_and_determinism(tmp_path):
    ds = small_ds(50, 3, 5)
    paths = write_shards(ds, tmp_path / "a", split="train", rows_per_shard=20)
    assert [p.name for p in paths] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    again = write_shards(ds, tmp_path / "b", split="train", rows_per_shard=20)
    assert [sha(p) for p in paths] == [sha(p) for p in again]
    back = read_shards(tmp_path / "a", split="train")
    assert torch.equal(back.images, ds.images) and torch.equal(back.labels, ds.labels)
    assert back.classes == ds.classes and back.labels.dtype == torch.int64
    schema = pq.read_schema(paths[0])
    assert schema.field("image").type == pa.binary(3 * 4 * 4) and schema.field("label").type == pa.int16()
    assert json.loads(schema.metadata[b"skdd.shape"]) == [3, 4, 4]
    assert json.loads(schema.metadata[b"skdd.classes"]) == ds.classes
    assert schema.metadata[b"skdd.split"] == b"train"
    with pytest.raises(SkddError, match="holds split 'train', expected 'test'"):
        read_shards(tmp_path / "a", split="test")
    with pytest.raises(SkddError, match="already holds shards"):
        write_shards(ds, tmp_path / "a", split="train")


def test_parquet_corrupt_and_missing(tmp_path):
    ds = small_ds(30, 1, 3)
    paths = write_shards(ds, tmp_path / "s", split="test", rows_per_shard=10)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(SkddError, match=r"part-00001\.parquet: not a readable Parquet file"):
        read_shards(tmp_path / "s")
    paths[1].write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    with pytest.raises(SkddError, match=r"part-00001\.parquet"):
        read_shards(tmp_path / "s")
    with pytest.raises(SkddError, match="no part-"):
        read_shards(tmp_path)
    with pytest.raises(SkddError, match="Parquet folder not found"):
        read_shards(tmp_path / "nope")


def test_parquet_corrupt_page_data(tmp_path):
    ds = small_ds(30, 1, 3)
    (path,) = write_shards(ds, tmp_path / "s", split="train")
    data = bytearray(path.read_bytes())
    for i in range(40, 120):  # inside the first column chunk's compressed pages
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SkddError, match=r"part-00000\.parquet: (corrupt Parquet data|not a readable)"):
        read_shards(tmp_path / "s")


def _write_raw_shard(path: Path, images: np.ndarray, labels, row_bytes: int, meta: dict, label_type=pa.int16()):
    col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(row_bytes), len(labels), [None, pa.py_buffer(images)])
    schema = pa.schema([("image", pa.binary(row_bytes)), ("label", label_type)],
                       metadata={k: json.dumps(v) if k != "skdd.split" else v for k, v in meta.items()})
    pq.write_table(pa.Table.from_arrays([col, pa.array(labels, label_type)], schema=schema), path)


def test_parquet_schema_problems(tmp_path):
    meta = {"skdd.shape": [1, 2, 2], "skdd.classes": ["a", "b"], "skdd.split": "train"}
    good = np.zeros((3, 4), np.uint8)
    cases = {
        "range": (dict(images=good, labels=[0, 1, 2], row_bytes=4, meta=meta), r"label 2 is out of range \[0, 2\)"),
        "bytes": (dict(images=np.zeros((3, 5), np.uint8), labels=[0, 1, 1], row_bytes=5, meta=meta),
                  r"images are 5 bytes each, skdd.shape \[1, 2, 2\] needs 4"),
        "meta": (dict(images=good, labels=[0, 1, 1], row_bytes=4, meta={"skdd.shape": [1, 2, 2]}),
                 "schema metadata lacks skdd.classes, skdd.split"),
        "label": (dict(images=good, labels=[0, 1, 1], row_bytes=4, meta=meta, label_type=pa.int64()),
                  "column label is int64, expected int16"),
    }
    for case, (kw, needle) in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        _write_raw_shard(folder / "part-00000.parquet", **kw)
        with pytest.raises(SkddError, match=r"part-00000\.parquet: " + needle):
            read_shards(folder)


def test_parquet_inconsistent_shards(tmp_path):
    a = small_ds(20, 1, 2)
    write_shards(a, tmp_path / "a", split="train")
    write_shards(ImageDataset(a.images, a.labels, ["x", "y"]), tmp_path / "b", split="train")
    (tmp_path / "b" / "part-00000.parquet").rename(tmp_path / "a" / "part-00001.parquet")
    with pytest.raises(SkddError, match=r"part-00001\.parquet: skdd\.classes differs from part-00000\.parquet's"):
        read_shards(tmp_path / "a")


# -------------------------------------------------------------------------------------- integration
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.integration
def test_mnist_offline_copy(tmp_path):
    folder = REPO / ".." / "shared" / "datasets" / "mnist"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    start = time.perf_counter()
    splits, files = read_source("idx", str(folder), name="mnist")
    elapsed = time.perf_counter() - start
    assert len(splits.train) == 60000 and len(splits.test) == 10000 and len(files) == 4
    assert splits.train.shape == (1, 28, 28)
    assert splits.train.class_counts() == MNIST_TRAIN_COUNTS
    assert splits.test.class_counts() == MNIST_TEST_COUNTS
    mean, std = splits.train.mean_std()
    assert round(mean[0], 4) == 0.1307 and round(std[0], 4) == 0.3081
    assert elapsed < 10, f"MNIST took {elapsed:.1f} s to load"
    start = time.perf_counter()
    write_shards(splits.train, tmp_path / "train", split="train")
    back = read_shards(tmp_path / "train")
    assert time.perf_counter() - start < 10
    assert torch.equal(back.images, splits.train.images) and torch.equal(back.labels, splits.train.labels)


@pytest.mark.integration
def test_fashion_mnist_debian_package():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    splits, _ = read_source("idx", str(folder), name="fashion-mnist")
    assert splits.train.class_counts() == [6000] * 10 and splits.test.class_counts() == [1000] * 10
    assert splits.train.classes == FASHION_MNIST_CLASSES
    mean, std = splits.train.mean_std()
    assert round(mean[0], 4) == 0.2860 and round(std[0], 4) == 0.3530


@pytest.mark.integration
def test_cifar10_jpeg_tarball():
    archive = SHARED / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} absent")
    start = time.perf_counter()
    splits, files = read_source("imagefolder", str(archive))
    elapsed = time.perf_counter() - start
    assert files == [archive]
    assert splits.train.classes == ["airplane", "automobile", "bird", "cat", "deer",
                                    "dog", "frog", "horse", "ship", "truck"]
    assert splits.train.shape == (3, 32, 32)
    assert splits.train.class_counts() == [5000] * 10 and splits.test.class_counts() == [1000] * 10
    mean, std = splits.train.mean_std()
    assert np.allclose(mean, [0.4913, 0.4821, 0.4465], atol=1e-4)
    assert np.allclose(std, [0.2452, 0.2428, 0.2606], atol=1e-4)
    assert elapsed < 60, f"CIFAR-10 JPEG tarball took {elapsed:.1f} s to load"
