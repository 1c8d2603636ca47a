"""The model pool of the matching step: classifiers trained online on real data, or recorded trajectories of them.

DiM (and, by all signs, the SKD paper) draws one architecture per epoch, initializes it from
scratch and trains it with SGD on real batches (16 steps before each generator step), so the
logits it compares carry class information that grows over the epoch. `sampling: step` instead
keeps one live model per architecture and draws among them every step (docs/method.md §1.4,
"pre-warmed models"), each still trained online.

`SnapshotPool` (`distill.pool_source: trajectories`) draws an architecture and one of its recorded snapshots
(the `pool` stage's artifact) every generator step and uses it frozen: two forward passes instead of
`pool_steps` SGD steps. The draw comes from the global RNG, so it follows the seed and resumes with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from skdd.augment import DiffAug
from skdd.device import autocast, prepare_module
from skdd.errors import SkddError
from skdd.models import create_model

PAPER_POOL = ["convnet3", "resnet10", "resnet18"]   # the paper's pool (DiM also has resnet10_ap, resnet18_ap)
POOL_FILE = "pool.json"
SNAPSHOT_DIR = "snapshots"


def build_member(name: str, shape: dict, width: int | None, device: torch.device) -> nn.Module:
    """A pool architecture on `device` at `width` (None: its own default width), as every pool builds it."""
    return prepare_module(create_model(name, **shape, **({} if width is None else {"width": width})), device)


def snapshot_name(arch: str, step: int) -> str:
    return f"{arch}-{step:06d}.safetensors"


@dataclass
class TrajectorySpec:
    """What a `pool` artifact holds (its `pool.json`): the architectures, their width, the snapshot steps."""

    archs: list[str]
    width: int | None
    steps: list[int]
    in_channels: int
    image_size: int
    num_classes: int
    classes: list[str]
    dataset: str
    mean: list[float]
    std: list[float]

    @classmethod
    def read(cls, path: Path) -> "TrajectorySpec":
        try:
            spec = cls(**json.loads((path / POOL_FILE).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise SkddError(f"{path / POOL_FILE}: not a valid pool spec ({exc.__class__.__name__})") from None
        missing = [snapshot_name(a, s) for a in spec.archs for s in spec.steps
                   if not (path / SNAPSHOT_DIR / snapshot_name(a, s)).is_file()]
        if missing:
            raise SkddError(f"{path}: {len(missing)} snapshot(s) missing, e.g. {SNAPSHOT_DIR}/{missing[0]}")
        return spec


class ModelPool:
    def __init__(self, names: list[str], sampling: str, *, in_channels: int, num_classes: int, image_size: int,
                 width: int | None, lr: float, momentum: float, weight_decay: float, device: torch.device,
                 amp: bool = False):
        self.names, self.sampling = list(names), sampling
        self.shape = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        self.width = width
        self.sgd = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.device, self.amp = device, amp
        self.live: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        self.current: str | None = None
        self.draws: dict[str, int] = {n: 0 for n in self.names}

    def _create(self, name: str) -> None:
        model = build_member(name, self.shape, self.width, self.device).train()
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

    def logged(self) -> dict:
        """What a distill step logs about the pool model it matched with."""
        return {"pool": self.current}

    def meta(self) -> dict:
        return {"pool_current": self.current, "pool_live": sorted(self.live), "pool_draws": dict(self.draws)}

    def rebuild(self, meta: dict) -> None:
        """Recreate the live models named in a checkpoint so their states can be loaded into them."""
        self.live.clear()
        for name in meta["pool_live"]:
            self._create(name)
        self.current = meta["pool_current"]
        self.draws = dict(meta["pool_draws"])


class SnapshotPool:
    """ModelPool's interface over recorded trajectories: every `draw` picks (architecture, snapshot) uniformly and
    loads it into that architecture's one model, kept in train mode as the online pool's is (BatchNorm on batch
    statistics; the running statistics a forward pass moves are reloaded with the next draw). Nothing trains."""

    def __init__(self, path: Path, spec: TrajectorySpec, device: torch.device):
        self.path, self.spec, self.device = path, spec, device
        self.names = list(spec.archs)
        shape = dict(in_channels=spec.in_channels, num_classes=spec.num_classes, image_size=spec.image_size)
        self.models = {n: build_member(n, shape, spec.width, device).train().requires_grad_(False)
                       for n in self.names}
        self.current: str | None = None
        self.snapshot: int | None = None
        self.draws: dict[str, int] = {n: 0 for n in self.names}

    def _load(self, name: str, step: int) -> None:
        state = load_file(str(self.path / SNAPSHOT_DIR / snapshot_name(name, step)))
        self.models[name].load_state_dict(state)
        self.current, self.snapshot = name, step

    def draw(self, new_epoch: bool) -> None:
        """A fresh (architecture, snapshot) every step, whatever the epoch."""
        a = int(torch.randint(len(self.names), (1,)))
        k = int(torch.randint(len(self.spec.steps), (1,)))
        self.draws[self.names[a]] += 1
        self._load(self.names[a], self.spec.steps[k])

    @property
    def model(self) -> nn.Module:
        return self.models[self.current]

    def modules(self) -> dict[str, nn.Module]:
        return {}   # the drawn snapshot is named in `meta`; its weights are the artifact's

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def logged(self) -> dict:
        return {"pool": self.current, "pool_snapshot": self.snapshot}

    def meta(self) -> dict:
        return {"pool_current": self.current, "pool_snapshot": self.snapshot, "pool_draws": dict(self.draws)}

    def rebuild(self, meta: dict) -> None:
        self.draws = dict(meta["pool_draws"])
        if meta.get("pool_current") is not None:
            self._load(meta["pool_current"], meta["pool_snapshot"])
