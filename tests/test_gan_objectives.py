"""The CGAN objectives (`pretrain.gan_loss`): hinge losses against hand-computed values, the projection critic's
spectral norm and label conditioning, and the choice travelling in the GAN artifact through distill and sample."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from skdd.errors import SkddError
from skdd.gan_artifact import GanSpec, read_spec
from skdd.losses import GAN_OBJECTIVES, hinge_critic_loss, hinge_generator_loss
from skdd.models import create_model
from skdd.stages.registry import run_stage

from helpers import TINY_DISTILL, TINY_PRETRAIN, ingest_tiny


class TableCritic(nn.Module):
    """D(x, y) = x.mean() + table[y]: scores chosen by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table))

    def forward(self, x, y):
        return x.flatten(1).mean(1) + self.table[y]


def test_hinge_critic_loss_hand_computed():
    critic = TableCritic([0.0, 2.0, -0.5])
    real, y_real = torch.zeros(2, 1, 2, 2), torch.tensor([1, 2])       # scores 2.0, -0.5
    fake, y_fake = torch.zeros(2, 1, 2, 2), torch.tensor([0, 2])       # scores 0.0, -0.5
    # real: max(0, 1-2)=0, max(0, 1+0.5)=1.5 -> 0.75 ; fake: max(0, 1+0)=1, max(0, 1-0.5)=0.5 -> 0.75
    assert hinge_critic_loss(critic, real, y_real, fake, y_fake, gp_weight=10.0).item() == pytest.approx(1.5)


def test_hinge_generator_loss_hand_computed_and_flows_to_the_images():
    critic = TableCritic([0.0, 2.0, -0.5])
    fake = torch.full((2, 1, 2, 2), 0.25, requires_grad=True)
    loss = hinge_generator_loss(critic, fake, torch.tensor([1, 2]))     # -(2.25 + -0.25)/2
    assert loss.item() == pytest.approx(-1.0)
    loss.backward()
    assert torch.allclose(fake.grad, torch.full_like(fake, -1 / 8))     # -1/2 (batch mean) * 1/4 (pixel mean)


def test_the_critic_loss_does_not_train_g():
    critic = TableCritic([0.0, 1.0])
    fake = torch.ones(2, 1, 2, 2, requires_grad=True)
    hinge_critic_loss(critic, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), fake, torch.tensor([0, 1])).backward()
    assert fake.grad is None and critic.table.grad is not None


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_projection_critic_is_spectrally_normalised_and_label_conditioned(size, channels):
    torch.manual_seed(0)
    d = create_model("projection-discriminator", in_channels=channels, num_classes=10, image_size=size, width=8)
    x = torch.randn(4, channels, size, size)
    for _ in range(30):                        # power iterations converge in training mode
        d(x, torch.zeros(4, dtype=torch.long))
    d.eval()
    for m in d.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, rel=0.05), m
    out_a, out_b = d(x, torch.zeros(4, dtype=torch.long)), d(x, torch.full((4,), 3))
    assert out_a.shape == (4,) and not torch.allclose(out_a, out_b)      # the label changes the score


class TwoHeadCritic(nn.Module):
    """src = the image's mean; class logits = (mean, −mean): scores chosen by hand."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return m, torch.stack([m, -m], 1)


def test_real_only_class_head_loss_hand_computed():
    """wgan-gp-ac-real: Wasserstein estimate + the class head's CE on real images only, whatever the fakes'
    labels; DiM's loss adds the CE of the fakes under their requested labels."""
    import math

    from skdd.losses import discriminator_loss, discriminator_loss_real_ac

    real, fake = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)       # src 0 and 1; logits (0, 0) and (1, −1)
    y_real = torch.tensor([0, 1])
    for y_fake in (torch.tensor([0, 0]), torch.tensor([1, 1])):
        loss = discriminator_loss_real_ac(TwoHeadCritic(), real, y_real, fake, y_fake, gp_weight=0.0)
        assert loss.item() == pytest.approx(1.0 + math.log(2))          # (1 − 0) + CE(uniform) = 1 + ln 2
    dim = discriminator_loss(TwoHeadCritic(), real, y_real, fake, torch.tensor([1, 1]), gp_weight=0.0)
    assert dim.item() == pytest.approx(1.0 + math.log(2) + math.log(1 + math.exp(2)))   # + CE((1, −1), class 1)
    assert GAN_OBJECTIVES["wgan-gp-ac-real"].generator_loss is GAN_OBJECTIVES["wgan-gp-ac"].generator_loss


