"""DiffAugment on the critic (`d_augment`): differentiable, applied to real and fake alike, deterministic, and
validated; the adversarial step itself lives in skdd.adversarial (shared by pretrain and distill)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from skdd.adversarial import AugmentedCritic, critic_augmentation
from skdd.stages.registry import run_stage
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
    from skdd.gan_artifact import GanSpec

    torch.manual_seed(0)
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="t", mean=[0.5], std=[0.5])
    g, _ = spec.build()
    rec = Recorder()
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(rec.parameters())
    x = torch.ones(4, 1, 28, 28)
    y = torch.arange(4)
    gan_step(g, rec, opt_g, opt_d, x, y, spec, 10.0, torch.device("cpu"), False, d_aug=critic_augmentation("cutout"))
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


def test_balanced_lambda_hits_its_target_ratio_on_a_toy_model():
    from skdd.adversarial import generator_forward, generator_update
    from skdd.gan_artifact import GanSpec

    torch.manual_seed(0)
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="t", mean=[0.5], std=[0.5])
    g, d = spec.build()
    opt_g = torch.optim.Adam(g.parameters())
    y, cpu = torch.arange(4), torch.device("cpu")

    def step(**kwargs):
        fake, loss_adv = generator_forward(g, d, spec, y, cpu, False)
        return generator_update(opt_g, d, fake, loss_adv, 1e-3 * fake.pow(2).mean(), grad_norms=True, **kwargs)

    for ratio in (0.1, 1.0):                        # a tiny matching term, as SKD's is
        out = step(target_ratio=ratio)
        assert out["grad_ratio"] == pytest.approx(ratio, rel=1e-4)
        assert out["lambda"] > 1.0                                     # it had to scale the tiny term up
        assert all(p.requires_grad for p in d.parameters())            # D is trainable again after G's step
    fixed = step()
    assert "lambda" not in fixed and fixed["grad_ratio"] < 0.1


def test_distill_balanced_records_the_lambda_it_used(tmp_path):
    import csv
    import json

    data = ingest_tiny(tmp_path)
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)}, overrides=TINY_PRETRAIN + ["steps=2"])
    out = tmp_path / "dist"
    from helpers import TINY_DISTILL

    run_stage("distill", output=str(out), inputs={"dataset": str(data), "gan": str(gan)},
              overrides=TINY_DISTILL + ["steps=4", "log_every=1", "lambda_mode=balanced", "target_ratio=0.3",
                                        "grad_norm_every=1"])
    rows = list(csv.DictReader(open(out / "curves.csv")))
    assert len(rows) == 4 and all(float(r["grad_ratio"]) == pytest.approx(0.3, rel=1e-3) for r in rows)
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["lambda_mode"] == "balanced"
    assert metrics["lambda"] == pytest.approx(sorted(float(r["lambda"]) for r in rows)[2], rel=1e-5)   # the median


def test_bf16_autocast_reaches_the_cpu_only_when_asked():
    """amp on CUDA as before; on the CPU only with cpu_amp (opt-in: it changes the numbers), and then G and D
    really run in bf16."""
    from skdd.device import amp_on, autocast

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [amp_on(cuda, True), amp_on(cuda, False), amp_on(cuda, True, cpu=True)] == [True, False, True]
    assert [amp_on(cpu, True), amp_on(cpu, True, cpu=True), amp_on(cpu, False, cpu=True)] == [False, True, False]
    conv = nn.Conv2d(1, 2, 3)
    with autocast(cpu, amp_on(cpu, True)):
        assert conv(torch.ones(1, 1, 5, 5)).dtype == torch.float32
    with autocast(cpu, amp_on(cpu, True, cpu=True)):
        assert conv(torch.ones(1, 1, 5, 5)).dtype == torch.bfloat16


def test_pretrain_with_cpu_amp_trains_in_bf16_and_records_it(tmp_path):
    data = ingest_tiny(tmp_path)
    out = {}
    for flag in ("false", "true"):
        out[flag] = tmp_path / f"gan-{flag}"
        run_stage("pretrain", output=str(out[flag]), inputs={"dataset": str(data)},
                  overrides=TINY_PRETRAIN + ["steps=2", f"cpu_amp={flag}"])
    from skdd import lineage

    assert lineage.read_manifest(out["true"])["params"]["cpu_amp"] is True
    a, b = load_file(str(out["false"] / "generator.safetensors")), load_file(str(out["true"] / "generator.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)          # bf16 arithmetic moved the weights
    assert all(torch.isfinite(v).all() for v in b.values())
