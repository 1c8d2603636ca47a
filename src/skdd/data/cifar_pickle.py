"""CIFAR's python batches are pickles by format: they are read with an unpickler that only builds plain
data and uint8 numpy arrays and refuses every other global (so a crafted batch cannot run code).
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Callable

import numpy as np

from skdd.errors import SkddError, one_line

def _np_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dtype} is not allowed")
    return dtype


def _safe_encode(text, encoding="utf-8"):
    # What Python 3 writes for `bytes` at pickle protocol 2: _codecs.encode(str, "latin1").
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return codecs.encode(text, encoding)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds dicts, lists, str, bytes, ints and uint8 numpy arrays; refuses any other global."""

    def __init__(self, data: bytes, where: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._where = where

    def find_class(self, module: str, name: str):
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise SkddError(
                f"{self._where}: refusing to unpickle global {module}.{name} (only plain data and numpy arrays allowed)"
            )
        return found

    def persistent_load(self, pid):
        raise SkddError(f"{self._where}: refusing to unpickle a persistent id")


def load_cifar_pickle(data: bytes, where: str):
    """Restricted unpickling of one CIFAR python batch; `where` names the file in errors."""
    try:
        return _RestrictedUnpickler(data, where).load()
    except SkddError:
        raise
    except Exception as err:  # noqa: BLE001 - anything a malformed pickle throws is a corrupt input
        raise SkddError(f"{where}: not a valid CIFAR python batch ({one_line(err)})") from None


def _key(d: dict, key: str, where: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise SkddError(f"{where}: missing key {key!r}")


def cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = load_cifar_pickle(data, where)
    if not isinstance(batch, dict):
        raise SkddError(f"{where}: expected a dict, got {type(batch).__name__}")
    images, labels = _key(batch, "data", where), _key(batch, "labels", where)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise SkddError(f"{where}: 'data' must be a uint8 array [N, 3072], got {got}")
    if not isinstance(labels, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer)) for v in labels):
        raise SkddError(f"{where}: 'labels' must be a list of integers")
    labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels_arr.shape[0] != images.shape[0]:
        raise SkddError(f"{where}: {labels_arr.shape[0]} labels for {images.shape[0]} images")
    return images.reshape(-1, 3, 32, 32), labels_arr


def cifar_meta(data: bytes, where: str) -> list[str]:
    meta = load_cifar_pickle(data, where)
    if not isinstance(meta, dict):
        raise SkddError(f"{where}: expected a dict, got {type(meta).__name__}")
    names = _key(meta, "label_names", where)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise SkddError(f"{where}: 'label_names' must be a list of strings")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