def test_every_objective_names_a_registered_discriminator():
    from skdd.models import list_models

    assert set(o.discriminator for o in GAN_OBJECTIVES.values()) <= set(list_models("discriminator"))


def test_hinge_proj_step_has_no_gradient_penalty():
    from skdd.adversarial import gan_step

    torch.manual_seed(0)
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="t", mean=[0.5], std=[0.5],
                   gan_loss="hinge-proj")
    g, d = spec.build()
    calls = []
    d.register_forward_hook(lambda m, inp, out: calls.append(inp[0].requires_grad))
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    x, y = torch.rand(4, 1, 28, 28) * 2 - 1, torch.arange(4)
    losses = gan_step(g, d, opt_g, opt_d, x, y, spec, 10.0, torch.device("cpu"), False)
    assert len(calls) == 3        # G's fake, D's real and fake: no interpolates for a penalty
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_hinge_proj_artifact_through_distill_and_sample(tmp_path):
    data = ingest_tiny(tmp_path)
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)},
              overrides=TINY_PRETRAIN + ["steps=2", "gan_loss=hinge-proj"])
    assert read_spec(gan).gan_loss == "hinge-proj"
    manifest = json.loads((gan / "manifest.json").read_text())
    assert manifest["gan"]["gan_loss"] == "hinge-proj" and manifest["params"]["gan_loss"] == "hinge-proj"
    dist = tmp_path / "dist"
    run_stage("distill", output=str(dist), inputs={"dataset": str(data), "gan": str(gan)},
              overrides=TINY_DISTILL + ["steps=2"])
    assert read_spec(dist).gan_loss == "hinge-proj"          # distill keeps the critic it was given
    teacher = tmp_path / "teacher"
    run_stage("teacher", output=str(teacher), inputs={"dataset": str(data)}, overrides=["width=4", "epochs=1"])
    sample = tmp_path / "sample"
    run_stage("sample", output=str(sample), inputs={"gan": str(dist), "teacher": str(teacher)},
              overrides=["ipc=2", "selection=none", "candidates_per_class=null"])
    assert (sample / "manifest.json").is_file()


def test_spec_without_gan_loss_reads_as_wgan_and_unknown_is_refused(tmp_path):
    spec = dict(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="t", mean=[0.5], std=[0.5])
    (tmp_path / "model.json").write_text(json.dumps(spec))
    assert read_spec(tmp_path).gan_loss == "wgan-gp-ac"     # artifacts made before the choice existed
    (tmp_path / "model.json").write_text(json.dumps({**spec, "gan_loss": "lsgan"}))
    with pytest.raises(SkddError, match="unknown gan_loss 'lsgan'"):
        read_spec(tmp_path)


def test_unknown_gan_loss_param_is_one_line(tmp_path):
    data = ingest_tiny(tmp_path)
    with pytest.raises(SkddError, match="gan_loss"):
        run_stage("pretrain", output=str(tmp_path / "gan"), inputs={"dataset": str(data)},
                  overrides=TINY_PRETRAIN + ["steps=1", "gan_loss=lsgan"])
    assert not (tmp_path / "gan").exists()


