"""DiffAugment on the critic (`d_augment`): differentiable, applied to real and fake alike, deterministic, and
validated; the adversarial step itself lives in skdd.adversarial (shared by pretrain and distill)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from skdd.adversarial import AugmentedCritic, critic_augmentation
from skdd.cli import run_stage
from skdd.errors import SkddError

from helpers import TINY_PRETRAIN, ingest_tiny


class Recorder(nn.Module):
    """A critic that remembers what it was shown and scores it linearly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        score = (x * self.w).flatten(1).sum(1)
        return score, score.unsqueeze(1) * torch.linspace(-1, 1, 10)


def test_augmented_critic_is_differentiable_and_changes_what_d_sees():
    torch.manual_seed(0)
    rec = Recorder()
    critic = AugmentedCritic(rec, critic_augmentation("cutout"))
    x = torch.ones(4, 1, 28, 28, requires_grad=True)
    score, _ = critic(x)
    score.sum().backward()
    seen = rec.seen[-1]
    assert (seen == 0).any(dim=(1, 2, 3)).all()                 # every sample got its own cut-out patch
    assert not torch.equal(seen[0], seen[1])                      # per-sample parameters
    assert torch.equal(x.grad, (seen != 0).float())               # the gradient flows through the augmentation
    assert list(critic.parameters()) == list(rec.parameters())   # no parameters of its own


def test_real_and_fake_go_through_the_same_policy_in_a_gan_step():
    from skdd.adversarial import gan_step
    from skdd.gan import GanSpec

    torch.manual_seed(0)
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="t", mean=[0.5], std=[0.5])
    g, _ = spec.build()
    rec = Recorder()
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(rec.parameters())
    x = torch.ones(4, 1, 28, 28)
    y = torch.arange(4)
    gan_step(g, rec, opt_g, opt_d, x, y, spec, 0.0, torch.device("cpu"), False, d_aug=critic_augmentation("cutout"))
    # G's step (fake), then D's step: real, fake and the gradient penalty's mix; every one was cut out
    assert len(rec.seen) == 4 and all((s == 0).any(dim=(1, 2, 3)).all() for s in rec.seen)
    assert not (rec.seen[1] == 1).all()                            # the real batch of ones was augmented too


def test_bad_policy_is_one_line():
    with pytest.raises(SkddError, match=r"pretrain\.d_augment: unknown augmentation op 'jitter'"):
        critic_augmentation("color_jitter", "pretrain")


def test_pretrain_with_d_augment_is_deterministic_and_differs_from_without(tmp_path):
    data = ingest_tiny(tmp_path)
    outs = {}
    for name, extra in (("a", ["d_augment=color_crop_cutout"]), ("b", ["d_augment=color_crop_cutout"]), ("off", [])):
        outs[name] = tmp_path / name
        run_stage("pretrain", output=str(outs[name]), inputs={"dataset": str(data)},
                  overrides=TINY_PRETRAIN + ["steps=3"] + extra)
    weights = {k: load_file(str(v / "discriminator.safetensors")) for k, v in outs.items()}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert any(not torch.equal(weights["a"][k], weights["off"][k]) for k in weights["a"])
