"""Stage 2: pre-train the conditional GAN: WGAN-GP critic + auxiliary classifier as DiM's gen_condense.py
(`gan_loss: wgan-gp-ac`, the paper's), or hinge loss with a spectrally normalised projection critic
(`hinge-proj`, SNGAN-projection / BigGAN style: no gradient penalty, so a cheaper critic step), or DiM's with the
critic's class head trained on real images only (`wgan-gp-ac-real`: a wrong-class fake cannot teach it its label).

One generator step, then one critic step, per real batch. The critic's step draws fresh random
labels for its fake batch, as DiM does, so the critic sees every class evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skdd import checkpoint as ckpt_mod
from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import EpochBatcher, Pixels
from skdd.errors import SkddError
from skdd.device import DEVICES, amp_on, prepare_module, resolve_device, seed_everything
from skdd.ema import GeneratorEMA
from skdd.probe import PROBE_FILE, ProbeParams, build_probe, probe_metrics, probe_rows
from skdd.gan_artifact import GanSpec, save_gan
from skdd.losses import GAN_OBJECTIVES
from skdd.models.gan import CONDITIONING_MODES
from skdd.adversarial import critic_augmentation, critic_step, gan_step, lazy_gp_weight
from skdd.stages.common import load_dataset
from skdd.stages.curves import write_curves
from skdd.stages.loop import run_steps


@dataclass
class PretrainParams(ProbeParams):
    seed: int = param(3407, ge=0)
    device: str = param("auto", choices=DEVICES)
    steps: int = param(2000, ge=1, help="generator steps (one real batch each)")
    batch_size: int = param(128, ge=2)
    lr: float = param(1e-4, gt=0, help="G's learning rate (and D's unless d_lr is set)")
    d_lr: float | None = param(None, gt=0, help="D's learning rate (null: lr); e.g. 4x lr, the two time-scale "
                                                "rule BigGAN and SAGAN train hinge critics with")
    n_critic: int = param(1, ge=1, help="critic steps per generator step, each on its own real batch (DiM: 1)")
    beta1: float = param(0.0, ge=0, le=1)
    beta2: float = param(0.9, ge=0, le=1)
    gp_weight: float = param(10.0, ge=0, help="gradient-penalty weight (wgan-gp-ac; hinge-proj has none)")
    gp_every: int = param(1, ge=1, help="lazy gradient penalty: on one critic step in N, weighted N times (1: every "
                                       "step, DiM; wgan-gp-ac only)")
    gan_loss: str = param("wgan-gp-ac", choices=tuple(GAN_OBJECTIVES),
                          help="wgan-gp-ac (DiM, the paper) | hinge-proj (spectral-norm projection critic) | "
                               "wgan-gp-ac-real (DiM's, D's class head trained on real images only)")
    g_width: int = param(196, ge=1)
    d_width: int = param(196, ge=1)
    z_dim: int = param(100, ge=2)
    conditioning: str = param("overwrite", choices=CONDITIONING_MODES)
    amp: bool = param(True, help="bf16 autocast on CUDA (on the CPU only with cpu_amp)")
    cpu_amp: bool = param(False, help="bf16 autocast on the CPU too: fast on CPUs with AVX512-BF16 or AMX, slow on "
                                      "others; changes the numbers (off: fp32, every figure in the docs)")
    ema_decay: float | None = param(None, ge=0, le=1, help="keep an exponential moving average of G's weights "
                                                           "with this decay, saved and sampled from (null: off)")
    d_augment: str | None = param(None, help="DiffAugment policy on everything D sees, e.g. color_crop_cutout "
                                             "(per-sample, differentiable; null: off, DiM's recipe)")
    checkpoint_every: int = param(500, ge=1)
    log_every: int = param(50, ge=1)

    def check(self, section: str) -> None:
        critic_augmentation(self.d_augment, section)
        self.check_probe(section)


class Pretrainer:
    """GAN pretraining one step at a time (the loop, checkpoints and artifacts live elsewhere)."""

    def __init__(self, params: PretrainParams, spec: GanSpec, train, device: torch.device):
        self.params, self.spec, self.train, self.device = params, spec, train, device
        self.amp = amp_on(device, params.amp, params.cpu_amp)
        g, d = spec.build()
        self.g, self.d = prepare_module(g, device).train(), prepare_module(d, device).train()
        betas = (params.beta1, params.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=params.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=params.d_lr or params.lr, betas=betas)
        self.ema = GeneratorEMA(self.g, params.ema_decay) if params.ema_decay is not None else None
        self.batcher = EpochBatcher(len(train), params.batch_size, device)
        self.pixels = Pixels(spec.mean, spec.std, device)
        self.d_aug = critic_augmentation(params.d_augment)

    def _real_batch(self):
        idx = self.batcher.next()
        return self.pixels.gan(self.train.images[idx]), self.train.labels[idx]

    def _gp(self) -> float:
        return lazy_gp_weight(self.opt_d, self.params.gp_weight, self.params.gp_every)

    def step(self) -> dict:
        p = self.params
        x, y = self._real_batch()
        losses = gan_step(self.g, self.d, self.opt_g, self.opt_d, x, y, self.spec, self._gp(), self.device, self.amp,
                          d_aug=self.d_aug)
        for _ in range(p.n_critic - 1):   # further critic steps, each on the next real batch
            x, y = self._real_batch()
            losses.update(critic_step(self.g, self.d, self.opt_d, x, y, self.spec, self._gp(), self.device,
                                      self.amp, self.d_aug))
        if self.ema is not None:
            self.ema.update(self.g)
        return losses

    def modules(self) -> dict:
        return {"g": self.g, "d": self.d, **({"g_ema": self.ema.module} if self.ema is not None else {})}

    def optimizers(self) -> dict:
        return {"g": self.opt_g, "d": self.opt_d}

    def state_tensors(self) -> dict:
        return self.batcher.state_tensors("batcher")

    def meta(self) -> dict:
        return {}

    def sampler(self):
        """The weights `sample` would draw from: the moving average when kept, else G."""
        return self.ema.module if self.ema is not None else self.g

    def resume(self, ckpt) -> None:
        ckpt_mod.restore(ckpt, self.modules(), self.optimizers())
        self.batcher.load_state_tensors(ckpt.tensors, "batcher")


def run(params: PretrainParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    data = load_dataset(inputs["dataset"], splits=("train", "val") if params.probe_every else ("train",))
    train = data.train.to(device)
    c, h, w = train.shape
    if h != w:
        raise SkddError(f"{data.path}: square images required, got {h}x{w}")
    spec = GanSpec(in_channels=c, image_size=h, num_classes=train.num_classes, g_width=params.g_width,
                   d_width=params.d_width, z_dim=params.z_dim, conditioning=params.conditioning,
                   classes=list(train.classes), dataset=data.name,
                   mean=list(data.info["mean"]), std=list(data.info["std"]), gan_loss=params.gan_loss)
    trainer = Pretrainer(params, spec, train, device)
    probe, teacher_record = build_probe("pretrain", params, inputs, data, spec, device)
    phash = params_hash(params)
    with storage.staged_output(output) as stage:
        curves, elapsed = run_steps(trainer, name="pretrain", ckpts=storage.checkpointer(output, phash),
                                    steps=params.steps, log_every=params.log_every,
                                    checkpoint_every=params.checkpoint_every,
                                    images_per_step=params.batch_size * params.n_critic,
                                    probe=probe, probe_every=params.probe_every)
        g, d, opt_g, opt_d = trainer.g, trainer.d, trainer.opt_g, trainer.opt_d
        selected = probe.publish_best(trainer.sampler()) if probe is not None else None
        save_gan(stage, spec, g, d, opt_g, opt_d, g_ema=trainer.ema.module if trainer.ema is not None else None)
        write_curves(stage / "curves.csv", curves)
        if probe is not None:
            write_curves(stage / PROBE_FILE, probe_rows(curves))
        final = curves[-1] if curves else {}
        metrics = {"steps": params.steps, "final_loss_g": final.get("loss_g"), "final_loss_d": final.get("loss_d"),
                   **probe_metrics(curves), "wall_seconds_this_run": round(elapsed, 2)}
        return lineage.write_manifest(
            stage, kind="gan", stage="pretrain", params=as_dict(params), params_hash=phash,
            inputs=[lineage.input_record("dataset", inputs["dataset"], data.path)] + [r for r in [teacher_record] if r],
            metrics=metrics, extra={"gan": {k: v for k, v in spec.__dict__.items()},
                                    "resolved": {"probe_selected_step": selected}}, device=str(device))

