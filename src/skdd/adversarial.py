"""One adversarial step of the conditional GAN (generator, then critic), shared by `pretrain` and `distill`.

The step comes in three parts, `generator_forward`, `generator_update` and `critic_step`, so distillation can
compute its matching term from G's images and pass it in as a value; `gan_step` is the three without one.

It lives outside the stages so that stages do not import stages. `AugmentedCritic` is DiffAugment
(Zhao et al. 2020, data-efficient GANs): the critic sees every real and fake image through the same
differentiable augmentation policy, with fresh per-sample parameters at each call, so it cannot memorise the
real images and G's gradient still flows through the augmentation (`d_augment` in pretrain and distill).
"""

from __future__ import annotations

import torch
from torch import nn

from skdd.augment import DiffAug
from skdd.device import autocast
from skdd.gan_artifact import GanSpec, noise


def critic_augmentation(strategy: str | None, section: str = "d_augment") -> DiffAug | None:
    """The DiffAugment policy for a `d_augment` param (None when off); a bad strategy is one line naming it."""
    return None if strategy is None else DiffAug.for_param(f"{section}.d_augment", strategy, "dim")


class AugmentedCritic(nn.Module):
    """The critic behind a DiffAugment policy: D(T(x)) with T drawn per sample for every call (real, fake, and
    the gradient penalty's interpolates alike). Shares D's parameters; it holds none of its own."""

    def __init__(self, critic: nn.Module, aug: DiffAug):
        super().__init__()
        self.critic, self.aug = critic, aug

    def forward(self, x: torch.Tensor, *condition):
        return self.critic(self.aug(x, shared=False), *condition)


def _critic(d: nn.Module, d_aug: DiffAug | None) -> nn.Module:
    return d if d_aug is None else AugmentedCritic(d, d_aug)


def generator_forward(g, d, spec: GanSpec, y, device, amp: bool, d_aug: DiffAug | None = None):
    """G's images for labels `y` and their adversarial loss, D frozen for this pass (`generator_update` unfreezes
    it). Distillation computes its matching term from the returned images and hands it to `generator_update`."""
    d.requires_grad_(False)
    with autocast(device, amp):
        fake = g(noise(y.shape[0], spec.z_dim, device), y)
        loss_adv = spec.objective.generator_loss(_critic(d, d_aug), fake, y)
    return fake, loss_adv


def generator_update(opt_g, d, fake, loss_adv, loss_match=None, grad_norms: bool = False,
                     target_ratio: float | None = None) -> dict:
    """One Adam step of G on the adversarial loss plus the matching term (a value, or None), then D unfrozen.

    `grad_norms` also logs the norms of the two terms' gradients at G's output (the images), which is where
    they compete: `grad_adv`, `grad_match` and their ratio. It reads gradients without touching any .grad,
    so training is unchanged; it costs one more backward through D and the pool model.

    `target_ratio` (balanced λ): the matching term is rescaled this step so that its gradient norm at G's output
    is `target_ratio` times the adversarial one (the scale is logged as `lambda`, and treated as a constant). It
    needs the same two gradient measurements as `grad_norms`, so it costs one more backward through D and the
    pool model every step.
    """
    norms = {}
    if (grad_norms or target_ratio is not None) and loss_match is not None:
        grad_adv = torch.autograd.grad(loss_adv, fake, retain_graph=True)[0].float().norm()
        grad_match = torch.autograd.grad(loss_match, fake, retain_graph=True)[0].float().norm()
        if target_ratio is not None:
            scale = (target_ratio * grad_adv / grad_match.clamp_min(1e-30)).detach()
            loss_match, grad_match = loss_match * scale, grad_match * scale
            norms["lambda"] = float(scale)
        if grad_norms:
            norms.update({"grad_adv": float(grad_adv), "grad_match": float(grad_match),
                          "grad_ratio": float(grad_match / grad_adv.clamp_min(1e-30))})
    loss_g = loss_adv if loss_match is None else loss_adv + loss_match
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    d.requires_grad_(True)
    out = {"loss_g": float(loss_adv.detach())}
    if loss_match is not None:
        out["loss_match"] = float(loss_match.detach())
    return {**out, **norms}


def lazy_gp_weight(opt_d: torch.optim.Optimizer, gp_weight: float, gp_every: int) -> float:
    """The gradient-penalty weight for D's next step under lazy regularisation (StyleGAN2's lazy R1): the penalty
    runs on one critic step in `gp_every`, weighted `gp_every` times, so its expected contribution per step is
    unchanged while the other steps skip the penalty's extra forward and double backward (about 60 % of a critic
    step at width 196 on the CPU). The cadence counts D's Adam steps, which checkpoints restore, so a resumed
    run penalises the same steps."""
    if gp_every == 1:
        return gp_weight
    state = next((st for group in opt_d.param_groups for p in group["params"]
                  if (st := opt_d.state.get(p)) and "step" in st), None)
    taken = int(state["step"]) if state is not None else 0
    return gp_weight * gp_every if taken % gp_every == 0 else 0.0


def critic_step(g, d, opt_d, x, y, spec: GanSpec, gp_weight: float, device, amp: bool,
                d_aug: DiffAug | None = None) -> dict:
    """One step of D on the GAN objective (`spec.gan_loss`) on the real batch and a fake batch of fresh random
    labels (DiM's choice, so the critic sees every class evenly)."""
    b = x.shape[0]
    y_fake = torch.randint(spec.num_classes, (b,), device=device)
    with torch.no_grad(), autocast(device, amp):
        fake_d = g(noise(b, spec.z_dim, device), y_fake)
    with autocast(device, amp):
        loss_d = spec.objective.critic_loss(_critic(d, d_aug), x, y, fake_d, y_fake, gp_weight)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return {"loss_d": float(loss_d.detach())}


def step_losses(generator: dict, critic: dict) -> dict:
    """The logged losses of one adversarial step, in one column order for every stage's curves."""
    return {"loss_g": generator["loss_g"], **critic, **{k: v for k, v in generator.items() if k != "loss_g"}}


def gan_step(g, d, opt_g, opt_d, x, y, spec: GanSpec, gp_weight: float, device, amp: bool,
             d_aug: DiffAug | None = None) -> dict:
    """One generator step then one critic step, no matching term (pretrain; distill composes the three parts
    itself to add its term)."""
    fake, loss_adv = generator_forward(g, d, spec, y, device, amp, d_aug)
    return step_losses(generator_update(opt_g, d, fake, loss_adv),
                       critic_step(g, d, opt_d, x, y, spec, gp_weight, device, amp, d_aug))
