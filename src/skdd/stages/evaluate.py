"""Stage 5: test accuracy of classifiers trained on a synthetic set (or generator), mean ± std over trials.

Inputs:
  * `dataset`   the real dataset artifact; its **test** split is the test set (`split: val` tests on its
                validation split instead, to choose a setting without the test split), its mean/std normalise every
                classifier input (train and test alike), its name picks the DSA strategy (no flip for digits);
  * `synthetic` what the classifiers train on:
      - protocol `strict`: a dataset artifact with a `train` split (from `sample`, `select` or `ingest`), a FIXED
        set with the same number of images per class (its IPC). Pointing it at the `dataset` artifact itself
        evaluates the full training set (the upper bound); then unequal class counts are allowed and IPC is
        reported as "full";
      - protocol `dim`: a GAN artifact (`pretrain`/`distill` output) sampled afresh every iteration with uniformly
        random labels, generator in eval mode (G's moving average when the artifact has one). (The Python API
        also accepts it as `inputs["gan"]`.)

Protocols (docs/method.md §2.1-2.2; `skdd.evaluation.protocols`):
  * `strict` ("strict (DC/DSA, last epoch)"): each architecture trained from scratch on the fixed set, per-sample
    DSA augmentation, SGD(lr, momentum, wd), batch `batch_size`, `epochs` epochs with lr x0.1 half-way, tested once
    at the end in eval() mode on the whole test set;
  * `dim` ("DiM protocol (best test checkpoint)"): ⌊classes·IPC/B⌋+1 iterations of B fresh generator images per
    epoch (B = `dim_batch_size`, default 32/64/128 for IPC 1/10/50 as the paper, else 64), colour+crop
    augmentation, no lr decay, tested `checks` times; the best test accuracy is reported (selected on the test set).
Trial t uses seed `seed + t` (model init, shuffling, augmentation, and for `dim` the generator's noise and labels).

Output (kind "evaluation"): `metrics.json` (machine-readable, schema below), `report.md` (the table in the paper's
layout, protocol in the heading), `accuracy.png` (accuracy per architecture with ± std error bars), manifest.

metrics.json: `skdd.evaluation.schema.EvaluationMetrics` (typed, and checked against real runs by the tests).

Resume: the staging folder holds a `Checkpointer` (`<out>.partial/checkpoints`) keyed on the params and the
inputs' manifests. Every `checkpoint_every_epochs` epochs the running trial's model, optimizer and RNG state are
saved together with every finished trial's result; a finished trial saves a marker with its result. A killed run,
re-run with the same command, continues at the trial and epoch it reached and (on CPU) ends with exactly the
numbers of an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from skdd import checkpoint as ckpt_mod
from skdd import lineage, storage
from skdd import telemetry
from skdd.augment import DiffAug, dsa_strategy_for
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.device import DEVICES, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.evaluation.protocols import (
    DIM_AUGMENT,
    TrainConfig,
    checkpoint_kwargs,
    snapshot_from_checkpoint,
    train_dim,
    train_strict,
)
from skdd.evaluation.report import (
    PROTOCOL_LABELS,
    STD_KIND,
    evaluation_markdown,
    mean_std,
    plot_architectures,
)
from skdd.evaluation.schema import METRICS_SCHEMA, DimTrial, EvaluationMetrics, Trial
from skdd.gan_artifact import load_sampling_generator, noise
from skdd.models import check_classifier_param
from skdd.stages.common import load_dataset, open_input

PROTOCOLS = ("strict", "dim")
SPLITS = ("test", "val")   # val: choosing settings (ψ, steps, a checkpoint) without reading the test split
PAPER_DIM_BATCH = {1: 32, 10: 64, 50: 128}   # SKD paper: batch 32/64/128 for IPC 1/10/50
DEFAULT_DIM_BATCH = 64


@dataclass
class EvaluateParams:
    protocol: str = param("strict", choices=PROTOCOLS,
                          help="strict: fixed set, last epoch (honest); dim: fresh generator samples, best check")
    architectures: list[str] = param(["convnet3"], help="classifiers to train (any registered classifier)")
    trials: int = param(5, ge=1, help="trials per architecture; trial t uses seed + t")
    epochs: int = param(1000, ge=1)
    batch_size: int = param(256, ge=1, help="strict protocol minibatch")
    dim_batch_size: int | None = param(None, ge=1, help="dim protocol batch; null: 32/64/128 for IPC 1/10/50, else 64")
    ipc: int | None = param(None, ge=1, help="dim: images per class per epoch (required); strict: checked if set")
    checks: int = param(5, ge=1, help="dim protocol: number of test checks (every epochs/checks epochs)")
    lr: float = param(0.01, gt=0)
    momentum: float = param(0.9, ge=0)
    weight_decay: float = param(5e-4, ge=0)
    augment: str | None = param(None, help="strict DSA strategy; null: by dataset (no flip for digits)")
    width: int | None = param(None, ge=1, help="classifier width; null: the architecture's default")
    amp: bool = param(True, help="bf16 autocast on CUDA (no effect on CPU)")
    seed: int = param(0, ge=0)
    device: str = param("auto", choices=DEVICES)
    checkpoint_every_epochs: int = param(50, ge=1)
    label: str | None = param(None, help="row label in tables (e.g. skd, random, gan-only); null: from the input")
    split: str = param("test", choices=SPLITS, help="the real split tested on: test (what tables report) or val "
                                                    "(to choose a setting without touching the test split)")

    def check(self, section: str) -> None:
        if not self.architectures:
            raise SkddError(f"{section}.architectures: give at least one architecture")
        for i, name in enumerate(self.architectures):
            check_classifier_param(f"{section}.architectures[{i}]", name)
        dupes = sorted({a for a in self.architectures if self.architectures.count(a) > 1})
        if dupes:
            raise SkddError(f"{section}.architectures: {dupes[0]!r} listed twice")
        if self.augment is not None:
            DiffAug.for_param(f"{section}.augment", self.augment)
        if self.protocol == "dim" and self.ipc is None:
            raise SkddError(f"{section}.ipc: protocol dim needs ipc (images per class seen per epoch)")


@dataclass
class _Training:
    """What the classifiers train on: a fixed set (strict) or a sampler (dim)."""

    ipc: int | None
    description: str
    default_label: str
    records: list[dict]
    train: ImageDataset | None = None
    sampler: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None
    train_images: int = 0
    generator_weights: str | None = None   # dim: "ema" (G's moving average) or "raw" (G itself)


# ------------------------------------------------------------------------------------------------- inputs
def _manifest_sha(path: Path) -> str:
    return lineage.sha256_file(path / storage.MANIFEST)


def _check_classes(classes: list[str], test: ImageDataset, what: str, dataset_name: str) -> None:
    if list(classes) == list(test.classes):
        return
    missing = [c for c in test.classes if c not in classes]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SkddError(f"{what} has no class {missing[0]!r}{more}: it has {len(classes)} of the "
                        f"{len(test.classes)} classes of {dataset_name}")
    raise SkddError(f"{what} classes {classes} do not match {dataset_name}'s {list(test.classes)}")


def _fixed_set(params: EvaluateParams, uri: str, real, test: ImageDataset) -> _Training:
    path = storage.input_dir(uri)
    manifest = lineage.read_manifest(path)
    if manifest["kind"] == "gan":
        raise SkddError(f"{uri}: protocol strict trains on a fixed set but this is a GAN artifact "
                        "(draw a set with `skdd sample`, or use protocol: dim)")
    counts = (manifest.get("dataset") or {}).get("counts") or {}
    if counts.get("train") == 0:
        raise SkddError(f"{uri}: the synthetic set is empty (0 images)")
    syn = load_dataset(uri, splits=("train",))
    train = syn.train
    if len(train) == 0:
        raise SkddError(f"{uri}: the synthetic set is empty (0 images)")
    if train.shape != test.shape:
        c, h, w = train.shape
        tc, th, tw = test.shape
        raise SkddError(f"{uri}: synthetic images are {c}x{h}x{w} but the {real.name} test images are {tc}x{th}x{tw}")
    _check_classes(list(train.classes), test, f"{uri}: the synthetic set", real.name)
    is_full = _manifest_sha(syn.path) == _manifest_sha(real.path)
    class_counts = train.class_counts()
    if is_full:
        ipc = None
        description = f"the full {real.name} training set ({len(train)} images)"
        default_label = "full dataset"
        if params.ipc is not None:
            raise SkddError(f"evaluate.ipc: set to {params.ipc}, but --synthetic is the dataset itself "
                            "(the full training set has no IPC); leave ipc null")
    else:
        if len(set(class_counts)) != 1:
            lo, hi = class_counts.index(min(class_counts)), class_counts.index(max(class_counts))
            raise SkddError(f"{uri}: class {train.classes[lo]!r} has {class_counts[lo]} images but class "
                            f"{train.classes[hi]!r} has {class_counts[hi]}; a synthetic set needs the same number "
                            "per class (IPC)")
        ipc = class_counts[0]
        if params.ipc is not None and params.ipc != ipc:
            raise SkddError(f"evaluate.ipc: set to {params.ipc}, but the synthetic set has {ipc} images per class")
        stage = syn.manifest.get("stage")
        info = syn.manifest.get("dataset") or {}
        description = f"a fixed set of {ipc} images per class ({len(train)} images, from `{stage}`)"
        default_label = (info.get("baseline") if stage == "select" else
                         "synthetic" if stage == "sample" else info.get("name"))
    return _Training(ipc=ipc, description=description, default_label=str(default_label or "synthetic"),
                     records=[lineage.input_record("synthetic", uri, syn.path)], train=train,
                     train_images=len(train))


def _generator(params: EvaluateParams, uri: str, name: str, real, test: ImageDataset,
               device: torch.device) -> _Training:
    path, manifest = open_input(uri, ("gan", "dataset"))
    if manifest["kind"] != "gan":
        raise SkddError(f"{uri}: protocol dim samples a generator afresh every iteration, but this is a dataset "
                        "artifact (pass a GAN artifact from pretrain/distill, or use protocol: strict)")
    spec, g, weights = load_sampling_generator(path, device)   # G's moving average when the artifact has one
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    if shape != test.shape:
        raise SkddError(f"{uri}: the generator makes {'x'.join(map(str, shape))} images but the {real.name} test "
                        f"images are {'x'.join(map(str, test.shape))}")
    _check_classes(list(spec.classes), test, f"{uri}: the generator", real.name)
    g.eval()   # BatchNorm with running statistics, as when sampling a fixed set (load_sampling_generator did)
    num_classes = spec.num_classes

    def sampler(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), device=device)   # DiM: new random labels every iteration
        return g(noise(n, spec.z_dim, device), y), y

    ipc = params.ipc
    return _Training(ipc=ipc, description=f"fresh samples of the generator every iteration ({ipc} images per class "
                                          "per epoch on average, random labels)",
                     default_label=generator_label(manifest), records=[lineage.input_record(name, uri, path)],
                     sampler=sampler, generator_weights=weights)


def generator_label(manifest: dict) -> str:
    """Default row label of a GAN artifact: the distill loss mode (`skd`, `skd-nostand`, `dim-mse`, or `gan-only`,
    the control trained on without matching), `pretrained GAN` before distillation."""
    if manifest.get("stage") == "distill":
        loss = (manifest.get("params") or {}).get("loss", "distill")
        return str(loss)
    if manifest.get("stage") == "pretrain":
        return "pretrained GAN"
    return str(manifest.get("stage") or "generator")


# ------------------------------------------------------------------------------------------------- trials
def dim_batch_size(params: EvaluateParams, ipc: int) -> int:
    if params.dim_batch_size is not None:
        return params.dim_batch_size
    return PAPER_DIM_BATCH.get(ipc, DEFAULT_DIM_BATCH)


class EpochSaver:
    """`on_epoch` callback of one trial: a checkpoint every `every` epochs, holding the running trial's state and
    every finished trial's result. Not after the last epoch: the trial's completion marker follows at once.

    Checkpointer steps are global and increasing: trial unit u, epoch e -> u*(epochs+1) + e; the marker that
    unit u finished is (u+1)*(epochs+1)."""

    def __init__(self, ckpts: ckpt_mod.Checkpointer, every: int, unit: int, epochs: int, done: list[dict],
                 wall_before: float = 0.0):
        self.ckpts, self.every, self.unit, self.epochs, self.done = ckpts, every, unit, epochs, done
        self.wall_before = wall_before
        self.t0 = time.perf_counter()

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def __call__(self, epoch: int, snap: dict) -> None:
        if epoch % self.every or epoch >= self.epochs:
            return
        kw = checkpoint_kwargs(snap)
        kw["step"] = self.unit * (self.epochs + 1) + epoch
        kw["meta"].update(done=self.done, current={"unit": self.unit, "epoch": epoch, "wall_seconds": self.wall()})
        self.ckpts.save(**kw)

    def finished(self, done: list[dict]) -> None:
        self.ckpts.save(step=(self.unit + 1) * (self.epochs + 1), modules={}, optimizers={},
                        meta={"done": done, "current": None})


def _percent(acc: float) -> float:
    return round(100.0 * acc, 6)


def _trial_record(result: dict, trial: int, wall: float) -> Trial | DimTrial:
    rec = {"trial": trial, "seed": result["seed"], "accuracy": _percent(result["accuracy"]),
           "train_loss": result["train_loss"], "wall_seconds": round(wall, 3)}
    if result["protocol"] == "dim":
        rec.update(checks=[[int(e), _percent(a)] for e, a in result["checks"]], best_epoch=result["best_epoch"],
                   final_accuracy=_percent(result["final_accuracy"]),
                   iterations_per_epoch=result["iterations_per_epoch"])
    return rec


def run_trials(params: EvaluateParams, training: _Training, test: ImageDataset, pixels: Pixels,
               device: torch.device, augment: str, ckpts: ckpt_mod.Checkpointer) -> list[dict]:
    """Every (architecture, trial) unit in order, resuming from `ckpts`; returns one record per unit."""
    units = [(arch, t) for arch in params.architectures for t in range(params.trials)]
    done: list[dict] = []
    state, wall_before = None, 0.0
    latest = ckpts.latest()
    if latest is not None:
        done = list(latest.meta.get("done", []))
        current = latest.meta.get("current")
        if current is not None:
            state = snapshot_from_checkpoint(latest)
            state["epoch"] = int(current["epoch"])
            wall_before = float(current.get("wall_seconds", 0.0))
        where = (f"{units[len(done)][0]} trial {units[len(done)][1] + 1}/{params.trials}, epoch "
                 f"{state['epoch'] if state else 0}" if len(done) < len(units) else "the end")
        print(f"evaluate: resuming at {where} ({len(done)} of {len(units)} trials done; {ckpts.folder})")
    elif ckpts.stale():
        print("evaluate: params or inputs changed since the last checkpoint; starting fresh")
        ckpts.clear()

    telemetry.set_planned(len(units))
    telemetry.report_step(len(done), {})
    for u in range(len(done), len(units)):
        arch, t = units[u]
        seed = params.seed + t
        if params.protocol == "strict":
            cfg = TrainConfig(arch, epochs=params.epochs, batch_size=params.batch_size, lr=params.lr,
                              momentum=params.momentum, weight_decay=params.weight_decay, augment=augment,
                              width=params.width, amp=params.amp)
        else:
            cfg = TrainConfig(arch, epochs=params.epochs, batch_size=dim_batch_size(params, training.ipc),
                              lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay,
                              augment=DIM_AUGMENT, width=params.width, amp=params.amp)
        saver = EpochSaver(ckpts, params.checkpoint_every_epochs, u, params.epochs, done, wall_before)
        desc = f"evaluate[{arch} {t + 1}/{params.trials}]"
        if params.protocol == "strict":
            result = train_strict(cfg, training.train, test, pixels, device, seed=seed, on_epoch=saver,
                                  state=state, desc=desc)
        else:
            result = train_dim(cfg, training.sampler, test, pixels, device, seed=seed, ipc=training.ipc,
                               num_classes=test.num_classes, checks=params.checks, on_epoch=saver, state=state,
                               desc=desc)
        done = done + [{"arch": arch, **_trial_record(result, t, saver.wall())}]
        saver.finished(done)
        telemetry.report_step(len(done), {"train_loss": float(result["train_loss"])})
        state, wall_before = None, 0.0
    return done


# ------------------------------------------------------------------------------------------------- stage
def build_metrics(params: EvaluateParams, training: _Training, real, test: ImageDataset, records: list[dict],
                  augment: str, device: torch.device) -> EvaluationMetrics:
    archs: dict[str, Any] = {}
    for arch in params.architectures:
        trials = [{k: v for k, v in r.items() if k != "arch"} for r in records if r["arch"] == arch]
        accs = [r["accuracy"] for r in trials]
        mean, std = mean_std(accs)
        archs[arch] = {"accuracies": accs, "mean": round(mean, 6), "std": round(std, 6),
                       "seeds": [r["seed"] for r in trials],
                       "wall_seconds": round(sum(r["wall_seconds"] for r in trials), 3), "trials": trials}
    label = params.label if params.label else training.default_label
    if params.protocol == "strict":
        per_epoch = f"{training.train_images} images per epoch, the same every epoch"
        batch = params.batch_size
    else:
        b = dim_batch_size(params, training.ipc)
        its = test.num_classes * training.ipc // b + 1
        per_epoch = f"{its} iterations x {b} fresh images per epoch"
        batch = b
    return {
        "schema": METRICS_SCHEMA, "label": label, "dataset": real.name, "num_classes": test.num_classes,
        "ipc": training.ipc, "protocol": params.protocol, "protocol_label": PROTOCOL_LABELS[params.protocol],
        "training_set": training.description, "train_images_per_epoch_note": per_epoch,
        "train_images": training.train_images, "split": params.split, "test_images": len(test),
        "epochs": params.epochs,
        "batch_size": batch, "lr": params.lr, "momentum": params.momentum, "weight_decay": params.weight_decay,
        "augment": augment, "width": params.width,
        "checks": params.checks if params.protocol == "dim" else None, "trials": params.trials,
        "seeds": [params.seed + t for t in range(params.trials)], "device": str(device), "unit": "percent",
        "std": STD_KIND, "wall_seconds": round(sum(a["wall_seconds"] for a in archs.values()), 3),
        "generator_weights": training.generator_weights, "architectures": archs,
    }


def run(params: EvaluateParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    if not inputs.get("dataset"):
        raise SkddError("evaluate: missing input --dataset")
    real = load_dataset(inputs["dataset"], splits=(params.split,))
    test = getattr(real, params.split)
    if test is None:
        raise SkddError(f"{real.path}: dataset artifact has no {params.split!r} split to evaluate on"
                        + (" (ingest with val_per_class > 0)" if params.split == "val" else ""))
    if params.protocol == "strict":
        if not inputs.get("synthetic"):
            raise SkddError("evaluate: missing input --synthetic (the fixed training set)")
        training = _fixed_set(params, inputs["synthetic"], real, test)
        augment = params.augment or dsa_strategy_for(real.name)
    else:
        name = "gan" if inputs.get("gan") else "synthetic"
        if not inputs.get(name):
            raise SkddError("evaluate: protocol dim needs a GAN artifact as --synthetic")
        training = _generator(params, inputs[name], name, real, test, device)
        augment = DIM_AUGMENT
    records = [lineage.input_record("dataset", inputs["dataset"], real.path), *training.records]
    if not (real.info.get("mean") and real.info.get("std")):
        raise SkddError(f"{real.path}: dataset manifest has no mean/std to normalise classifier inputs")
    pixels = Pixels(real.info["mean"], real.info["std"], device)
    key = lineage.run_key(params_hash(params), records)

    with storage.staged_output(output) as stage:
        ckpts = storage.checkpointer(output, key)
        trial_records = run_trials(params, training, test, pixels, device, augment, ckpts)
        metrics = build_metrics(params, training, real, test, trial_records, augment, device)
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (stage / "report.md").write_text(evaluation_markdown(metrics))
        plot_architectures(metrics, stage / "accuracy.png")
        summary = {a: {"mean": r["mean"], "std": r["std"]} for a, r in metrics["architectures"].items()}
        for arch, acc in summary.items():
            telemetry.report_accuracy(dataset=metrics["dataset"], architecture=arch, ipc=metrics["ipc"],
                                      protocol=metrics["protocol"], label=metrics["label"], **acc)
        info = {k: metrics[k] for k in ("label", "dataset", "ipc", "protocol", "protocol_label", "trials", "epochs",
                                        "generator_weights", "split")}
        return lineage.write_manifest(
            stage, kind="evaluation", stage="evaluate", params=as_dict(params), params_hash=params_hash(params),
            inputs=records, metrics={"accuracy": summary, "protocol": params.protocol, "ipc": training.ipc,
                                     "split": params.split},
            extra={"evaluation": info}, device=str(device))
