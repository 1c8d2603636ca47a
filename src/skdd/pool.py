"""The model pool of the matching step: randomly initialized classifiers trained online on real data.

DiM (and, by all signs, the SKD paper) draws one architecture per epoch, initializes it from
scratch and trains it with SGD on real batches (16 steps before each generator step), so the
logits it compares carry class information that grows over the epoch. `sampling: step` instead
keeps one live model per architecture and draws among them every step (docs/method.md §1.4,
"pre-warmed models"), each still trained online.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skdd.augment import DiffAug
from skdd.device import autocast, prepare_module
from skdd.models import create_model


class ModelPool:
    def __init__(self, names: list[str], sampling: str, *, in_channels: int, num_classes: int, image_size: int,
                 width: int | None, lr: float, momentum: float, weight_decay: float, device: torch.device,
                 amp: bool = True):
        self.names, self.sampling = list(names), sampling
        self.shape = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        self.width = width
        self.sgd = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.device, self.amp = device, amp
        self.live: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        self.current: str | None = None
        self.draws: dict[str, int] = {n: 0 for n in self.names}

    def _create(self, name: str) -> None:
        kwargs = {} if self.width is None else {"width": self.width}
        model = prepare_module(create_model(name, **self.shape, **kwargs), self.device)
        model.train()
        self.live[name] = (model, torch.optim.SGD(model.parameters(), **self.sgd))

    def draw(self, new_epoch: bool) -> None:
        """Pick the architecture for this step (per-epoch: only when an epoch starts, with a fresh init)."""
        if self.sampling == "epoch" and not new_epoch and self.current is not None:
            return
        name = self.names[int(torch.randint(len(self.names), (1,)))]
        self.draws[name] += 1
        if self.sampling == "epoch":
            self.live.clear()
        if name not in self.live:
            self._create(name)
        self.current = name

    @property
    def model(self) -> nn.Module:
        return self.live[self.current][0]

    def train_step(self, x: torch.Tensor, y: torch.Tensor, augment: DiffAug) -> float:
        model, opt = self.live[self.current]
        model.requires_grad_(True)
        with autocast(self.device, self.amp):
            loss = F.cross_entropy(model(augment(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    # checkpoint plumbing: module/optimizer names cannot contain dots
    def modules(self) -> dict[str, nn.Module]:
        return {f"pool_{n}": m for n, (m, _) in self.live.items()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {f"pool_{n}": o for n, (_, o) in self.live.items()}

    def meta(self) -> dict:
        return {"pool_current": self.current, "pool_live": sorted(self.live), "pool_draws": dict(self.draws)}

    def rebuild(self, meta: dict) -> None:
        """Recreate the live models named in a checkpoint so their states can be loaded into them."""
        self.live.clear()
        for name in meta["pool_live"]:
            self._create(name)
        self.current = meta["pool_current"]
        self.draws = dict(meta["pool_draws"])
