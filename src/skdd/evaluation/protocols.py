"""The two evaluation protocols: strict DC/DSA fixed-set training, and DiM's on-the-fly generator protocol.

Both train a freshly initialised classifier and test it on the real test set; they differ in what the
classifier trains on and in what is reported (docs/method.md §2.1-2.3):

* `train_strict` (the honest default, DC/DSA `evaluate_synset`): a FIXED training set, DSA augmentation
  per sample on every minibatch, SGD with one lr decay half-way, test once at the end in eval mode and
  report that final accuracy (no best-of).
* `train_dim` ("DiM protocol (best test checkpoint)"): fresh generator images every iteration, colour+crop
  DiffAug, SGD without decay, test every `epochs // checks` epochs and report the BEST of those test
  accuracies, which selects on the test set and is therefore optimistic. Always label it as such.

Both take `seed` and call `torch.manual_seed(seed)` before building the model: the global torch RNG
(CPU and CUDA) then drives initialisation, shuffling and augmentation, so one seed is one trial, and
on CPU the same seed gives bit-identical results.

Checkpoint / resume (per epoch). If `on_epoch` is given it is called after every epoch as
`on_epoch(epoch, snapshot)`, `epoch` being the number of completed epochs (1..epochs), with

    snapshot = {"epoch": int,                     # completed epochs, == the callback's `epoch`
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "tensors": {"rng.cpu": ..., "rng.cuda.<i>": ..., "train_loss": 0-d tensor},
                "meta": {"protocol": "strict" | "dim", "seed": int, "epochs": int, ...}}

The tensors ALIAS the live training state (copying every epoch would dominate DiM's 1-4 step epochs):
persist or `clone_snapshot` it inside the callback, never keep the dict itself. Passing a saved snapshot
back as `state=` to the same function with the same arguments continues from that epoch and gives, on
CPU, a bit-identical final result to the uninterrupted run. The global RNG state is restored from the
snapshot after each callback, so a callback that draws random numbers does not perturb the run.
`checkpoint_kwargs` / `snapshot_from_checkpoint` map a snapshot to and from `skdd.checkpoint.Checkpointer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skdd.augment import DiffAug
from skdd.checkpoint import rng_state, set_rng_state
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.device import amp_on, autocast, prepare_module
from skdd.guard import check_losses, check_weights
from skdd.errors import SkddError
from skdd.models import create_model
from skdd.progress import Progress

__all__ = [
    "DIM_AUGMENT", "LR_DECAY_FACTOR", "TrainConfig", "checkpoint_kwargs", "clone_snapshot",
    "dim_check_epochs", "dim_iterations_per_epoch", "evaluate_accuracy", "lr_for_epoch",
    "snapshot_from_checkpoint", "train_dim", "train_strict",
]

DIM_AUGMENT = "color_crop"   # DiM validate.py: per-sample colour + crop, its own DiffAug scheme
LR_DECAY_FACTOR = 0.1
TEST_BATCH = 500
_PROGRESS_EVERY = 10         # epochs between progress lines (each one costs a host sync for the loss)

EpochCallback = Callable[[int, dict], None]


@dataclass
class TrainConfig:
    """Knobs shared by both protocols. `width=None` keeps the architecture's default width.

    `augment` is the DSA strategy of the strict protocol (use `skdd.augment.dsa_strategy_for(dataset)`:
    no flip for digits); the DiM protocol always uses `DIM_AUGMENT`, as DiM did. `amp` enables bf16
    autocast on CUDA (no effect on CPU).
    """

    arch: str
    epochs: int = 1000
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "color_crop_cutout_flip_scale_rotate"
    width: int | None = None
    amp: bool = True

    def validate(self) -> None:
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SkddError(f"evaluation: {key} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise SkddError(f"evaluation: lr must be positive, got {self.lr!r}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise SkddError(f"evaluation: momentum and weight_decay must be >= 0, got "
                            f"{self.momentum!r} and {self.weight_decay!r}")


# ---------------------------------------------------------------------------------------------- helpers
def lr_for_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Strict-protocol lr of 0-based `epoch`: `lr` for epochs [0, epochs//2), `lr * 0.1` for [epochs//2, epochs).

    DC's loop runs Epoch+1 passes and re-creates the optimizer (momentum reset) after pass Epoch//2+1,
    i.e. 502 passes at lr and 499 at lr/10 for Epoch = 1000. Here: exactly `epochs` passes, the first
    `epochs // 2` at lr and the rest at lr/10 (500/500), with the optimizer likewise re-created (momentum
    buffers dropped) at the start of epoch `epochs // 2`. For epochs == 1 the single epoch is decayed.
    """
    return cfg.lr if epoch < cfg.epochs // 2 else cfg.lr * LR_DECAY_FACTOR


