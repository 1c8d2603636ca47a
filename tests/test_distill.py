"""The matching term's gradient path inside a real distillation step: it reaches G and nothing else."""

import pytest
import torch

from skdd.config import from_dict
from skdd.data.dataset import ImageDataset
from skdd.gan import GanSpec
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
    distiller, _ = tiny_distiller(loss="none")
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
