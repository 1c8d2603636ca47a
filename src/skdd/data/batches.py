"""Batches straight from in-memory uint8 tensors, and the one pixel convention.

Small image datasets fit on the device, so a batch is an index gather, never a DataLoader
(DiM rebuilt its DataLoader iterator 16 times per generator step). The shuffling order is state
that a checkpoint saves, so a resumed run draws exactly the batches the uninterrupted run would.

Pixel convention (DESIGN.md): the generator and critic see [-1, 1]; every classifier sees
[0, 1] images normalized by the dataset's mean/std, real and synthetic, train and test alike.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class EpochBatcher:
    """Shuffled index batches without replacement, dropping the last partial batch (DataLoader's default in DiM)."""

    def __init__(self, n: int, batch_size: int, device: torch.device | str = "cpu"):
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds dataset size {n}")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.per_epoch = n // batch_size
        self.epoch = -1
        self.pos = self.per_epoch
        self.perm = torch.empty(0, dtype=torch.long)

    def next(self) -> Tensor:
        if self.pos >= self.per_epoch:
            self.perm = torch.randperm(self.n).to(self.device)   # CPU RNG: identical on every device
            self.epoch += 1
            self.pos = 0
        start = self.pos * self.batch_size
        self.pos += 1
        return self.perm[start:start + self.batch_size]

    @property
    def starts_epoch(self) -> bool:
        """True when the next call to `next` begins a new epoch."""
        return self.pos >= self.per_epoch

    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}.perm": self.perm.cpu(), f"{prefix}.counters": torch.tensor([self.epoch, self.pos])}

    def load_state_tensors(self, tensors: dict[str, Tensor], prefix: str) -> None:
        self.perm = tensors[f"{prefix}.perm"].to(self.device)
        self.epoch, self.pos = (int(v) for v in tensors[f"{prefix}.counters"].tolist())


class Pixels:
    """Maps stored uint8 images and generator outputs into the two numeric conventions."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"):
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # u8 -> (u8/255 - mean)/std folded into one multiply-add: this runs on every pool-training batch
        self._scale = 1.0 / (255.0 * self.std)
        self._shift = -self.mean / self.std

    def gan(self, images_u8: Tensor) -> Tensor:
        return images_u8.float().mul_(2.0 / 255.0).sub_(1.0)

    def classifier(self, images_u8: Tensor) -> Tensor:
        return torch.addcmul(self._shift, images_u8.float(), self._scale)

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] to classifier input; differentiable (refine optimises pixels through it)."""
        return (x - self.mean) / self.std

    def classifier_from_gan(self, x: Tensor) -> Tensor:
        """Generator output in [-1, 1] to classifier input; differentiable (the matching loss needs it)."""
        return self.normalize((x + 1.0) * 0.5)

    @staticmethod
    def gan_to_u8(x: Tensor) -> Tensor:
        return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
