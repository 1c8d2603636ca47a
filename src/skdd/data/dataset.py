"""In-memory labelled image datasets: uint8 tensors [N, C, H, W] plus int64 labels.

Small datasets (MNIST, Fashion-MNIST, CIFAR-10) live whole in memory, on the compute device,
in their stored uint8 form; conversion to float happens per batch where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skdd.errors import SkddError

# Elements per chunk in mean_std: bounds the working copy (float64 off CPU) to about 64 MiB.
_STATS_CHUNK_ELEMENTS = 8 * 1024 * 1024


@dataclass
class ImageDataset:
    """Images as uint8 [N, C, H, W] (0..255), labels as int64 [N] in [0, len(classes))."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Number of images per class, in class order."""
        counts = torch.bincount(self.labels.detach().to("cpu", torch.int64), minlength=self.num_classes)
        return [int(c) for c in counts[: self.num_classes]]

    def validate(self, where: str) -> None:
        """Raise SkddError (one line, prefixed by `where`) unless the dataset is well formed."""
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise SkddError(f"{where}: images must be a uint8 tensor [N, C, H, W], got {got}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise SkddError(f"{where}: labels must be a 1-D tensor of {images.shape[0]} entries, got {got}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise SkddError(f"{where}: labels must be integers, got {labels.dtype}")
        if len(self) == 0:
            raise SkddError(f"{where}: the dataset has no images")
        if self.num_classes == 0:
            raise SkddError(f"{where}: the dataset has no classes")
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise SkddError(f"{where}: duplicate class names {dupes}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            bad = lo if lo < 0 else hi
            index = int(torch.nonzero(labels == bad)[0])
            raise SkddError(
                f"{where}: label {bad} (at index {index}) is out of range [0, {self.num_classes}) "
                f"for {self.num_classes} classes"
            )
        counts = self.class_counts()
        empty = [self.classes[i] for i, n in enumerate(counts) if n == 0]
        if empty:
            raise SkddError(f"{where}: class {empty[0]!r} has no images" + (f" (nor {empty[1:]})" if len(empty) > 1 else ""))

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with its tensors on `device` (no copy if already there)."""
        return ImageDataset(self.images.to(device), self.labels.to(device), list(self.classes))

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The images (and labels) at `index`, an index or mask tensor on any device, as a dataset of their own."""
        return ImageDataset(self.images[index.to(self.images.device)].contiguous(),
                            self.labels[index.to(self.labels.device)].contiguous(), list(self.classes))

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and population std on the [0, 1] scale, exact to float64 rounding.

        The per-channel sum of pixel values and of their squares is accumulated in chunks, exactly
        (see `_pixel_sums`); the moments are then formed in float64.
        """
        if len(self) == 0:
            raise SkddError("mean_std: the dataset has no images")
        total, total_sq = _pixel_sums(self.images)
        count = float(len(self) * self.shape[1] * self.shape[2])
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(0.0).sqrt()
        return [float(m) / 255.0 for m in mean.cpu()], [float(s) / 255.0 for s in std.cpu()]


def _pixel_sums(images: torch.Tensor, *, histogram: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sum of pixel values and of their squares (float64 [C] each), computed in chunks.

    On CPU: a 256-bin histogram per channel (integer counts). Elsewhere: float64 sums, which stay
    exact below 2**53, i.e. up to ~10**11 pixels per channel.
    """
    n, c, h, w = images.shape
    step = max(1, _STATS_CHUNK_ELEMENTS // (c * h * w))
    if histogram is None:
        histogram = images.device.type == "cpu"
    if histogram:
        hist = torch.zeros(c, 256, dtype=torch.int64, device=images.device)
        for start in range(0, n, step):
            chunk = images[start : start + step]
            for ch in range(c):
                hist[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256)
        values = torch.arange(256, dtype=torch.float64, device=images.device)
        counts = hist.to(torch.float64)
        return counts @ values, counts @ (values * values)
    total = torch.zeros(c, dtype=torch.float64, device=images.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, n, step):
        x = images[start : start + step].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square_().sum(dim=(0, 2, 3))
    return total, total_sq


@dataclass
class Splits:
    """A dataset's train split and, when the source has one, its test split."""

    train: ImageDataset
    test: ImageDataset | None
