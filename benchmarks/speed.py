"""Speed of skdd's three hot loops on real data, against a DiM-style reference loop, and GPU bf16 utilisation.

    python benchmarks/speed.py --device cuda --data ../shared/datasets/mnist --json speed.json
    python benchmarks/speed.py --device cpu --g-width 32 --d-width 32 --pool-width 16 --steps 3 --warmup 1 \
        --eval-epochs 20 --eval-width 32
    python benchmarks/speed.py --quick --device cpu --json /tmp/speed.json     # tiny, < 60 s on one thread

For every bf16 setting (CUDA: on and off; CPU: "n/a", skdd's autocast is CUDA-only) it measures, each on a fresh
set of models, with `--warmup` untimed steps then `--steps` timed ones (CUDA synchronised before every timer read):

* pretrain: `Pretrainer.step` (one G step + one WGAN-GP critic step), images/s = real images per step / s;
* distill: `Distiller.step` with pool training (`--pool-steps` SGD steps of the pool model per generator step,
  16 as in DiM and the paper), one row per pool architecture (the pool is drawn uniformly, so the "pool mean" is
  the expected cost); images/s counts every image through a model (`_common.distill_images_per_step`);
  with `pool_source` trajectories (`--sources`), the same step drawing a recorded snapshot instead (a snapshot
  file loaded per step, then the two matching passes; no pool SGD step), from a pool of that one architecture
  written to a temp folder (the weights' values do not change the cost);
* reference: the same distill step written the way DiM's `pool_match.py` does it (see `DimReference`), on the
  same device with the same models, precision and losses; `ratio = reference ms/step / skdd ms/step` (target
  >= 3). One extra step of each side runs under a FLOP counter, and `same_model_flops` says whether both did the
  same conv/matmul work, i.e. whether the ratio measures the pipeline alone;
* evaluate: one strict-protocol trial (`train_strict`: ConvNet-3 on a fixed IPC x classes set of real images,
  DSA, `--eval-epochs` epochs, final test pass); images/s = training images seen / wall s;
* peak memory of each phase: CUDA `max_memory_allocated` (every live tensor, reset before the phase); CPU the
  process peak RSS (`ru_maxrss`, a lifetime high-water mark) after the phase, and its growth during it.

On CUDA it also measures the G and D forward+backward at batch `--peak-batch` (128) under bf16 autocast and
channels_last: FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`, divided by the measured time and by
the GPU's dense bf16 peak (from a table of device names, and as measured by an 8192^3 bf16 matmul), both over the
whole pass and over the convolution kernels alone (their device time from `torch.profiler`). `--compile` adds the
same with `torch.compile`d G and D.

Prints a table and, with `--json`, writes every figure (units in the key names), the device, torch version,
commit and command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from skdd.augment import DiffAug, dsa_strategy_for
from skdd.config import from_dict
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.data.sources import read_source
from skdd.device import autocast, prepare_module, resolve_device, seed_everything
from skdd.errors import SkddError, one_line
from skdd.evaluation.protocols import TrainConfig, train_strict
from skdd.gan_artifact import GanSpec
from skdd.losses import discriminator_loss, generator_adv_loss, match_loss
from skdd.models import create_model
from skdd.stages.common import load_dataset
from skdd.pool import PAPER_POOL, POOL_FILE, SNAPSHOT_DIR, TrajectorySpec, build_member, snapshot_name
from skdd.stages.distill import DistillParams, Distiller, default_lambda
from skdd.stages.pretrain import PretrainParams, Pretrainer

from _common import distill_images_per_step, peak_memory_mb, reset_peak_memory, sync, timed

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = {"mnist": REPO.parent / "shared" / "datasets" / "mnist",
                "cifar10": REPO.parent / "shared" / "datasets" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"}
TARGET_RATIO = 3.0
TARGET_PEAK_FRACTION = 0.30
# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's data sheets; first match wins.
BF16_PEAK_TFLOPS = [("H200", 989.4), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("A100", 312.0)]
MATMUL_N = 8192

# Paper-scale defaults, and the --quick ones (tiny widths and steps; < 60 s on one CPU thread).
DEFAULTS = dict(steps=15, warmup=5, g_width=196, d_width=196, pool_width=None, pool_steps=16, batch_size=64,
                pretrain_batch_size=128, eval_epochs=1000, eval_width=128, eval_ipc=10, eval_test_size=10000,
                ref_workers=4)
QUICK = dict(steps=2, warmup=1, g_width=8, d_width=8, pool_width=4, pool_steps=4, batch_size=16,
             pretrain_batch_size=16, eval_epochs=3, eval_width=8, eval_ipc=2, eval_test_size=200, ref_workers=0)


# ---------------------------------------------------------------------------------------------- data
def load_data(path: Path, dataset: str) -> tuple[str, ImageDataset, ImageDataset | None]:
    """A skdd dataset artifact (folder with manifest.json), or a raw source ingest reads: IDX folder, .npz,
    CIFAR python folder, image folder or tarball."""
    if not path.exists():
        raise SkddError(f"--data {path}: not found (pass --data DIR: an IDX/npz/CIFAR/image-folder source "
                        f"or an ingested dataset artifact)")
    if (path / "manifest.json").is_file():
        art = load_dataset(path)
        return art.name, art.train, art.test
    if path.suffix == ".npz":
        kind = "npz"
    elif path.is_dir() and any(p.name.startswith("train-images") for p in
                               [*path.iterdir(), *(path / "raw").glob("*"), *(path / "MNIST" / "raw").glob("*")]):
        kind = "idx"
    elif path.is_dir() and any((d / "data_batch_1").is_file() for d in (path, path / "cifar-10-batches-py")):
        kind = "cifar-python"
    else:
        kind = "imagefolder"
    splits, _ = read_source(kind, str(path), name=dataset)
    return dataset, splits.train, splits.test


def fixed_set(train: ImageDataset, ipc: int) -> ImageDataset:
    """The first `ipc` images of every class: the fixed training set of one evaluation trial."""
    idx = torch.cat([torch.nonzero(train.labels == c).flatten()[:ipc] for c in range(train.num_classes)])
    return ImageDataset(train.images[idx], train.labels[idx], list(train.classes))


class _GlobalOnly:
    """Stand-in for FlopCounterMode's per-module tracker, whose hooks make `torch.autograd.grad` on a leaf (the
    gradient penalty) fail; only the global counts are used here."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def count_flops(fn) -> tuple[int, int]:
    """(all counted FLOPs, convolution FLOPs) of one call, forward and backward: the conv/matmul work that
    `torch.utils.flop_counter` has formulas for (normalisation, activations and optimizer updates are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    conv = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(op))
    return int(counter.get_total_flops()), int(conv)


# ---------------------------------------------------------------------------------------------- reference
class DimReference:
    """One distill step the way DiM's `pool_match.py::train` writes it, on the same models and losses as skdd.

    The data pipeline is DiM's: a `DataLoader(TensorDataset(images in [0, 1]), shuffle=True, drop_last=True,
    num_workers=4)` whose iterator lives for an epoch for the generator's batches, and a NEW iterator of the same
    loader for the pool model's 16 steps at every generator step (`train_match_model`); pixels are normalised and
    pool batches augmented per batch on the host (CPU), then moved to the device; noise is drawn on the host. The
    model compute is skdd's, so the ratio measures the pipeline: the same G, D and pool model (built the same way,
    channels_last on CUDA), the same autocast, `skdd.losses` (WGAN-GP + AC cross-entropy, SKD matching with a
    shared siamese DiffAug of real and synthetic batches on the device, as DiM), and, like skdd, D's and the pool
    model's parameters frozen while they only pass gradients to G. The pool model is re-initialised at every
    epoch start, as DiM draws one per epoch.
    """

    def __init__(self, train: ImageDataset, spec: GanSpec, g, d, opt_g, opt_d, params: DistillParams, lam: float,
                 device: torch.device, workers: int):
        self.spec, self.g, self.d, self.opt_g, self.opt_d = spec, g, d, opt_g, opt_d
        self.p, self.lam, self.device = params, lam, device
        self.arch = params.pool[0]
        images01 = train.images.cpu().float().div_(255.0)          # what ToTensor() hands DiM's loader
        self.loader = DataLoader(TensorDataset(images01, train.labels.cpu()), batch_size=params.batch_size,
                                 shuffle=True, drop_last=True, num_workers=workers)
        self.mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std).view(1, -1, 1, 1)
        self.pixels = Pixels(spec.mean, spec.std, device)        # only for G's output -> classifier input
        self.match_aug = DiffAug(params.match_augment, scheme="dim")
        self.pool_aug = DiffAug(params.pool_augment, scheme="dim")
        self.epoch_iter = None
        self.model = self.opt_model = None

    def _new_epoch(self) -> None:
        self.epoch_iter = iter(self.loader)
        kwargs = {} if self.p.pool_width is None else {"width": self.p.pool_width}
        self.model = prepare_module(create_model(self.arch, in_channels=self.spec.in_channels,
                                                 num_classes=self.spec.num_classes,
                                                 image_size=self.spec.image_size, **kwargs), self.device).train()
        self.opt_model = torch.optim.SGD(self.model.parameters(), lr=self.p.pool_lr, momentum=self.p.pool_momentum,
                                         weight_decay=self.p.pool_weight_decay)

    def _train_match_model(self) -> None:
        model, opt, device = self.model, self.opt_model, self.device
        model.requires_grad_(True)
        for batch_idx, (img, lab) in enumerate(self.loader):     # a new iterator (and workers) every call
            if batch_idx == self.p.pool_steps:
                break
            x = self.pool_aug((img - self.mean) / self.std)       # normalise + augment on the host
            x, lab = x.to(device), lab.to(device)
            with autocast(device, self.p.amp):
                out = model(x)
            loss = F.cross_entropy(out.float(), lab)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def step(self) -> tuple[float, float]:
        p, spec, device, g, d = self.p, self.spec, self.device, self.g, self.d
        batch = next(self.epoch_iter, None) if self.epoch_iter is not None else None
        if batch is None:
            self._new_epoch()
            batch = next(self.epoch_iter)
        img, lab = batch
        x_gan = (img * 2.0 - 1.0).to(device)                       # Normalize(0.5, 0.5) on the host
        x_cls = ((img - self.mean) / self.std).to(device)
        lab = lab.to(device)
        b = lab.shape[0]

        # generator step: G forward and D's verdict, then the pool model's training, then matching (DiM's order)
        d.requires_grad_(False)
        z = torch.randn(b, spec.z_dim).to(device)
        with autocast(device, p.amp):
            fake = g(z, lab)
            src, cls = d(fake)
            loss_adv = generator_adv_loss(src, cls, lab)
        self._train_match_model()
        self.model.requires_grad_(False)
        real_aug, syn_aug = self.match_aug.pair(x_cls, self.pixels.classifier_from_gan(fake.float()),
                                                shared=p.match_shared)
        with autocast(device, p.amp):
            with torch.no_grad():
                logits_real = self.model(real_aug)
            logits_syn = self.model(syn_aug)
        loss_g = loss_adv + self.lam * match_loss(p.loss, logits_real, logits_syn, p.tau)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        d.requires_grad_(True)

        # critic step on fresh random labels, with the gradient penalty
        y_fake = torch.randint(spec.num_classes, (b,)).to(device)
        z = torch.randn(b, spec.z_dim).to(device)
        with torch.no_grad(), autocast(device, p.amp):
            fake_d = g(z, y_fake)
        with autocast(device, p.amp):
            loss_d = discriminator_loss(d, x_gan, lab, fake_d, y_fake, p.gp_weight)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return loss_g.item(), loss_d.item()                        # DiM's AverageMeter updates


# ---------------------------------------------------------------------------------------------- phases
class Bench:
    def __init__(self, args, device: torch.device, name: str, train: ImageDataset, test: ImageDataset | None):
        self.args, self.device, self.name = args, device, name
        self.train_cpu, self.test_cpu = train, test
        self.train = train.to(device)
        c, h, w = train.shape
        if h != w:
            raise SkddError(f"square images required, got {h}x{w}")
        mean, std = train.mean_std()
        self.spec = GanSpec(in_channels=c, image_size=h, num_classes=train.num_classes, g_width=args.g_width,
                            d_width=args.d_width, z_dim=100, conditioning="overwrite", classes=list(train.classes),
                            dataset=name, mean=mean, std=std)
        self.lam = default_lambda("skd", name)

    # memory: one window per phase
    def _start(self) -> float:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        reset_peak_memory(self.device)
        return peak_memory_mb(self.device)

    def _memory(self, before: float) -> dict:
        peak = peak_memory_mb(self.device)
        if self.device.type == "cuda":
            return {"peak_mem_mib": round(peak, 1), "peak_mem_kind": "cuda max_memory_allocated (all live tensors)"}
        return {"peak_mem_mib": round(peak, 1), "peak_rss_growth_mib": round(peak - before, 1),
                "peak_mem_kind": "process peak RSS (ru_maxrss, lifetime high-water mark)"}

    def _row(self, phase: str, amp: bool | None, seconds: float, images: int, batch: int, memory: dict,
             **extra) -> dict:
        a = self.args
        return {"phase": phase, "bf16": "n/a" if amp is None else ("on" if amp else "off"), **extra,
                "batch_size": batch, "warmup_steps": a.warmup, "timed_steps": a.steps,
                "ms_per_step": round(seconds * 1e3, 3), "images_per_step": images,
                "images_per_s": round(images / seconds, 1), **memory}

    def _gan(self):
        torch.manual_seed(self.args.seed)
        g, d = self.spec.build()
        g, d = prepare_module(g, self.device).train(), prepare_module(d, self.device).train()
        opt_g = torch.optim.Adam(g.parameters(), lr=5e-6, betas=(0.0, 0.9))
        opt_d = torch.optim.Adam(d.parameters(), lr=5e-6, betas=(0.0, 0.9))
        return g, d, opt_g, opt_d

    def _distill_params(self, arch: str, amp: bool, source: str = "online") -> DistillParams:
        a = self.args
        return from_dict(DistillParams, {"device": self.device.type, "batch_size": a.batch_size, "pool": [arch],
                                         "pool_width": a.pool_width, "pool_steps": a.pool_steps, "amp": amp,
                                         "pool_source": source, "gp_every": a.gp_every, "cpu_amp": a.cpu_bf16},
                         "distill")

    def _skdd_amp(self, amp: bool | None) -> bool | None:
        """skdd's autocast for a setting: CUDA's as given; on the CPU on with --cpu-bf16 (`cpu_amp`), else n/a."""
        return True if amp is None and self.args.cpu_bf16 else amp

    def _trajectories(self, arch: str, folder: Path) -> tuple[Path, TrajectorySpec]:
        """A one-architecture pool artifact's files (pool.json and 8 snapshots of one random init)."""
        s = self.spec
        spec = TrajectorySpec(archs=[arch], width=self.args.pool_width, steps=list(range(8)),
                              in_channels=s.in_channels, image_size=s.image_size, num_classes=s.num_classes,
                              classes=list(s.classes), dataset=s.dataset, mean=list(s.mean), std=list(s.std))
        model = build_member(arch, dict(in_channels=s.in_channels, num_classes=s.num_classes,
                                        image_size=s.image_size), spec.width, torch.device("cpu"))
        (folder / SNAPSHOT_DIR).mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        for step in spec.steps:
            save_file(state, str(folder / SNAPSHOT_DIR / snapshot_name(arch, step)))
        (folder / POOL_FILE).write_text(json.dumps(dataclasses.asdict(spec)))
        return folder, TrajectorySpec.read(folder)

    def pretrain(self, amp: bool | None) -> dict:
        a, amp = self.args, self._skdd_amp(amp)
        params = from_dict(PretrainParams, {"device": self.device.type, "batch_size": a.pretrain_batch_size,
                                            "g_width": a.g_width, "d_width": a.d_width, "amp": bool(amp),
                                            "cpu_amp": a.cpu_bf16}, "pretrain")
        before = self._start()
        torch.manual_seed(a.seed)
        trainer = Pretrainer(params, self.spec, self.train, self.device)
        t = timed(trainer.step, a.steps, self.device, a.warmup)
        return self._row("pretrain", amp, t, a.pretrain_batch_size, a.pretrain_batch_size, self._memory(before),
                         pool_arch=None)

    def distill(self, arch: str, amp: bool | None, source: str = "online") -> dict:
        a, amp = self.args, self._skdd_amp(amp)
        with tempfile.TemporaryDirectory() as tmp:
            trajectories = self._trajectories(arch, Path(tmp)) if source == "trajectories" else None
            before = self._start()
            g, d, opt_g, opt_d = self._gan()
            torch.manual_seed(a.seed)
            distiller = Distiller(self._distill_params(arch, bool(amp), source), self.spec, g, d, opt_g, opt_d,
                                  self.train, self.device, self.lam, trajectories=trajectories)
            t = timed(distiller.step, a.steps, self.device, a.warmup)
            memory = self._memory(before)
            flops, _ = count_flops(distiller.step)   # one more step: conv/matmul work, to compare with the reference
        pool_steps = a.pool_steps if source == "online" else 0
        images = distill_images_per_step(a.batch_size, pool_steps)
        return self._row("distill", amp, t, images, a.batch_size, memory, pool_arch=arch, pool_steps=pool_steps,
                         pool_source=source, gp_every=a.gp_every, model_gflops_per_step=round(flops / 1e9, 4))

    def reference(self, arch: str, amp: bool | None) -> dict:
        a = self.args
        before = self._start()
        g, d, opt_g, opt_d = self._gan()
        torch.manual_seed(a.seed)
        ref = DimReference(self.train_cpu, self.spec, g, d, opt_g, opt_d, self._distill_params(arch, bool(amp)),
                           self.lam, self.device, a.ref_workers)
        t = timed(ref.step, a.steps, self.device, a.warmup)
        memory = self._memory(before)
        flops, _ = count_flops(ref.step)
        images = distill_images_per_step(a.batch_size, a.pool_steps)
        return self._row("reference", amp, t, images, a.batch_size, memory, pool_arch=arch, pool_steps=a.pool_steps,
                         model_gflops_per_step=round(flops / 1e9, 4), dataloader_workers=a.ref_workers)

    def evaluate(self, amp: bool | None) -> dict:
        a = self.args
        fixed = fixed_set(self.train_cpu, a.eval_ipc)
        test = self.test_cpu if self.test_cpu is not None else self.train_cpu
        test = ImageDataset(test.images[:a.eval_test_size], test.labels[:a.eval_test_size], list(test.classes))
        pixels = Pixels(self.spec.mean, self.spec.std, self.device)
        cfg = TrainConfig(a.eval_arch, epochs=a.eval_epochs, batch_size=256, augment=dsa_strategy_for(self.name),
                          width=a.eval_width, amp=bool(amp))
        before = self._start()
        if a.warmup:
            warm = TrainConfig(a.eval_arch, epochs=2, batch_size=256, augment=cfg.augment, width=a.eval_width,
                               amp=bool(amp))
            train_strict(warm, fixed, test, pixels, self.device, seed=a.seed)
        sync(self.device)
        t0 = time.perf_counter()
        result = train_strict(cfg, fixed, test, pixels, self.device, seed=a.seed)
        sync(self.device)
        wall = time.perf_counter() - t0
        images = a.eval_epochs * len(fixed)
        steps_per_epoch = -(-len(fixed) // 256)
        return {"phase": "evaluate", "bf16": "n/a" if amp is None else ("on" if amp else "off"),
                "arch": a.eval_arch, "width": a.eval_width, "train_images": len(fixed), "test_images": len(test),
                "epochs": a.eval_epochs, "batch_size": 256, "steps_per_epoch": steps_per_epoch,
                "wall_s": round(wall, 3), "ms_per_epoch": round(wall / a.eval_epochs * 1e3, 3),
                "ms_per_step": round(wall / (a.eval_epochs * steps_per_epoch) * 1e3, 3),
                "images_per_s": round(images / wall, 1), "test_accuracy": result["accuracy"],
                **self._memory(before)}


# ---------------------------------------------------------------------------------------------- GPU peak
def table_peak_tflops(name: str) -> float | None:
    upper = name.upper()
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in upper:
            return tflops
    return None


def cuda_seconds(fn, iters: int, warmup: int) -> float:
    """Seconds per call of fn measured with CUDA events (after warm-up)."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def matmul_peak_tflops(device: torch.device) -> float:
    a = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=torch.bfloat16)
    b = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=torch.bfloat16)
    out = torch.empty_like(a)
    t = cuda_seconds(lambda: torch.mm(a, b, out=out), iters=30, warmup=5)
    return 2 * MATMUL_N**3 / t / 1e12


def kernel_times_ms(fn, iters: int) -> tuple[float, float]:
    """(convolution kernels, all kernels) device ms per call, from the profiler's per-op self device time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    conv_us = all_us = 0.0
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        if e.device_type == torch.autograd.DeviceType.CPU:   # op rows; kernel rows would count the time twice
            all_us += us
            if "conv" in e.key.lower():
                conv_us += us
    return conv_us / 1e3 / iters, all_us / 1e3 / iters


def conv_peak(args, spec: GanSpec, device: torch.device) -> dict:
    """bf16 utilisation of G and D forward+backward at batch `--peak-batch`, eager (and compiled if asked)."""
    name = torch.cuda.get_device_name(device)
    table = table_peak_tflops(name)
    measured = matmul_peak_tflops(device)
    torch.manual_seed(args.seed)
    g, d = spec.build()
    g, d = prepare_module(g, device).train(), prepare_module(d, device).train()
    b = args.peak_batch
    z = torch.randn(b, spec.z_dim, device=device)
    y = torch.randint(spec.num_classes, (b,), device=device)
    x = torch.randn(b, spec.in_channels, spec.image_size, spec.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)

    def passes(gm, dm):
        def g_pass():
            gm.zero_grad(set_to_none=True)
            with autocast(device, True):
                out = gm(z, y)
            out.float().sum().backward()

        def d_pass():
            dm.zero_grad(set_to_none=True)
            with autocast(device, True):
                src, cls = dm(x)
            (src.float().sum() + cls.float().sum()).backward()
        return {"generator": g_pass, "discriminator": d_pass}

    def fractions(tflops: float | None) -> dict:
        if tflops is None:
            return {}
        return {"fraction_of_table_peak": None if table is None else round(tflops / table, 4),
                "fraction_of_measured_peak": round(tflops / measured, 4)}

    out = {"device_name": name, "batch_size": b, "g_width": spec.g_width, "d_width": spec.d_width,
           "image": [spec.in_channels, spec.image_size, spec.image_size], "autocast": "bf16", "channels_last": True,
           "table_peak_tflops": table, "measured_matmul_peak_tflops": round(measured, 1),
           "matmul_shape": [MATMUL_N, MATMUL_N, MATMUL_N], "target_fraction": TARGET_PEAK_FRACTION, "eager": {}}
    total = {"flops": 0, "conv_flops": 0, "s": 0.0, "conv_s": 0.0}
    for net, fn in passes(g, d).items():
        s = cuda_seconds(fn, args.peak_iters, warmup=10)
        flops, conv = count_flops(fn)
        row = {"ms_per_pass": round(s * 1e3, 4), "gflops_per_pass": round(flops / 1e9, 3),
               "conv_gflops_per_pass": round(conv / 1e9, 3), "tflops_per_s": round(flops / s / 1e12, 2),
               **fractions(flops / s / 1e12)}
        try:
            conv_ms, kernels_ms = kernel_times_ms(fn, iters=10)
            conv_tflops = conv / (conv_ms / 1e3) / 1e12 if conv_ms > 0 else None
            row.update({"conv_kernel_ms_per_pass": round(conv_ms, 4), "all_kernels_ms_per_pass": round(kernels_ms, 4),
                        "conv_kernel_tflops_per_s": None if conv_tflops is None else round(conv_tflops, 2),
                        **{f"conv_kernel_{k}": v for k, v in fractions(conv_tflops).items()}})
            total["conv_s"] += conv_ms / 1e3
        except Exception as exc:  # noqa: BLE001 - the profiler is optional here
            row["conv_kernel_error"] = one_line(exc)
        out["eager"][net] = row
        total["flops"] += flops
        total["conv_flops"] += conv
        total["s"] += s
    both = total["flops"] / total["s"] / 1e12
    out["eager"]["g_plus_d"] = {"ms_per_pass": round(total["s"] * 1e3, 4), "tflops_per_s": round(both, 2),
                                **fractions(both)}
    if total["conv_s"] > 0:
        conv_both = total["conv_flops"] / total["conv_s"] / 1e12
        out["eager"]["g_plus_d"].update({"conv_kernel_tflops_per_s": round(conv_both, 2),
                                         **{f"conv_kernel_{k}": v for k, v in fractions(conv_both).items()}})
    reached = out["eager"]["g_plus_d"].get("fraction_of_table_peak")
    if reached is None:
        reached = out["eager"]["g_plus_d"]["fraction_of_measured_peak"]
    out["reached_fraction"] = reached   # whole G+D passes, of the table peak (measured peak if the GPU is unknown)
    out["target_met"] = reached >= TARGET_PEAK_FRACTION
    if args.compile:
        try:
            compiled = passes(torch.compile(g), torch.compile(d))
            out["compiled"] = {}
            secs = 0.0
            for net, fn in compiled.items():
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - t0
                s = cuda_seconds(fn, args.peak_iters, warmup=5)
                flops = out["eager"][net]["gflops_per_pass"] * 1e9
                secs += s
                out["compiled"][net] = {"ms_per_pass": round(s * 1e3, 4), "first_call_s": round(compile_s, 1),
                                        "tflops_per_s": round(flops / s / 1e12, 2), **fractions(flops / s / 1e12)}
            both_c = total["flops"] / secs / 1e12
            out["compiled"]["g_plus_d"] = {"ms_per_pass": round(secs * 1e3, 4), "tflops_per_s": round(both_c, 2),
                                           "speedup_vs_eager": round(total["s"] / secs, 3), **fractions(both_c)}
        except Exception as exc:  # noqa: BLE001 - torch.compile is optional (no compiler, unsupported op, ...)
            out["compiled"] = {"error": one_line(exc)}
    return out


# ---------------------------------------------------------------------------------------------- report
def commit() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    sources = dict.fromkeys(r.get("pool_source", "online") for r in rows if r["phase"] == "distill")
    for bf16, source in [(b, src) for b in dict.fromkeys(r["bf16"] for r in rows) for src in sources]:
        skdd = {r["pool_arch"]: r for r in rows
                if r["phase"] == "distill" and r["bf16"] == bf16 and r.get("pool_source", "online") == source}
        ref = {r["pool_arch"]: r for r in rows if r["phase"] == "reference" and r["bf16"] == bf16}
        archs = [arch for arch in skdd if arch in ref]
        for arch in archs + (["pool mean"] if len(archs) > 1 else []):
            if arch == "pool mean":   # uniform draws: the expected step is the mean over the pool
                s = sum(skdd[k]["ms_per_step"] for k in archs) / len(archs)
                r = sum(ref[k]["ms_per_step"] for k in archs) / len(archs)
            else:
                s, r = skdd[arch]["ms_per_step"], ref[arch]["ms_per_step"]
            ratio = r / s
            same = source == "online" and all(skdd[k]["model_gflops_per_step"] == ref[k]["model_gflops_per_step"]
                                              for k in (archs if arch == "pool mean" else [arch]))
            out.append({"bf16": bf16, "pool_source": source, "pool_arch": arch, "skdd_ms_per_step": round(s, 3),
                        "reference_ms_per_step": round(r, 3), "ratio": round(ratio, 3), "target": TARGET_RATIO,
                        "target_met": ratio >= TARGET_RATIO, "same_model_flops": same})
    return out


def print_report(result: dict) -> None:
    m = result["meta"]
    print(f"\nskdd speed  |  {m['device_name']}  |  torch {m['torch']}  |  threads {m['threads']}  |  "
          f"commit {m['commit']}  |  data {m['dataset']} ({m['train_images']} train images)")
    print(f"{'phase':<10} {'pool':<9} {'source':<12} {'bf16':<5} {'ms/step':>10} {'images/s':>11} {'peak MiB':>10}  "
          "notes")
    for r in result["rows"]:
        if r["phase"] == "evaluate":
            note = (f"{r['arch']} w{r['width']}, {r['train_images']} images x {r['epochs']} epochs in "
                    f"{r['wall_s']:.2f} s, acc {r['test_accuracy']:.3f}")
        elif r["phase"] == "pretrain":
            note = f"batch {r['batch_size']}"
        else:
            note = f"batch {r['batch_size']}, {r['pool_steps']} pool steps"
            if r["phase"] == "reference":
                note += f", DataLoader workers {r['dataloader_workers']}"
        source = r.get("pool_source") or ("online" if r["phase"] == "reference" else "-")
        print(f"{r['phase']:<10} {r.get('pool_arch') or '-':<9} {source:<12} {r['bf16']:<5} {r['ms_per_step']:>10.2f} "
              f"{r['images_per_s']:>11.1f} {r['peak_mem_mib']:>10.1f}  {note}")
    if result["rows"]:
        print(f"peak memory: {result['rows'][0]['peak_mem_kind']}")
    print("\nratio = reference ms/step / skdd ms/step (same device, models, precision and losses)")
    for q in result["ratios"]:
        verdict = "met" if q["target_met"] else "NOT met"
        print(f"  bf16 {q['bf16']:<4} {q['pool_source']:<12} {q['pool_arch']:<9} ratio = {q['ratio']:.2f}  "
              f"({q['reference_ms_per_step']:.2f} / {q['skdd_ms_per_step']:.2f} ms)  target >= {TARGET_RATIO:g}: "
              f"{verdict}" + ("" if q["same_model_flops"] or q["pool_source"] != "online"
                              else "  (WARNING: model FLOPs per step differ)"))
    peak = result.get("conv_peak")
    if isinstance(peak, dict) and "eager" in peak:
        print(f"\nG/D forward+backward, batch {peak['batch_size']}, widths {peak['g_width']}/{peak['d_width']}, "
              f"bf16 autocast, channels_last on {peak['device_name']}")
        print(f"  bf16 peak: table {peak['table_peak_tflops']} TFLOP/s, measured "
              f"{peak['measured_matmul_peak_tflops']} TFLOP/s ({MATMUL_N}^3 matmul)")
        for mode in ("eager", "compiled"):
            for net, row in peak.get(mode, {}).items():
                if net == "error":
                    print(f"  {mode}: failed: {row}")
                    continue
                line = (f"  {mode:<8} {net:<13} {row['tflops_per_s']:>8.2f} TFLOP/s  "
                        f"{_pct(row.get('fraction_of_table_peak'))} of table, "
                        f"{_pct(row.get('fraction_of_measured_peak'))} of measured peak")
                if "conv_kernel_tflops_per_s" in row and row["conv_kernel_tflops_per_s"] is not None:
                    line += (f"; conv kernels alone {row['conv_kernel_tflops_per_s']:.2f} TFLOP/s = "
                             f"{_pct(row.get('conv_kernel_fraction_of_table_peak'))} of table")
                print(line)
        print(f"  reached {peak['reached_fraction']:.1%} of the bf16 peak with G+D (eager), target "
              f"{TARGET_PEAK_FRACTION:.0%}: {'met' if peak['target_met'] else 'NOT met'}")
    elif peak is not None:
        print(f"\nG/D bf16 peak fraction: {peak}")


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:5.1%}"


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--bf16", default="both", choices=("both", "on", "off"),
                    help="CUDA autocast settings to measure (CPU: always n/a)")
    ap.add_argument("--dataset", default="mnist", choices=sorted(DEFAULT_DATA),
                    help="which default --data path, λ_SKD and DSA strategy")
    ap.add_argument("--data", type=Path, default=None,
                    help="dataset source (IDX folder, .npz, CIFAR python folder, image folder/tarball) or an "
                         "ingested skdd dataset artifact; default: ../shared/datasets/<dataset>")
    ap.add_argument("--steps", type=int, help=f"timed steps per phase (default {DEFAULTS['steps']})")
    ap.add_argument("--warmup", type=int, help=f"untimed steps first (default {DEFAULTS['warmup']})")
    ap.add_argument("--g-width", type=int, help="generator width (default 196, DiM/paper)")
    ap.add_argument("--d-width", type=int, help="discriminator width (default 196, DiM/paper)")
    ap.add_argument("--pool-width", type=int, help="pool model width (default: each model's own)")
    ap.add_argument("--pool", default=",".join(PAPER_POOL), help="pool architectures, each timed on its own")
    ap.add_argument("--pool-steps", type=int, help="pool SGD steps per generator step (default 16)")
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="CPU: skdd's pretrain and distill steps under bf16 autocast (cpu_amp: fast on CPUs with "
                         "AVX512-BF16 or AMX); the reference stays fp32, as DiM's code is")
    ap.add_argument("--gp-every", type=int, default=1,
                    help="skdd's lazy gradient penalty (distill.gp_every; the reference keeps DiM's every step); "
                         "use --steps a multiple of it, so the timed steps hold the penalty's share")
    ap.add_argument("--sources", default="online,trajectories",
                    help="distill pool sources to time: online (trained in the step), trajectories (recorded)")
    ap.add_argument("--batch-size", type=int, help="distill batch (default 64)")
    ap.add_argument("--pretrain-batch-size", type=int, help="pretrain batch (default 128)")
    ap.add_argument("--eval-epochs", type=int, help="epochs of the evaluation trial (default 1000, the protocol's)")
    ap.add_argument("--eval-arch", default="convnet3")
    ap.add_argument("--eval-width", type=int, help="evaluation model width (default 128)")
    ap.add_argument("--eval-ipc", type=int, help="images per class of the fixed evaluation set (default 10)")
    ap.add_argument("--eval-test-size", type=int, help="test images in the trial's final pass (default 10000)")
    ap.add_argument("--ref-workers", type=int, help="reference DataLoader num_workers (default 4, DiM's)")
    ap.add_argument("--peak-batch", type=int, default=128, help="batch of the CUDA bf16 utilisation measurement")
    ap.add_argument("--peak-iters", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd G/D (CUDA)")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: pretrain,distill,evaluate,peak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--quick", action="store_true", help="tiny widths and steps (smoke test, < 60 s on 1 thread)")
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(args.seed, device)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    data_path = args.data if args.data is not None else DEFAULT_DATA[args.dataset]
    t_load = time.perf_counter()
    name, train, test = load_data(data_path, args.dataset)
    load_s = time.perf_counter() - t_load
    bench = Bench(args, device, name, train, test)
    settings: list[bool | None] = [None] if device.type != "cuda" else \
        {"both": [True, False], "on": [True], "off": [False]}[args.bf16]
    pool = [a.strip() for a in args.pool.split(",") if a.strip()]
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in ("online", "trajectories")]
    if unknown:
        raise SkddError(f"--sources: unknown pool source {unknown[0]!r} (known: online, trajectories)")

    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        print(f"[speed] {row['phase']} {row.get('pool_arch') or ''} bf16 {row['bf16']}: "
              f"{row['ms_per_step']:.2f} ms/step, {row['images_per_s']:.1f} images/s", file=sys.stderr, flush=True)

    for amp in settings:
        if "pretrain" not in skip:
            add(bench.pretrain(amp))
        if "distill" not in skip:
            for arch in pool:
                for source in sources:
                    add(bench.distill(arch, amp, source))
                add(bench.reference(arch, amp))
        if "evaluate" not in skip:
            add(bench.evaluate(amp))
    if device.type == "cuda" and "peak" not in skip:
        peak = conv_peak(args, bench.spec, device)
    else:
        peak = "n/a (CUDA only)" if device.type != "cuda" else "skipped"

    result = {
        "meta": {"device": str(device),
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                 or platform.machine(),
                 "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                 "threads": torch.get_num_threads(), "commit": commit(),
                 "command": shlex.join([Path(sys.executable).name, *sys.argv]),
                 "dataset": name, "data": str(data_path), "data_load_s": round(load_s, 2),
                 "train_images": len(train), "image_shape": list(train.shape),
                 "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                 "bf16_note": "skdd's bf16 autocast is CUDA-only: CPU rows are fp32 and say n/a; CUDA 'off' rows are "
                              "fp32 with TF32 matmul/conv allowed (skdd.device.seed_everything)"},
        "rows": rows,
        "ratios": ratios(rows),
        "target_ratio": TARGET_RATIO,
        "conv_peak": peak,
    }
    mean = [q for q in result["ratios"] if q["pool_arch"] == "pool mean" and q["pool_source"] == "online"] \
        or [q for q in result["ratios"] if q["pool_source"] == "online"] or result["ratios"]
    result["ratio"] = mean[0]["ratio"] if mean else None       # headline: first bf16 setting, pool mean
    print_report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    try:
        main()
    except SkddError as exc:
        sys.exit(f"speed.py: {exc}")
