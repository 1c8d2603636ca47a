"""Losses of the CGAN (WGAN-GP + auxiliary classifier, or hinge + projection) and of the logit matching.

The matching losses follow docs/method.md §1.5: the SKD loss mirrors logit-standardized KD's
`kd_loss` with real images as teacher and synthetic images as student, so its conventions
(unbiased std, +1e-7, KL(real || syn), sum over classes, mean over batch, τ² inside) are
theirs. `dim-mse` reproduces DiM's code, which matches log-probabilities, not logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STD_EPS = 1e-7


def standardize(logits: Tensor, eps: float = STD_EPS) -> Tensor:
    """Z-score each sample's logit vector (unbiased std), so only its shape, not its scale, is matched."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + eps)


def skd_loss(logits_real: Tensor, logits_syn: Tensor, tau: float, standardized: bool = True) -> Tensor:
    """τ² · KL(softmax(Z(ℓ_O)/τ) ‖ softmax(Z(ℓ_S)/τ)), summed over classes, averaged over the batch.

    The real branch is the teacher and is detached: L_SKD must move the generator only.
    """
    real = logits_real.detach().float()
    syn = logits_syn.float()
    if standardized:
        real, syn = standardize(real), standardize(syn)
    log_p_syn = F.log_softmax(syn / tau, dim=1)
    p_real = F.softmax(real / tau, dim=1)
    kl = F.kl_div(log_p_syn, p_real, reduction="none").sum(dim=1).mean()
    return kl * tau**2


def dim_mse_loss(logits_real: Tensor, logits_syn: Tensor) -> Tensor:
    """DiM's matching: mean over B×C of squared log-probability differences (its ×0.01 is λ)."""
    diff = F.log_softmax(logits_real.detach().float(), dim=1) - F.log_softmax(logits_syn.float(), dim=1)
    return diff.pow(2).mean()


# The one table of the paper's loss and its ablations: distill's `loss` modes -> the matching term before λ,
# (logits_real, logits_syn, tau) -> loss. `gan-only` trains the GAN alone for the same steps (the control), and is
# also that row's label in every table.
MATCH_LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor] | None] = {
    "skd": lambda real, syn, tau: skd_loss(real, syn, tau, standardized=True),
    "skd-nostand": lambda real, syn, tau: skd_loss(real, syn, tau, standardized=False),
    "dim-mse": lambda real, syn, tau: dim_mse_loss(real, syn),
    "gan-only": None,
}


def match_loss(mode: str, logits_real: Tensor, logits_syn: Tensor, tau: float) -> Tensor:
    """The matching term of loss mode `mode`, before λ."""
    fn = MATCH_LOSSES.get(mode)
    if fn is None:
        raise ValueError(f"no matching loss for mode {mode!r}")
    return fn(logits_real, logits_syn, tau)


def generator_adv_loss(src_fake: Tensor, cls_fake: Tensor, labels: Tensor) -> Tensor:
    """WGAN generator loss plus the auxiliary classifier's CE on the generated images (DiM)."""
    return -src_fake.float().mean() + F.cross_entropy(cls_fake.float(), labels)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, weight: float = 10.0) -> Tensor:
    """WGAN-GP: weight · E[(‖∇_x̂ D_src(x̂)‖₂ − 1)²] on per-sample interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    src, _ = critic(mixed)
    (grad,) = torch.autograd.grad(src.float().sum(), mixed, create_graph=True)
    return weight * (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def discriminator_loss(
    critic: nn.Module, real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor, gp_weight: float = 10.0,
    head_on_fakes: bool = True,
) -> Tensor:
    """DiM's critic loss: Wasserstein estimate + AC cross-entropy on both sides (on real images only when not
    `head_on_fakes`) + gradient penalty."""
    src_real, cls_real = critic(real)
    src_fake, cls_fake = critic(fake.detach())
    wasserstein = src_fake.float().mean() - src_real.float().mean()
    ce = F.cross_entropy(cls_real.float(), real_labels)
    if head_on_fakes:
        ce = F.cross_entropy(cls_fake.float(), fake_labels) + ce
    if gp_weight == 0:   # a lazy-regularisation step (skdd.adversarial.lazy_gp_weight): no penalty pass at all
        return wasserstein + ce
    return wasserstein + ce + gradient_penalty(critic, real, fake, gp_weight)


def discriminator_loss_real_ac(
    critic: nn.Module, real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor, gp_weight: float = 10.0
) -> Tensor:
    """DiM's critic loss with the auxiliary classifier trained on **real** images only.

    In AC-GAN (and DiM) D's class head also learns the fakes' requested labels. A generator that draws a good 6
    when asked for a 5 then teaches D that such a 6 is a "5", and G's class loss stops pushing it back: the
    wrong-class digits of the weak GAN seeds. Trained on real images only, the head stays a classifier of real
    classes, so G's cross-entropy through it pulls every image toward its requested class."""
    return discriminator_loss(critic, real, real_labels, fake, fake_labels, gp_weight, head_on_fakes=False)


def wgan_ac_generator_loss(critic: nn.Module, fake: Tensor, labels: Tensor) -> Tensor:
    """`generator_adv_loss` on the critic's two heads for G's images."""
    src, cls = critic(fake)
    return generator_adv_loss(src, cls, labels)


def hinge_generator_loss(critic: nn.Module, fake: Tensor, labels: Tensor) -> Tensor:
    """SNGAN/BigGAN's generator loss: −E[D(G(z), y)] (the critic conditions on the label by projection)."""
    return -critic(fake, labels).float().mean()


def hinge_critic_loss(
    critic: nn.Module, real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor, gp_weight: float = 0.0
) -> Tensor:
    """E[max(0, 1 − D(x, y))] + E[max(0, 1 + D(G(z), y'))]: no gradient penalty, spectral norm bounds D
    (`gp_weight` is accepted for a common signature and unused)."""
    del gp_weight
    return (F.relu(1 - critic(real, real_labels).float()).mean()
            + F.relu(1 + critic(fake.detach(), fake_labels).float()).mean())


@dataclass(frozen=True)
class GanObjective:
    """A CGAN objective: the critic it needs (a model registry name) and its two losses. G and D must agree,
    so the objective is fixed at pretraining and travels in the GAN artifact's spec."""

    discriminator: str
    generator_loss: Callable[[nn.Module, Tensor, Tensor], Tensor]                        # (critic, fake, y)
    critic_loss: Callable[[nn.Module, Tensor, Tensor, Tensor, Tensor, float], Tensor]    # (critic, x, y, fake, y', gp)


GAN_OBJECTIVES: dict[str, GanObjective] = {
    "wgan-gp-ac": GanObjective("discriminator", wgan_ac_generator_loss, discriminator_loss),   # DiM, the paper
    "hinge-proj": GanObjective("projection-discriminator", hinge_generator_loss, hinge_critic_loss),
    "wgan-gp-ac-real": GanObjective("discriminator", wgan_ac_generator_loss, discriminator_loss_real_ac),
}