def dim_iterations_per_epoch(num_classes: int, ipc: int, batch_size: int) -> int:
    """DiM's `num_classes * ipc // batch_size + 1` (the gen_condense.py/pool_match.py variant; validate.py
    drops the +1 and so never trains at ipc 1, batch 32). (10,1,32) -> 1, (10,10,64) -> 2, (10,50,128) -> 4."""
    for key, value in (("num_classes", num_classes), ("ipc", ipc), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SkddError(f"evaluation: {key} must be a positive integer, got {value!r}")
    return (num_classes * ipc) // batch_size + 1


def dim_check_epochs(epochs: int, checks: int) -> list[int]:
    """Completed-epoch counts at which the DiM protocol tests: every `epochs // checks` epochs (at least 1),
    plus the last epoch if that is not already one of them. (1000, 5) -> [200, 400, 600, 800, 1000]."""
    if isinstance(checks, bool) or not isinstance(checks, int) or checks < 1:
        raise SkddError(f"evaluation: checks must be a positive integer, got {checks!r}")
    interval = max(1, epochs // checks)
    points = list(range(interval, epochs + 1, interval))
    if not points or points[-1] != epochs:
        points.append(epochs)
    return points


def _build_model(cfg: TrainConfig, shape: tuple[int, int, int], num_classes: int, seed: int,
                 device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    c, h, _ = shape
    kwargs = {} if cfg.width is None else {"width": cfg.width}
    model = create_model(cfg.arch, in_channels=c, num_classes=num_classes, image_size=h, **kwargs)
    return prepare_module(model, device)


def _sgd(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _layout(x: Tensor, device: torch.device) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, device: torch.device,
          amp: bool) -> Tensor:
    with autocast(device, amp_on(device, amp)):
        logits = model(_layout(x, device))
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, dataset: ImageDataset, pixels: Pixels, device: torch.device | str, *,
                      batch_size: int = TEST_BATCH, amp: bool = True) -> float:
    """Top-1 accuracy in [0, 1] of `model` in eval mode (BN uses running statistics) on the whole dataset.

    One host sync at the end; the model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        correct = torch.zeros((), dtype=torch.long, device=device)
        for start in range(0, len(dataset), batch_size):
            x = pixels.classifier(dataset.images[start:start + batch_size].to(device, non_blocking=True))
            y = dataset.labels[start:start + batch_size].to(device, non_blocking=True)
            with autocast(device, amp_on(device, amp)):
                logits = model(_layout(x, device))
            correct += (logits.argmax(dim=1) == y).sum()
        return int(correct.item()) / len(dataset)
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------- snapshots
def _snapshot(epoch: int, model: nn.Module, opt: torch.optim.Optimizer, loss: Tensor, meta: dict) -> dict:
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "tensors": {**rng_state(), "train_loss": loss}, "meta": meta}


def _clone(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def clone_snapshot(snapshot: dict) -> dict:
    """A CPU deep copy of a snapshot, safe to keep after the callback returns."""
    return _clone(snapshot)


class _StateDict:
    """Adapter: something with `.state_dict()`, as `Checkpointer.save` expects of modules and optimizers."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def checkpoint_kwargs(snapshot: dict) -> dict:
    """Keyword arguments for `skdd.checkpoint.Checkpointer.save(**checkpoint_kwargs(snapshot))`."""
    return {"step": int(snapshot["epoch"]), "modules": {"model": _StateDict(snapshot["model"])},
            "optimizers": {"optimizer": _StateDict(snapshot["optimizer"])}, "tensors": dict(snapshot["tensors"]),
            "meta": {"evaluation": snapshot["meta"]}}


def snapshot_from_checkpoint(ckpt: Any) -> dict:
    """The snapshot saved by `checkpoint_kwargs`, back from a `skdd.checkpoint.Checkpoint`."""
    try:
        return {"epoch": int(ckpt.step), "model": ckpt.modules["model"], "optimizer": ckpt.optimizers["optimizer"],
                "tensors": ckpt.tensors, "meta": ckpt.meta["evaluation"]}
    except KeyError as exc:
        raise SkddError(f"checkpoint at step {ckpt.step} is not an evaluation snapshot (no {exc})") from None


def _resume(state: dict, protocol: str, seed: int, cfg: TrainConfig, model: nn.Module,
            device: torch.device, **expected_meta: Any) -> tuple[int, torch.optim.Optimizer | None, Tensor]:
    """Load a snapshot into `model`; returns (completed epochs, optimizer or None if 0, last epoch loss)."""
    try:
        meta, epoch = state["meta"], int(state["epoch"])
        model_state, opt_state, tensors = state["model"], state["optimizer"], state["tensors"]
    except (KeyError, TypeError, ValueError) as exc:
        raise SkddError(f"evaluation resume: malformed state ({exc!r})") from None
    expected = {"protocol": protocol, "seed": seed, "epochs": cfg.epochs, "arch": cfg.arch, **expected_meta}
    for key, want in expected.items():
        if meta.get(key) != want:
            raise SkddError(f"evaluation resume: state has {key}={meta.get(key)!r}, this run has {want!r}")
    if not 0 <= epoch <= cfg.epochs:
        raise SkddError(f"evaluation resume: state epoch {epoch} outside [0, {cfg.epochs}]")
    model.load_state_dict(model_state)
    opt = None
    if epoch > 0:
        lr = lr_for_epoch(cfg, epoch - 1) if protocol == "strict" else cfg.lr
        opt = _sgd(model, cfg, lr)
        opt.load_state_dict(_clone(opt_state))   # cloned: the optimizer must not alias the caller's tensors
    set_rng_state(tensors)
    return epoch, opt, tensors["train_loss"].to(device=device, dtype=torch.float32)


def _check_finite(desc: str | None, cfg: TrainConfig, epoch: int, loss: Tensor, model: nn.Module) -> None:
    """A diverged evaluation model would report chance accuracy as a result: refuse it (`skdd.guard`)."""
    run = desc or f"evaluation[{cfg.arch}]"
    check_losses(run, epoch, {"train_loss": float(loss)})
    check_weights(run, epoch, {cfg.arch: model})


def _progress(desc: str | None, total: int, start: int, images_per_epoch: int) -> Progress | None:
    if desc is None:
        return None
    return Progress(total, desc, start=start, every=_PROGRESS_EVERY, images_per_step=images_per_epoch)


# ---------------------------------------------------------------------------------------------- strict
def train_strict(cfg: TrainConfig, train_set: ImageDataset, test_set: ImageDataset, pixels: Pixels,
                 device: torch.device | str, *, seed: int, on_epoch: EpochCallback | None = None,
                 state: dict | None = None, desc: str | None = None) -> dict:
    """Strict DC/DSA protocol on a fixed training set; reports the FINAL model's test accuracy.

    The model is built under `torch.manual_seed(seed)`; SGD(lr, momentum, weight_decay); `cfg.epochs` passes
    over the training set, each a fresh shuffle in minibatches of `cfg.batch_size` keeping the last partial
    batch (DC's DataLoader); each minibatch gets per-sample DSA augmentation `DiffAug(cfg.augment, "dsa")`;
    CE loss. lr schedule: see `lr_for_epoch` (optimizer re-created at epoch epochs//2, as DC re-creates it).
    The training set lives on the device as uint8 and is batched by index. After the last epoch the model is
    tested once, in eval() mode under no_grad, on the full test set.

    Returns {"protocol": "strict", "accuracy": float in [0, 1], "epochs", "seed", "lr_history": the lr
    actually used in each epoch, "train_loss": mean CE of the last epoch, "steps_per_epoch"}.
    `on_epoch`/`state`: see the module docstring. `desc`: show progress under that name.
    """
    cfg.validate()
    device = torch.device(device)
    train, test = train_set.to(device), test_set.to(device)
    n, bs = len(train), cfg.batch_size
    if n == 0:
        raise SkddError("evaluation: the training set is empty")
    if len(test) == 0:
        raise SkddError("evaluation: the test set is empty")
    if train.shape != test.shape:
        raise SkddError(f"evaluation: training images are {train.shape} but test images are {test.shape}")
    model = _build_model(cfg, train.shape, train.num_classes, seed, device)
    aug = DiffAug(cfg.augment, "dsa")
    meta = {"protocol": "strict", "seed": seed, "epochs": cfg.epochs, "arch": cfg.arch}

    start, opt, last_loss = 0, None, torch.full((), float("nan"), device=device)
    lr_history: list[float] = []
    if state is not None:
        start, opt, last_loss = _resume(state, "strict", seed, cfg, model, device)
        lr_history = [float(v) for v in state["meta"].get("lr_history", [])][:start]
    if opt is None:
        opt = _sgd(model, cfg, lr_for_epoch(cfg, 0))
    decay_epoch = cfg.epochs // 2
    progress = _progress(desc, cfg.epochs, start, n)
    model.train()
    for epoch in range(start, cfg.epochs):
        if epoch == decay_epoch and epoch > 0:   # DC: a new optimizer at the decayed lr, momentum reset
            opt = _sgd(model, cfg, lr_for_epoch(cfg, epoch))
        lr_history.append(float(opt.param_groups[0]["lr"]))
        perm = torch.randperm(n, device=device)
        loss_sum = torch.zeros((), device=device)
        for b in range(0, n, bs):
            idx = perm[b:b + bs]
            x = aug(pixels.classifier(train.images[idx]), shared=False)
            loss_sum += _step(model, opt, x, train.labels[idx], device, cfg.amp) * idx.numel()
        last_loss = loss_sum / n
        if on_epoch is not None:   # a snapshot is a host copy anyway: check before it can be saved
            _check_finite(desc, cfg, epoch + 1, last_loss, model)
            snap = _snapshot(epoch + 1, model, opt, last_loss, {**meta, "lr_history": list(lr_history)})
            on_epoch(epoch + 1, snap)
            set_rng_state(snap["tensors"])
        if progress is not None and ((epoch + 1) % _PROGRESS_EVERY == 0 or epoch + 1 == cfg.epochs):
            progress.update(epoch + 1, loss=float(last_loss))

    _check_finite(desc, cfg, cfg.epochs, last_loss, model)
    accuracy = evaluate_accuracy(model, test, pixels, device, amp=cfg.amp)
    return {"protocol": "strict", "accuracy": accuracy, "epochs": cfg.epochs, "seed": seed,
            "lr_history": lr_history,
            "train_loss": float(last_loss), "steps_per_epoch": -(-n // bs)}


# ---------------------------------------------------------------------------------------------- DiM
def train_dim(cfg: TrainConfig, sampler: Callable[[int], tuple[Tensor, Tensor]], test_set: ImageDataset,
              pixels: Pixels, device: torch.device | str, *, seed: int, ipc: int, num_classes: int,
              checks: int = 5, on_epoch: EpochCallback | None = None, state: dict | None = None,
              desc: str | None = None) -> dict:
    """DiM protocol (best test checkpoint): on-the-fly generator samples, best of several test checks.

    `sampler(n)` returns n fresh generator images in [-1, 1] (float, on `device`) and their int64 labels
    (the caller draws the labels, e.g. uniformly at random as DiM). It is called under no_grad and, for exact
    resumes, must draw its randomness from the global torch RNG only. Each epoch runs
    `dim_iterations_per_epoch(num_classes, ipc, batch_size)` iterations of `batch_size` images: input
    `pixels.classifier_from_gan(x)`, per-sample `DiffAug(DIM_AUGMENT, "dim")`, CE loss, SGD with NO lr decay
    (`cfg.augment` is not used). The model is tested at `dim_check_epochs(epochs, checks)`.

    Deviation from DiM: DiM's `test()` never calls `model.eval()`, so BN models were tested with test-batch
    statistics; here testing is in eval() mode (running statistics), then training mode is restored.
    ConvNet (instance norm) is unaffected.

    Returns {"protocol": "dim", "accuracy": best check accuracy (selected on the test set: optimistic),
    "checks": [(epoch, accuracy), ...], "final_accuracy": last check, "best_epoch", "epochs", "seed",
    "ipc", "iterations_per_epoch", "train_loss": mean CE of the last epoch}.
    """
    cfg.validate()
    device = torch.device(device)
    test = test_set.to(device)
    if len(test) == 0:
        raise SkddError("evaluation: the test set is empty")
    iterations = dim_iterations_per_epoch(num_classes, ipc, cfg.batch_size)
    check_at = set(dim_check_epochs(cfg.epochs, checks))
    model = _build_model(cfg, test.shape, num_classes, seed, device)
    aug = DiffAug(DIM_AUGMENT, "dim")
    meta = {"protocol": "dim", "seed": seed, "epochs": cfg.epochs, "arch": cfg.arch, "ipc": ipc, "checks": []}

    start, opt, last_loss = 0, None, torch.full((), float("nan"), device=device)
    results: list[tuple[int, float]] = []
    if state is not None:
        start, opt, last_loss = _resume(state, "dim", seed, cfg, model, device, ipc=ipc)
        results = [(int(e), float(a)) for e, a in state["meta"]["checks"]]
    if opt is None:
        opt = _sgd(model, cfg, cfg.lr)
    bs = cfg.batch_size
    progress = _progress(desc, cfg.epochs, start, iterations * bs)
    model.train()
    for epoch in range(start, cfg.epochs):
        loss_sum = torch.zeros((), device=device)
        for _ in range(iterations):
            with torch.no_grad():
                x, y = sampler(bs)
            if x.shape[0] != bs or y.shape[0] != bs:
                raise SkddError(f"evaluation: sampler({bs}) returned {x.shape[0]} images and {y.shape[0]} labels")
            x = aug(pixels.classifier_from_gan(x.detach().to(device=device, dtype=torch.float32)), shared=False)
            loss_sum += _step(model, opt, x, y.to(device=device, dtype=torch.long), device, cfg.amp)
        last_loss = loss_sum / iterations
        done = epoch + 1
        if on_epoch is not None or done in check_at:
            _check_finite(desc, cfg, done, last_loss, model)
        if done in check_at:
            results.append((done, evaluate_accuracy(model, test, pixels, device, amp=cfg.amp)))
        if on_epoch is not None:
            snap = _snapshot(done, model, opt, last_loss, {**meta, "checks": [list(r) for r in results]})
            on_epoch(done, snap)
            set_rng_state(snap["tensors"])
        if progress is not None and (done % _PROGRESS_EVERY == 0 or done == cfg.epochs):
            metrics = {"loss": float(last_loss)}
            if results:
                metrics["best_acc"] = max(a for _, a in results)
            progress.update(done, **metrics)

    best_epoch, best = max(results, key=lambda r: r[1])   # first of equal maxima
    return {"protocol": "dim", "accuracy": best, "checks": results, "final_accuracy": results[-1][1],
            "best_epoch": best_epoch, "epochs": cfg.epochs, "seed": seed, "ipc": ipc,
            "iterations_per_epoch": iterations, "train_loss": float(last_loss)}
