"""Resumable training state: weights, optimizer states, RNG states and counters, every N steps.

A checkpoint is a folder `step-XXXXXXXX/` written under a temporary name and renamed when complete,
so a SIGKILL mid-write leaves the previous checkpoint intact. Weights and tensors go to safetensors,
optimizer states to `torch.save` read back with `weights_only=True`: nothing is ever unpickled.
Only the newest `keep` checkpoints stay. A checkpoint remembers the params hash it was made with;
a run with other params does not resume from it.

An optional `mirror` (`skdd.s3.CheckpointMirror` for s3:// outputs, chosen by `skdd.storage.checkpointer`)
keeps a remote copy of the kept checkpoints, so a run on a machine that lost its disk (a preempted pod)
resumes from the newest remote one. A failed upload warns and training goes on: the local copy still
covers a process crash, and the next save uploads again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from skdd.errors import SkddError

_PREFIX = "step-"


def rng_state() -> dict[str, torch.Tensor]:
    state = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng.cuda.{i}"] = s
    return state


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


@dataclass
class Checkpoint:
    step: int
    meta: dict[str, Any]
    modules: dict[str, dict[str, torch.Tensor]]   # name -> state_dict
    optimizers: dict[str, dict[str, Any]]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class Mirror(Protocol):
    """A remote copy of a checkpoint folder's `step-N/` subfolders (see `skdd.s3.CheckpointMirror`)."""

    def push(self, folder: Path) -> None: ...
    def prune(self, keep: set[str]) -> None: ...
    def clear(self) -> None: ...
    def pull_newest(self, local_root: Path, newer_than: str | None) -> str | None: ...


class Checkpointer:
    def __init__(self, folder: Path, params_hash: str, keep: int = 2, mirror: Mirror | None = None):
        self.folder = Path(folder)
        self.params_hash = params_hash
        self.keep = keep
        self.mirror = mirror
        self._pulled = mirror is None

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             tensors: dict[str, torch.Tensor] | None = None, meta: dict[str, Any] | None = None) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{_PREFIX}{step:08d}"
        tmp = self.folder / f".tmp-{_PREFIX}{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        flat = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
                for k, v in m.state_dict().items()}
        save_file(flat, str(tmp / "modules.safetensors"))
        torch.save({k: o.state_dict() for k, o in optimizers.items()}, tmp / "optimizers.pt")
        extra = {k: v.detach().cpu().contiguous() for k, v in {**rng_state(), **(tensors or {})}.items()}
        save_file(extra, str(tmp / "state.safetensors"))
        info = {"step": step, "params_hash": self.params_hash, "modules": sorted(modules), **(meta or {})}
        (tmp / "meta.json").write_text(json.dumps(info, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self._all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        if self.mirror is not None:
            try:
                self.mirror.push(final)
                self.mirror.prune({p.name for p in self._all()})
            except SkddError as exc:
                print(f"skdd: warning: checkpoint at step {step} kept locally only: {exc}", file=sys.stderr,
                      flush=True)
        return final

    def _pull(self) -> None:
        """Once, before the first read: bring in the mirror's newest checkpoint if it is newer than ours."""
        if self._pulled:
            return
        self._pulled = True
        self.folder.mkdir(parents=True, exist_ok=True)
        local = self._all()
        name = self.mirror.pull_newest(self.folder, local[-1].name if local else None)
        if name is not None:
            print(f"skdd: fetched checkpoint {name} from {self.mirror}", flush=True)

    def _all(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))

    def latest(self) -> Checkpoint | None:
        """The newest readable checkpoint made with the same params, or None (then training starts fresh)."""
        self._pull()
        for path in reversed(self._all()):
            try:
                meta = json.loads((path / "meta.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if meta.get("params_hash") != self.params_hash:
                return None
            try:
                flat = load_file(str(path / "modules.safetensors"))
                optim = torch.load(path / "optimizers.pt", weights_only=True, map_location="cpu")
                tensors = load_file(str(path / "state.safetensors"))
            except Exception as exc:  # a damaged checkpoint: fall back to the older one
                print(f"skdd: skipping unreadable checkpoint {path}: {exc}")
                continue
            modules: dict[str, dict[str, torch.Tensor]] = {name: {} for name in meta["modules"]}
            for key, value in flat.items():
                name, sub = key.split(".", 1)
                modules[name][sub] = value
            return Checkpoint(step=meta["step"], meta=meta, modules=modules, optimizers=optim, tensors=tensors)
        return None

    def stale(self) -> bool:
        """True when checkpoints exist but were made with other params."""
        self._pull()
        for path in reversed(self._all()):
            try:
                return json.loads((path / "meta.json").read_text()).get("params_hash") != self.params_hash
            except (OSError, json.JSONDecodeError):
                continue
        return False

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.mirror is not None:
            self.mirror.clear()


def restore(ckpt: Checkpoint, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for name, module in modules.items():
        if name not in ckpt.modules:
            raise SkddError(f"checkpoint at step {ckpt.step} has no weights for '{name}'")
        module.load_state_dict(ckpt.modules[name])
    for name, opt in optimizers.items():
        opt.load_state_dict(ckpt.optimizers[name])
    set_rng_state(ckpt.tensors)
