"""`skdd pool`: each pool architecture trained once on real data, with snapshots along the way (trajectories).

Why: the online pool of DiM and the paper re-trains a fresh classifier inside distillation, `pool_steps` SGD
steps before every generator step, and that is most of a distill step's cost. What matching needs from the pool
is classifiers at every stage of training on real data; recording them once, as an artifact, gives the same kind
of model for two forward passes per generator step (`distill.pool_source: trajectories`), and lets every distill
run of a dataset share them.

Training is the online pool's (skdd.pool.ModelPool.train_step: SGD with momentum and weight decay on `augment`ed
real batches), one architecture after another, each from its own seeded initialisation. The snapshot at step 0
(the random initialisation the paper's figure shows) and every `snapshot_every` steps after it are kept. Snapshot
files are written into the staging folder as training goes and the loop checkpoints, so a killed run resumes and
rewrites the same bytes; the artifact holds `snapshots/<arch>-<step>.safetensors` and `pool.json`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from skdd import checkpoint as ckpt_mod
from skdd import lineage, storage
from skdd.augment import DiffAug
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import EpochBatcher, Pixels
from skdd.device import DEVICES, amp_on, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.models import check_classifier_param, list_models
from skdd.pool import PAPER_POOL, POOL_FILE, SNAPSHOT_DIR, ModelPool, TrajectorySpec, snapshot_name
from skdd.stages.common import load_dataset
from skdd.stages.curves import write_curves
from skdd.stages.loop import run_steps

@dataclass
class PoolParams:
    archs: list[str] = param(PAPER_POOL, help="the architectures to record (distill's `pool`)")
    width: int | None = param(None, ge=1, help="null: each model's default width (distill's `pool_width`)")
    steps: int = param(1600, ge=1, help="SGD steps per architecture")
    snapshot_every: int = param(50, ge=1, help="keep a snapshot every N steps (and the initialisation)")
    batch_size: int = param(64, ge=2)
    lr: float = param(0.01, gt=0)
    momentum: float = param(0.9, ge=0, le=1)
    weight_decay: float = param(5e-4, ge=0)
    augment: str = param("color_crop", help="DSA on the real batches (distill's `pool_augment`)")
    seed: int = param(0, ge=0)
    amp: bool = param(True, help="bf16 autocast on CUDA (ignored on CPU)")
    device: str = param("auto", choices=DEVICES)
    checkpoint_every: int = param(200, ge=1)
    log_every: int = param(100, ge=1)

    def check(self, section: str) -> None:
        if not self.archs:
            raise SkddError(f"{section}.archs: must name at least one model (known: "
                            f"{', '.join(list_models('classifier'))})")
        for name in self.archs:
            check_classifier_param(f"{section}.archs", name)
        if len(set(self.archs)) != len(self.archs):
            raise SkddError(f"{section}.archs: each architecture once, got {self.archs}")
        DiffAug.for_param(f"{section}.augment", self.augment, "dim")


class TrajectoryRecorder:
    """The `run_steps` trainable: step k trains architecture (k-1) // steps, writing snapshots as it goes."""

    def __init__(self, params: PoolParams, train, spec: TrajectorySpec, device: torch.device, folder: Path):
        self.params, self.train, self.spec, self.device, self.folder = params, train, spec, device, folder
        self.arch_index = -1
        self.trained = 0   # SGD steps taken by the current architecture
        self.pool: ModelPool | None = None
        self.batcher = EpochBatcher(len(train), params.batch_size, device)
        self.pixels = Pixels(spec.mean, spec.std, device)
        self.aug = DiffAug(params.augment, scheme="dim")

    def _start(self, index: int) -> None:
        """A fresh model for architecture `index`, its weights drawn from (seed, index) alone."""
        p = self.params
        self.arch_index, self.trained = index, 0
        self.pool = ModelPool([p.archs[index]], "step", in_channels=self.spec.in_channels,
                              num_classes=self.spec.num_classes, image_size=self.spec.image_size, width=p.width,
                              lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, device=self.device,
                              amp=amp_on(self.device, p.amp))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed * 1000 + index)
            self.pool.draw(new_epoch=True)

    def _snapshot(self) -> None:
        name = self.params.archs[self.arch_index]
        state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
                 for k, v in self.pool.model.state_dict().items()}
        save_file(state, str(self.folder / snapshot_name(name, self.trained)))

    def step(self) -> dict:
        if self.pool is None or self.trained == self.params.steps:
            self._start(self.arch_index + 1)
            self._snapshot()
        idx = self.batcher.next()
        loss = self.pool.train_step(self.pixels.classifier(self.train.images[idx]), self.train.labels[idx], self.aug)
        self.trained += 1
        if self.trained % self.params.snapshot_every == 0 or self.trained == self.params.steps:
            self._snapshot()
        return {"loss": loss, "arch": self.params.archs[self.arch_index]}

    def modules(self) -> dict:
        return {} if self.pool is None else self.pool.modules()

    def optimizers(self) -> dict:
        return {} if self.pool is None else self.pool.optimizers()

    def state_tensors(self) -> dict:
        return self.batcher.state_tensors("batcher")

    def meta(self) -> dict:
        return {"arch_index": self.arch_index, "trained": self.trained}

    def sampler(self):
        return None

    def resume(self, ckpt) -> None:
        self._start(ckpt.meta["arch_index"])
        self.trained = ckpt.meta["trained"]
        ckpt_mod.restore(ckpt, self.modules(), self.optimizers())
        self.batcher.load_state_tensors(ckpt.tensors, "batcher")


