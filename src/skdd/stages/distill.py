"""Stage 3: fine-tune the pretrained generator with L_CGAN + λ·τ²·L_SKD (docs/method.md §1.3-1.5, choices §1.9).

Per generator step: the pool model takes `pool_steps` SGD steps on real batches; the real batch and
a synthetic batch with the *same labels* (pair i is class y_i on both sides) get the same siamese
augmentation and go through the pool model in separate passes; the matching term joins the
adversarial loss for G only; then the critic takes its usual WGAN-GP step.
`loss: gan-only` runs the very same loop without matching: the GAN-only control at equal steps.
`pool_source: trajectories` replaces the online pool by the `pool` stage's recorded snapshots (skdd.pool.SnapshotPool):
a fresh (architecture, snapshot) each step, used frozen, so no pool SGD step runs.
With `ema_decay` set, a moving average of G's weights is kept (skdd.ema) and saved beside G; it starts from
the input artifact's average when that has one, else from G.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skdd import checkpoint as ckpt_mod
from skdd import lineage, storage
from skdd.adversarial import (critic_augmentation, critic_step, generator_forward, generator_update, lazy_gp_weight,
                              step_losses)
from skdd.augment import DiffAug
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import EpochBatcher, Pixels
from skdd.device import DEVICES, amp_on, autocast, prepare_module, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.ema import GeneratorEMA
from skdd.probe import PROBE_FILE, ProbeParams, build_probe, probe_metrics, probe_rows
from skdd.gan_artifact import load_ema_state, load_gan, save_gan
from skdd.losses import MATCH_LOSSES, match_loss
from skdd.models import list_models
from skdd.pool import PAPER_POOL, ModelPool, SnapshotPool, TrajectorySpec
from skdd.stages.common import load_dataset, open_input
from skdd.stages.curves import write_curves
from skdd.stages.loop import run_steps


def default_lambda(loss: str, dataset: str) -> float:
    """The paper's λ_SKD: 0.001 for MNIST, 0.01 otherwise; DiM's hard-coded 0.01 for its MSE."""
    if loss == "dim-mse":
        return 0.01
    return 0.001 if dataset == "mnist" else 0.01


@dataclass
class DistillParams(ProbeParams):
    seed: int = param(3407, ge=0)
    device: str = param("auto", choices=DEVICES)
    steps: int = param(1000, ge=1, help="generator steps")
    batch_size: int = param(64, ge=2)
    lr: float = param(5e-6, gt=0, help="G and D learning rate (DiM: 5e-6, Adam states kept from pretraining)")
    beta1: float = param(0.0, ge=0, le=1)
    beta2: float = param(0.9, ge=0, le=1)
    gp_weight: float = param(10.0, ge=0)
    gp_every: int = param(1, ge=1, help="lazy gradient penalty: on one critic step in N, weighted N times (1: every "
                                       "step, DiM; wgan-gp-ac only)")
    loss: str = param("skd", choices=tuple(MATCH_LOSSES))
    lambda_skd: float | None = param(None, ge=0, help="null: the paper's value for the dataset (lambda_mode fixed)")
    lambda_mode: str = param("fixed", choices=("fixed", "balanced"),
                             help="balanced: λ set every step so the matching gradient at G's output is target_ratio "
                                  "times the adversarial one (costs one more backward through D and the pool model)")
    target_ratio: float = param(0.1, gt=0, help="balanced: |∇ λτ²L_match| / |∇ L_adv| at G's output")
    tau: float = param(2.0, gt=0)
    pool: list[str] = param(PAPER_POOL)
    pool_source: str = param("online", choices=("online", "trajectories"),
                             help="online: trained inside distill (DiM, the paper); trajectories: snapshots recorded "
                                  "by the pool stage (--pool), drawn each step, no pool training here")
    pool_width: int | None = param(None, ge=1, help="null: each model's default width")
    pool_sampling: str = param("epoch", choices=("epoch", "step"))
    pool_steps: int = param(16, ge=0, help="SGD steps of the pool model on real data per generator step")
    pool_batch_size: int | None = param(None, ge=2, help="null: batch_size")
    pool_lr: float = param(0.01, gt=0)
    pool_momentum: float = param(0.9, ge=0, le=1)
    pool_weight_decay: float = param(5e-4, ge=0)
    match_augment: str = param("color_crop_cutout")
    pool_augment: str = param("color_crop")
    match_shared: bool = param(True, help="one augmentation for the whole real+synthetic batch (DiM) vs per pair")
    amp: bool = param(True, help="bf16 autocast on CUDA (on the CPU only with cpu_amp)")
    cpu_amp: bool = param(False, help="bf16 autocast on the CPU too: fast on CPUs with AVX512-BF16 or AMX, slow on "
                                      "others; changes the numbers (off: fp32, every figure in the docs)")
    d_augment: str | None = param(None, help="DiffAugment policy on everything D sees (null: off, DiM's recipe)")
    ema_decay: float | None = param(None, ge=0, le=1, help="keep an exponential moving average of G's weights with "
                                                           "this decay (from the input's average when it has one, "
                                                           "else from G), saved and sampled from (null: off)")
    grad_norm_every: int = param(0, ge=0, help="every N steps log |grad| of the adversarial and the weighted "
                                               "matching term at G's output, and their ratio (0: never)")
    checkpoint_every: int = param(200, ge=1)
    log_every: int = param(50, ge=1)

    def check(self, section: str) -> None:
        critic_augmentation(self.d_augment, section)
        self.check_probe(section)
        known = list_models("classifier")
        if not self.pool:
            raise SkddError(f"{section}.pool: must name at least one model (known: {', '.join(known)})")
        for name in self.pool:
            if name not in known:
                raise SkddError(f"{section}.pool: unknown model {name!r} (known: {', '.join(known)})")
        for key in ("match_augment", "pool_augment"):
            DiffAug.for_param(f"{section}.{key}", getattr(self, key), "dim")


class Distiller:
    """One distillation step at a time; `run` adds artifacts and checkpoints, benchmarks call `step` directly."""

    def __init__(self, params: DistillParams, spec, g, d, opt_g, opt_d, train, device: torch.device,
                 lam: float | None, ema_init: dict[str, torch.Tensor] | None = None, trajectories: tuple | None = None):
        self.params, self.spec, self.g, self.d, self.opt_g, self.opt_d = params, spec, g, d, opt_g, opt_d
        # G's moving average (off when ema_decay is null); `ema_init`: the input artifact's average, else G
        self.ema = GeneratorEMA(g, params.ema_decay, init=ema_init) if params.ema_decay is not None else None
        self.train, self.device, self.lam = train, device, lam
        self.amp = amp_on(device, params.amp, params.cpu_amp)
        self.matching = MATCH_LOSSES[params.loss] is not None
        # `trajectories`: (path, TrajectorySpec) of a pool artifact, for pool_source trajectories: nothing to train
        if trajectories is not None:
            self.pool, self.pool_steps = SnapshotPool(*trajectories, device), 0
        else:
            self.pool = ModelPool(params.pool, params.pool_sampling, in_channels=spec.in_channels,
                                  num_classes=spec.num_classes, image_size=spec.image_size, width=params.pool_width,
                                  lr=params.pool_lr, momentum=params.pool_momentum,
                                  weight_decay=params.pool_weight_decay, device=device, amp=self.amp)
            self.pool_steps = params.pool_steps
        self.match_aug = DiffAug(params.match_augment, scheme="dim")
        self.pool_aug = DiffAug(params.pool_augment, scheme="dim")
        self.d_aug = critic_augmentation(params.d_augment)
        self.batcher = EpochBatcher(len(train), params.batch_size, device)
        self.pool_batcher = EpochBatcher(len(train), params.pool_batch_size or params.batch_size, device)
        self.pixels = Pixels(spec.mean, spec.std, device)
        self.calls = 0   # steps taken by this object (gradient-norm logging cadence only; never affects training)

    def _matching_term(self, fake: torch.Tensor, real_idx: torch.Tensor) -> torch.Tensor:
        p, model = self.params, self.pool.model
        model.requires_grad_(False)   # L_SKD updates G only; the pool learns from real data alone
        real = self.pixels.classifier(self.train.images[real_idx])
        syn = self.pixels.classifier_from_gan(fake.float())
        real_aug, syn_aug = self.match_aug.pair(real, syn, shared=p.match_shared)
        with autocast(self.device, self.amp):
            with torch.no_grad():
                logits_real = model(real_aug)
            logits_syn = model(syn_aug)
        return self.lam * match_loss(p.loss, logits_real, logits_syn, p.tau)

    def step(self) -> dict:
        p, train = self.params, self.train
        new_epoch = self.batcher.starts_epoch
        idx = self.batcher.next()
        x, y = self.pixels.gan(train.images[idx]), train.labels[idx]
        pool_loss = None
        if self.matching:
            self.pool.draw(new_epoch)
            for _ in range(self.pool_steps):
                pidx = self.pool_batcher.next()
                pool_loss = self.pool.train_step(self.pixels.classifier(train.images[pidx]), train.labels[pidx],
                                                 self.pool_aug)
        self.calls += 1
        measure = p.grad_norm_every > 0 and self.calls % p.grad_norm_every == 0
        fake, loss_adv = generator_forward(self.g, self.d, self.spec, y, self.device, self.amp, self.d_aug)
        loss_match = self._matching_term(fake, idx) if self.matching else None
        generator = generator_update(self.opt_g, self.d, fake, loss_adv, loss_match, grad_norms=measure,
                                     target_ratio=p.target_ratio if p.lambda_mode == "balanced" else None)
        gp = lazy_gp_weight(self.opt_d, p.gp_weight, p.gp_every)
        losses = step_losses(generator, critic_step(self.g, self.d, self.opt_d, x, y, self.spec, gp, self.device,
                                                    self.amp, self.d_aug))
        if self.ema is not None:
            self.ema.update(self.g)
        if pool_loss is not None:
            losses["loss_pool"] = pool_loss
        if self.matching:
            losses.update(self.pool.logged())
        return losses

    def modules(self) -> dict:
        ema = {"g_ema": self.ema.module} if self.ema is not None else {}
        return {"g": self.g, "d": self.d, **ema, **self.pool.modules()}

    def optimizers(self) -> dict:
        return {"g": self.opt_g, "d": self.opt_d, **self.pool.optimizers()}

    def state_tensors(self) -> dict:
        return {**self.batcher.state_tensors("batcher"), **self.pool_batcher.state_tensors("pool_batcher")}

    def meta(self) -> dict:
        return self.pool.meta()

    def sampler(self):
        """The weights `sample` would draw from: the moving average when kept, else G."""
        return self.ema.module if self.ema is not None else self.g

    def resume(self, ckpt) -> None:
        self.pool.rebuild(ckpt.meta)
        ckpt_mod.restore(ckpt, self.modules(), self.optimizers())
        self.batcher.load_state_tensors(ckpt.tensors, "batcher")
        self.pool_batcher.load_state_tensors(ckpt.tensors, "pool_batcher")


def load_generator_for_distill(params: DistillParams, gan_path, device: torch.device):
    """G and D with their pretraining Adam states, lr and betas replaced (DiM: states kept, lr 5e-6)."""
    spec, g, d, optim_states = load_gan(gan_path, device, with_optimizers=True)
    g, d = prepare_module(g, device), prepare_module(d, device)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    opt_g.load_state_dict(optim_states["g"])
    opt_d.load_state_dict(optim_states["d"])
    for opt in (opt_g, opt_d):
        for group in opt.param_groups:
            group["lr"], group["betas"] = params.lr, (params.beta1, params.beta2)
    return spec, g, d, opt_g, opt_d


def open_trajectories(params: DistillParams, inputs: dict[str, str], spec) -> tuple:
    """The pool artifact for `pool_source: trajectories`, checked against the GAN and this stage's pool params
    (one source of truth: a pool recorded for other architectures or another width is refused, not reinterpreted)."""
    if not inputs.get("pool"):
        raise SkddError("distill: pool_source trajectories needs --pool (the pool stage's artifact)")
    path, _ = open_input(inputs["pool"], "pool")
    pool = TrajectorySpec.read(path)
    if (pool.in_channels, pool.image_size, pool.num_classes) != (spec.in_channels, spec.image_size, spec.num_classes):
        raise SkddError(f"{path}: pool was recorded for {pool.in_channels}x{pool.image_size}x{pool.image_size}, "
                        f"{pool.num_classes} classes; the GAN makes {spec.in_channels}x{spec.image_size}x"
                        f"{spec.image_size}, {spec.num_classes} classes")
    if sorted(pool.archs) != sorted(params.pool) or pool.width != params.pool_width:
        raise SkddError(f"{path}: pool holds {pool.archs} at width {pool.width}; distill.pool is {params.pool} at "
                        f"pool_width {params.pool_width} (record the pool with the same archs and width)")
    return path, pool


def run(params: DistillParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    data = load_dataset(inputs["dataset"], splits=("train", "val") if params.probe_every else ("train",))
    gan_path, _ = open_input(inputs["gan"], "gan")
    spec, g, d, opt_g, opt_d = load_generator_for_distill(params, gan_path, device)
    train = data.train.to(device)
    if tuple(train.shape) != (spec.in_channels, spec.image_size, spec.image_size) \
            or train.num_classes != spec.num_classes:
        raise SkddError(f"{gan_path}: GAN was trained for {spec.in_channels}x{spec.image_size}x{spec.image_size}, "
                        f"{spec.num_classes} classes; dataset {data.path} has {tuple(train.shape)}, "
                        f"{train.num_classes} classes")
    if MATCH_LOSSES[params.loss] is None:
        lam = None  # the GAN-only control has no matching term, so no λ to report
    elif params.lambda_mode == "balanced":
        lam = 1.0   # the per-step scale comes from the gradient ratio (logged as `lambda` in curves.csv)
    else:
        lam = params.lambda_skd if params.lambda_skd is not None else default_lambda(params.loss, data.name)
    ema_init = load_ema_state(gan_path) if params.ema_decay is not None else None
    trajectories, pool_record = None, None
    if params.pool_source == "trajectories" and MATCH_LOSSES[params.loss] is not None:
        trajectories = open_trajectories(params, inputs, spec)
        pool_record = lineage.input_record("pool", inputs["pool"], trajectories[0])
    distiller = Distiller(params, spec, g, d, opt_g, opt_d, train, device, lam, ema_init=ema_init,
                          trajectories=trajectories)
    probe, teacher_record = build_probe("distill", params, inputs, data, spec, device)
    phash = params_hash(params)

    with storage.staged_output(output) as stage:
        g.train()
        d.train()
        curves, elapsed = run_steps(distiller, name=f"distill[{params.loss}]",
                                    ckpts=storage.checkpointer(output, phash),
                                    steps=params.steps, log_every=params.log_every,
                                    checkpoint_every=params.checkpoint_every, images_per_step=params.batch_size,
                                    probe=probe, probe_every=params.probe_every)
        selected = probe.publish_best(distiller.sampler()) if probe is not None else None
        save_gan(stage, spec, g, d, opt_g, opt_d,
                 g_ema=distiller.ema.module if distiller.ema is not None else None)
        write_curves(stage / "curves.csv", curves)
        if probe is not None:
            write_curves(stage / PROBE_FILE, probe_rows(curves))
        # where G's moving average started: the input artifact's average, G itself, or none kept
        ema_from = None if distiller.ema is None else "input-ema" if ema_init is not None else "generator"
        final = curves[-1] if curves else {}
        ratios = [c["grad_ratio"] for c in curves if "grad_ratio" in c]
        lambdas = sorted(c["lambda"] for c in curves if "lambda" in c)
        if lambdas:   # balanced: the scale each logged step used; its median stands for λ
            lam = lambdas[len(lambdas) // 2]
        metrics = {"steps": params.steps, "lambda": lam, "lambda_mode": params.lambda_mode,
                   "final_loss_g": final.get("loss_g"),
                   "final_loss_match": final.get("loss_match"),
                   "pool_draws": distiller.pool.draws if distiller.matching else {},
                   "pool_source": params.pool_source,
                   "grad_ratio_median": sorted(ratios)[len(ratios) // 2] if ratios else None, **probe_metrics(curves),
                   "wall_seconds_this_run": round(elapsed, 2)}
        return lineage.write_manifest(
            stage, kind="gan", stage="distill", params=as_dict(params), params_hash=phash,
            inputs=[lineage.input_record("dataset", inputs["dataset"], data.path),
                    lineage.input_record("gan", inputs["gan"], gan_path)]
                   + [r for r in [teacher_record, pool_record] if r],
            metrics=metrics, extra={"gan": dict(spec.__dict__), "resolved": {"lambda": lam, "ema_init": ema_from,
                                                             "probe_selected_step": selected}},
            device=str(device))
