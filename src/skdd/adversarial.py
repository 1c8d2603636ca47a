"""One adversarial step of the conditional GAN (generator, then critic), shared by `pretrain` and `distill`.

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
from skdd.losses import discriminator_loss, generator_adv_loss


def critic_augmentation(strategy: str | None, section: str = "d_augment") -> DiffAug | None:
    """The DiffAugment policy for a `d_augment` param (None when off); a bad strategy is one line naming it."""
    return None if strategy is None else DiffAug.for_param(f"{section}.d_augment", strategy, "dim")


class AugmentedCritic(nn.Module):
    """The critic behind a DiffAugment policy: D(T(x)) with T drawn per sample for every call (real, fake, and
    the gradient penalty's interpolates alike). Shares D's parameters; it holds none of its own."""

    def __init__(self, critic: nn.Module, aug: DiffAug):
        super().__init__()
        self.critic, self.aug = critic, aug

    def forward(self, x: torch.Tensor):
        return self.critic(self.aug(x, shared=False))


def gan_step(g, d, opt_g, opt_d, x, y, spec: GanSpec, gp_weight: float, device, amp: bool, extra_g_loss=None,
             grad_norms: bool = False, d_aug: DiffAug | None = None, target_ratio: float | None = None):
    """One generator step then one critic step; `extra_g_loss(fake, y)` adds distillation's matching term.

    `grad_norms` also logs the norms of the two terms' gradients at G's output (the images), which is where
    they compete: `grad_adv`, `grad_match` and their ratio. It reads gradients without touching any .grad,
    so training is unchanged; it costs one more backward through D and the pool model. `d_aug`: DiffAugment
    on everything D sees (None: off, DiM's recipe).

    `target_ratio` (balanced λ): the matching term is rescaled this step so that its gradient norm at G's output
    is `target_ratio` times the adversarial one (the scale is logged as `lambda`, and treated as a constant). It
    needs the same two gradient measurements as `grad_norms`, so it costs one more backward through D and the
    pool model every step.
    """
    b = x.shape[0]
    critic = d if d_aug is None else AugmentedCritic(d, d_aug)
    d.requires_grad_(False)
    with autocast(device, amp):
        fake = g(noise(b, spec.z_dim, device), y)
        src, cls = critic(fake)
        loss_adv = generator_adv_loss(src, cls, y)
    loss_extra = extra_g_loss(fake, y) if extra_g_loss is not None else None
    norms = {}
    if (grad_norms or target_ratio is not None) and loss_extra is not None:
        grad_adv = torch.autograd.grad(loss_adv, fake, retain_graph=True)[0].float().norm()
        grad_match = torch.autograd.grad(loss_extra, fake, retain_graph=True)[0].float().norm()
        if target_ratio is not None:
            scale = (target_ratio * grad_adv / grad_match.clamp_min(1e-30)).detach()
            loss_extra, grad_match = loss_extra * scale, grad_match * scale
            norms["lambda"] = float(scale)
        if grad_norms:
            norms.update({"grad_adv": float(grad_adv), "grad_match": float(grad_match),
                          "grad_ratio": float(grad_match / grad_adv.clamp_min(1e-30))})
    loss_g = loss_adv if loss_extra is None else loss_adv + loss_extra
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    d.requires_grad_(True)

    y_fake = torch.randint(spec.num_classes, (b,), device=device)
    with torch.no_grad(), autocast(device, amp):
        fake_d = g(noise(b, spec.z_dim, device), y_fake)
    with autocast(device, amp):
        loss_d = discriminator_loss(critic, x, y, fake_d, y_fake, gp_weight)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    out = {"loss_g": float(loss_adv.detach()), "loss_d": float(loss_d.detach())}
    if loss_extra is not None:
        out["loss_match"] = float(loss_extra.detach())
    return {**out, **norms}
