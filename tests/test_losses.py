"""Losses against values worked out by hand (torchtune style), plus the gradient paths that matter."""

import math

import pytest
import torch

from skdd.losses import (MATCH_LOSSES, dim_mse_loss, discriminator_loss, generator_adv_loss, gradient_penalty,
                         match_loss, skd_loss, standardize)

MATCHING = [mode for mode, fn in MATCH_LOSSES.items() if fn is not None]   # every registered loss, new ones too

# real = [1, 2, 3]: mean 2, unbiased std 1  -> Z/τ (τ = 2) = [-0.5, 0, 0.5]
# syn  = [3, 2, 1]: its mirror              -> Z/τ = [0.5, 0, -0.5]
# p = softmax(real) = [e^-.5, 1, e^.5] / s,  q = p reversed; log(p_k/q_k) = [-1, 0, 1]
# KL(p‖q) = p_2 - p_0 = 2 sinh(0.5) / (1 + 2 cosh(0.5)) = 0.3201567 ; × τ² = 1.2806267
SKD_MIRROR = 4 * 2 * math.sinh(0.5) / (1 + 2 * math.cosh(0.5))


def test_standardize_uses_unbiased_std():
    # [0, 2]: mean 1, unbiased std sqrt(2) (population std would be 1 and give ±1)
    z = standardize(torch.tensor([[0.0, 2.0]]))
    assert torch.allclose(z, torch.tensor([[-1 / math.sqrt(2), 1 / math.sqrt(2)]]), atol=1e-6)


def test_standardize_epsilon_keeps_constant_logits_finite():
    z = standardize(torch.full((2, 10), 3.0))
    assert torch.isfinite(z).all() and torch.equal(z, torch.zeros(2, 10))


def test_skd_hand_computed_value():
    real, syn = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    assert SKD_MIRROR == pytest.approx(1.2806267, abs=1e-6)
    assert skd_loss(real, syn, tau=2.0).item() == pytest.approx(SKD_MIRROR, rel=1e-5)


def test_skd_is_batch_mean_of_per_sample_sums():
    # second pair identical -> KL 0; batchmean halves the first pair's value (sum over classes, not mean)
    real = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    syn = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
    assert skd_loss(real, syn, tau=2.0).item() == pytest.approx(SKD_MIRROR / 2, rel=1e-5)


def test_skd_tau_squared_factor():
    # with τ = 1: Z = [-1, 0, 1]; KL = 2·(e - e^-1)/(e^-1 + 1 + e) ; × τ² = 1
    real, syn = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    expected = 2 * (math.e - 1 / math.e) / (1 / math.e + 1 + math.e)
    assert skd_loss(real, syn, tau=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_skd_direction_is_real_to_synthetic():
    # real = [0, 1, 4]: mean 5/3, unbiased std sqrt(13/3) -> Z/2 = [-0.400320, -0.160128, 0.560449]
    # syn  = [2, 0, 1]: mean 1, std 1                   -> Z/2 = [0.5, -0.5, 0]
    # KL(p_real ‖ p_syn)·4 = 0.793595 ; the reverse direction would give 0.904484
    real, syn = torch.tensor([[0.0, 1.0, 4.0]]), torch.tensor([[2.0, 0.0, 1.0]])
    assert skd_loss(real, syn, tau=2.0).item() == pytest.approx(0.7935948, rel=1e-5)


def test_standardization_makes_loss_scale_invariant_and_nostand_does_not():
    real, syn = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    assert skd_loss(real * 10, syn, 2.0).item() == pytest.approx(SKD_MIRROR, rel=1e-5)
    # without standardization [1,2,3]/2 happens to equal Z/τ shifted, so the value agrees at scale 1 ...
    assert skd_loss(real, syn, 2.0, standardized=False).item() == pytest.approx(SKD_MIRROR, rel=1e-5)
    # ... and changes once the scale differs
    assert skd_loss(real * 10, syn, 2.0, standardized=False).item() > 2 * SKD_MIRROR


def test_dim_mse_hand_computed_value():
    # log_softmax differences of [1,2,3] and [3,2,1] are [-2, 0, 2]: mean of squares over B×C = 8/3
    real, syn = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    assert dim_mse_loss(real, syn).item() == pytest.approx(8 / 3, rel=1e-6)
    assert match_loss("dim-mse", real, syn, tau=2.0).item() == pytest.approx(8 / 3, rel=1e-6)


@pytest.mark.parametrize("mode", MATCHING)
def test_matching_gradient_reaches_synthetic_not_real(mode):
    real = torch.randn(4, 10, requires_grad=True)
    syn = torch.randn(4, 10, requires_grad=True)
    match_loss(mode, real, syn, tau=2.0).backward()
    assert real.grad is None
    assert syn.grad is not None and syn.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", MATCHING)
def test_matching_loss_is_zero_for_identical_logits(mode):
    logits = torch.randn(8, 10)
    assert match_loss(mode, logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["bogus", "none"])     # `none` is the GAN-only control: no term to compute
def test_a_mode_without_a_matching_term_raises(mode):
    with pytest.raises(ValueError, match=f"no matching loss for mode '{mode}'"):
        match_loss(mode, torch.zeros(1, 3), torch.zeros(1, 3), 2.0)


def test_generator_adv_loss_value():
    # -mean(src) + CE; logits all equal -> CE = log(3)
    src = torch.tensor([1.0, 3.0])
    cls = torch.zeros(2, 3)
    assert generator_adv_loss(src, cls, torch.tensor([0, 2])).item() == pytest.approx(-2 + math.log(3), rel=1e-6)


class _LinearCritic(torch.nn.Module):
    """src = sum(w · x) has gradient w everywhere, so the penalty is (‖w‖ - 1)² exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1), torch.zeros(x.shape[0], 2)


def test_gradient_penalty_hand_computed():
    critic = _LinearCritic(torch.full((1, 1, 2, 2), 1.0))   # ‖w‖ = 2 -> (2 - 1)² · 10 = 10
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    assert gradient_penalty(critic, real, fake, weight=10.0).item() == pytest.approx(10.0, rel=1e-6)


def test_discriminator_loss_composition():
    critic = _LinearCritic(torch.full((1, 1, 2, 2), 0.5))   # ‖w‖ = 1 -> zero penalty
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    labels = torch.tensor([0, 1])
    # mean(src_fake) - mean(src_real) = 0 - 2 ; CE on uniform logits = log 2, twice
    value = discriminator_loss(critic, real, labels, fake, labels).item()
    assert value == pytest.approx(-2 + 2 * math.log(2), rel=1e-6)
