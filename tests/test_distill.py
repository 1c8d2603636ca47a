"""The matching term's gradient path inside a real distillation step: it reaches G and nothing else."""

import pytest
import torch

from skdd.config import from_dict
from skdd.data.dataset import ImageDataset
from skdd.gan_artifact import GanSpec
from skdd.stages.distill import DistillParams, Distiller, default_lambda


def tiny_distiller(**overrides):
    torch.manual_seed(0)
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=8, d_width=8, z_dim=100,
                   conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="tiny",
                   mean=[0.2], std=[0.3])
    g, d = spec.build()
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    train = ImageDataset(images=torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8),
                         labels=torch.arange(40) % 10, classes=spec.classes)
    params = from_dict(DistillParams, {"batch_size": 8, "pool": ["convnet3"], "pool_width": 4, "pool_steps": 1,
                                       "device": "cpu", **overrides}, "distill")
    return Distiller(params, spec, g, d, opt_g, opt_d, train, torch.device("cpu"), lam=0.01), spec


@pytest.mark.parametrize("loss", ["skd", "skd-nostand", "dim-mse"])
def test_matching_gradient_reaches_generator_only(loss):
    distiller, spec = tiny_distiller(loss=loss)
    distiller.pool.draw(new_epoch=True)
    idx = distiller.batcher.next()
    y = distiller.train.labels[idx]
    fake = distiller.g(torch.randn(len(idx), spec.z_dim), y)
    term = distiller._matching_term(fake, idx)
    distiller.g.zero_grad(set_to_none=True)
    term.backward()
    grads = [p.grad for p in distiller.g.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in distiller.pool.model.parameters()), "pool model must not learn from L_SKD"
    assert all(p.grad is None for p in distiller.d.parameters())


def test_gan_only_control_never_builds_a_pool():
    distiller, _ = tiny_distiller(loss="gan-only")
    losses = distiller.step()
    assert "loss_match" not in losses and distiller.pool.live == {}


def test_per_step_sampling_keeps_one_live_model_per_architecture():
    distiller, _ = tiny_distiller(pool=["convnet3", "alexnet"], pool_sampling="step")
    for _ in range(8):
        distiller.step()
    assert set(distiller.pool.live) == {name for name, n in distiller.pool.draws.items() if n > 0}
    assert sum(distiller.pool.draws.values()) == 8


def test_per_epoch_sampling_redraws_only_at_epoch_start():
    distiller, _ = tiny_distiller(pool=["convnet3", "alexnet"])   # 40 images / batch 8 = 5 steps per epoch
    for _ in range(10):
        distiller.step()
    assert sum(distiller.pool.draws.values()) == 2 and len(distiller.pool.live) == 1


def test_paper_lambdas():
    assert default_lambda("skd", "mnist") == 0.001
    assert default_lambda("skd", "fashion-mnist") == 0.01
    assert default_lambda("skd-nostand", "cifar10") == 0.01
    assert default_lambda("dim-mse", "mnist") == 0.01


def test_gradient_norms_are_measured_without_changing_training():
    """grad_norm_every logs |∂L_adv/∂x| and |∂(λ·L_match)/∂x| at G's output; the weights end up identical."""
    measured, _ = tiny_distiller(grad_norm_every=2)
    plain, _ = tiny_distiller()
    logs = []
    for _ in range(4):
        torch.manual_seed(len(logs))
        logs.append(measured.step())
        torch.manual_seed(len(logs) - 1)
        plain.step()
    assert ["grad_ratio" in row for row in logs] == [False, True, False, True]
    row = logs[1]
    assert row["grad_adv"] > 0 and row["grad_match"] > 0
    assert row["grad_ratio"] == pytest.approx(row["grad_match"] / row["grad_adv"])
    for a, b in zip(measured.g.parameters(), plain.g.parameters()):
        assert torch.equal(a, b)


def test_gradient_norm_ratio_scales_with_lambda():
    """The matching gradient is linear in λ: ten times λ, ten times the norm (same state, same batch)."""
    ratios = []
    for lam in (0.01, 0.1):
        distiller, _ = tiny_distiller(grad_norm_every=1)
        distiller.lam = lam
        torch.manual_seed(0)
        ratios.append(distiller.step()["grad_match"])
    assert ratios[1] == pytest.approx(10 * ratios[0], rel=1e-4)