def test_n_critic_and_d_lr(tmp_path):
    """n_critic: that many critic steps per generator step, each on the next real batch; d_lr: D's own rate."""
    from skdd.stages.common import load_dataset
    from skdd.stages.pretrain import PretrainParams, Pretrainer

    data = load_dataset(ingest_tiny(tmp_path), splits=("train",))
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=list(data.train.classes), dataset="tiny",
                   mean=data.info["mean"], std=data.info["std"], gan_loss="hinge-proj")
    torch.manual_seed(0)
    p = PretrainParams(device="cpu", batch_size=8, lr=1e-4, d_lr=4e-4, n_critic=3, gan_loss="hinge-proj")
    trainer = Pretrainer(p, spec, data.train, torch.device("cpu"))
    steps = []
    trainer.d.register_forward_hook(lambda m, inp, out: steps.append(inp[0].shape[0]))
    trainer.step()
    assert trainer.batcher.pos == 3                       # three real batches for one generator step
    assert len(steps) == 1 + 2 * 3                        # G's pass, then real and fake for each critic step
    assert trainer.opt_d.param_groups[0]["lr"] == 4e-4 and trainer.opt_g.param_groups[0]["lr"] == 1e-4
    assert PretrainParams().d_lr is None and Pretrainer(PretrainParams(device="cpu", batch_size=8), spec, data.train,
                                                        torch.device("cpu")).opt_d.param_groups[0]["lr"] == 1e-4


def test_cbn_generator_through_distill_sample_and_latent_refine(tmp_path):
    """`conditioning: cbn` lives in the artifact's spec, so every later stage rebuilds the same generator (the
    EMA copy included) and the latent refine still reaches the label through G's body."""
    data = ingest_tiny(tmp_path)
    gan, dist = tmp_path / "gan", tmp_path / "dist"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)},
              overrides=TINY_PRETRAIN + ["steps=2", "conditioning=cbn", "ema_decay=0.9"])
    assert read_spec(gan).conditioning == "cbn"
    run_stage("distill", output=str(dist), inputs={"dataset": str(data), "gan": str(gan)},
              overrides=TINY_DISTILL + ["steps=2"])
    assert read_spec(dist).conditioning == "cbn"
    teacher, sample, refine = tmp_path / "teacher", tmp_path / "sample", tmp_path / "refine"
    run_stage("teacher", output=str(teacher), inputs={"dataset": str(data)}, overrides=["width=4", "epochs=1"])
    run_stage("sample", output=str(sample), inputs={"gan": str(dist), "teacher": str(teacher)},
              overrides=["ipc=2", "selection=none", "candidates_per_class=null"])
    run_stage("refine", output=str(refine), inputs={"dataset": str(data), "synthetic": str(sample), "gan": str(dist)},
              overrides=["steps=2", "real_per_class=2", "embed_width=4", "device=cpu"])
    assert json.loads((refine / "manifest.json").read_text())["stage"] == "refine"


class LinearCritic(nn.Module):
    """D(x) = (w·x, class logits 0): its input gradient is w for every x, so the penalty is (‖w‖ − 1)² exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1) @ self.w, torch.zeros(x.shape[0], 3)


@pytest.mark.parametrize("every", [1, 4])
def test_lazy_gradient_penalty_keeps_the_expected_penalty_and_skips_its_pass(every):
    """Over `every` critic steps (lr 0, so D is the same each step) the lazy penalty adds up to what every-step
    adds: every × weight × (‖w‖ − 1)², with ‖w‖ = 5 here, i.e. every × 10 × 16; steps without it make no
    interpolates pass (two critic calls instead of three)."""
    from skdd.adversarial import lazy_gp_weight
    from skdd.losses import discriminator_loss

    critic = LinearCritic([3.0, 4.0])
    opt = torch.optim.Adam(critic.parameters(), lr=0.0)
    x, y = torch.zeros(2, 1, 1, 2), torch.tensor([0, 1])
    base = 2 * torch.log(torch.tensor(3.0)).item()     # the two CEs of uniform logits over 3 classes
    penalties, calls = [], []
    for _ in range(every):
        before = critic.calls
        loss = discriminator_loss(critic, x, y, x, y, lazy_gp_weight(opt, 10.0, every))
        calls.append(critic.calls - before)
        penalties.append(loss.item() - base)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(penalties) == pytest.approx(every * 10.0 * 16.0)
    assert penalties[0] == pytest.approx(every * 160.0) and all(p == pytest.approx(0.0) for p in penalties[1:])
    assert calls == [3] + [2] * (every - 1)