def _snapshots_present(folder: Path, params: PoolParams, snapshot_steps: list[int], done: int) -> bool:
    """Whether every snapshot a run that reached global step `done` has written is in `folder`."""
    for a, name in enumerate(params.archs):
        for t in snapshot_steps:
            written_at = a * params.steps + max(t, 1)   # the initialisation is written with the arch's first step
            if written_at <= done and not (folder / snapshot_name(name, t)).is_file():
                return False
    return True


def _remove_strays(folder: Path, expected: set[str]) -> None:
    """Delete what a killed run left half-written (safetensors writes through a `.tmpXXXX` file and renames it):
    left in place it would be published, and hashed into the manifest, as part of the artifact."""
    for entry in folder.iterdir():
        if entry.name in expected:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run(params: PoolParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    data = load_dataset(inputs["dataset"], splits=("train",))
    train = data.train.to(device)
    c, h, w = train.shape
    if h != w:
        raise SkddError(f"{data.path}: square images required, got {h}x{w}")
    snapshot_steps = sorted({0, params.steps, *range(params.snapshot_every, params.steps + 1, params.snapshot_every)})
    spec = TrajectorySpec(archs=list(params.archs), width=params.width, steps=snapshot_steps, in_channels=c,
                          image_size=h, num_classes=train.num_classes, classes=list(train.classes),
                          dataset=data.name, mean=list(data.info["mean"]), std=list(data.info["std"]))
    phash = params_hash(params)
    record = lineage.input_record("dataset", inputs["dataset"], data.path)
    ckpts = storage.checkpointer(output, lineage.run_key(phash, [record]))
    with storage.staged_output(output) as stage:
        folder = stage / SNAPSHOT_DIR
        latest = ckpts.latest()
        if latest is not None and not _snapshots_present(folder, params, snapshot_steps, latest.step):
            # e.g. a pod resumed from checkpoints mirrored to S3: the snapshots were on the lost pod's disk
            print(f"pool: the snapshots before step {latest.step} are not in {folder}; starting fresh", flush=True)
            ckpts.clear()
            latest = None
        if latest is None:   # no run to resume: snapshots left by another run are not ours
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(exist_ok=True)
        _remove_strays(folder, {snapshot_name(a, t) for a in params.archs for t in snapshot_steps})
        recorder = TrajectoryRecorder(params, train, spec, device, folder)
        curves, elapsed = run_steps(recorder, name="pool", ckpts=ckpts, steps=params.steps * len(params.archs),
                                    log_every=params.log_every, checkpoint_every=params.checkpoint_every,
                                    images_per_step=params.batch_size)
        (stage / POOL_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
        TrajectorySpec.read(stage)   # every snapshot it names is there, or nothing is published
        write_curves(stage / "curves.csv", curves)
        final = {a: next((c["loss"] for c in reversed(curves) if c["arch"] == a), None) for a in params.archs}
        metrics = {"snapshots": len(snapshot_steps) * len(params.archs), "snapshots_per_arch": len(snapshot_steps),
                   "final_train_loss": final, "wall_seconds_this_run": round(elapsed, 2)}
        return lineage.write_manifest(
            stage, kind="pool", stage="pool", params=as_dict(params), params_hash=phash, inputs=[record],
            metrics=metrics, extra={"pool": asdict(spec)}, device=str(device))
