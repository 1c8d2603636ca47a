"""The generator's quality probe (skdd.probe): the Fréchet distance against hand-computed values, CAS and FD that
tell a class-faithful generator from a collapsed one, and a probe that never changes training."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from skdd.errors import SkddError
from skdd.probe import GeneratorProbe, feature_stats, frechet_distance
from skdd.stages.common import load_dataset
from skdd.stages.registry import run_stage

from helpers import TINY_PRETRAIN, ingest_tiny


def test_frechet_distance_hand_computed():
    # 1-D: (μ1 − μ2)² + (σ1 − σ2)² = 9 + (2 − 1)²
    assert frechet_distance(torch.tensor([0.0]), torch.tensor([[4.0]]), torch.tensor([3.0]),
                            torch.tensor([[1.0]])) == pytest.approx(10.0)
    # diagonal: Σ (√a − √b)² per axis plus the squared mean gap: 5 + (2 − 1)² + (3 − 1)²
    assert frechet_distance(torch.zeros(2), torch.diag(torch.tensor([4.0, 9.0])), torch.tensor([1.0, 2.0]),
                            torch.eye(2)) == pytest.approx(10.0)
    # a rotated covariance against itself is 0 (the cross term needs the symmetric square root, not a diagonal)
    r = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    cov = r @ torch.diag(torch.tensor([5.0, 0.5])) @ r.T
    assert frechet_distance(torch.ones(2), cov, torch.ones(2), cov) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats_are_the_sample_mean_and_unbiased_covariance():
    f = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    mu, cov = feature_stats(f)
    assert torch.allclose(mu, torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert torch.allclose(cov, torch.tensor([[2.0, 2.0], [2.0, 2.0]], dtype=torch.float64))


class TemplateG(nn.Module):
    """A 'generator' that draws each class's mean training image (faithful) or one image for all (collapsed)."""

    def __init__(self, templates: torch.Tensor, z_dim: int):
        super().__init__()
        self.register_buffer("templates", templates)
        self.z_dim = z_dim

    def forward(self, z, y):
        return self.templates[y] + 0.05 * z[:, :1, None, None]


@pytest.fixture(scope="module")
def probe_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    data_path = ingest_tiny(tmp, n_per_class=16, val_per_class=4)
    teacher = tmp / "teacher"
    run_stage("teacher", output=str(teacher), inputs={"dataset": str(data_path)}, overrides=["width=8", "epochs=4"])
    return tmp, data_path, teacher


def test_probe_tells_a_faithful_generator_from_a_collapsed_one(probe_setup):
    from skdd.gan_artifact import GanSpec
    from skdd.stages.teacher import load_teacher

    _, data_path, teacher_path = probe_setup
    data = load_dataset(data_path, splits=("train", "val"))
    cpu = torch.device("cpu")
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=list(data.train.classes), dataset="tiny",
                   mean=data.info["mean"], std=data.info["std"])
    x = data.train.images.float() / 127.5 - 1                     # the GAN's [-1, 1] range
    means = torch.stack([x[data.train.labels == c].mean(0) for c in range(10)])
    probe = GeneratorProbe(spec, data.val, load_teacher(teacher_path, cpu), cpu, per_class=8, steps=60, seed=0)
    faithful = probe(TemplateG(means, 16), step=1)
    collapsed = probe(TemplateG(means[[3] * 10], 16), step=1)
    assert faithful["probe_cas"] >= 80 and collapsed["probe_cas"] <= 20          # chance is 10
    assert faithful["probe_fd"] < collapsed["probe_fd"]
    assert faithful == {**probe(TemplateG(means, 16), step=1), "probe_seconds": faithful["probe_seconds"]}
    state = torch.get_rng_state()
    probe(TemplateG(means, 16), step=2)
    assert torch.equal(state, torch.get_rng_state())               # the training RNG is untouched


def test_probe_changes_no_training_step_and_lands_in_curves_and_manifest(probe_setup, tmp_path):
    _, data_path, teacher = probe_setup
    outs = {}
    for name, extra in (("probed", ["probe_every=2", "probe_per_class=2", "probe_steps=3"]), ("plain", [])):
        outs[name] = tmp_path / name
        run_stage("pretrain", output=str(outs[name]), inputs={"dataset": str(data_path), "teacher": str(teacher)},
                  overrides=TINY_PRETRAIN + ["steps=3", "log_every=3", "ema_decay=0.9"] + extra)
    for f in ("generator.safetensors", "generator_ema.safetensors", "discriminator.safetensors"):
        a, b = load_file(str(outs["probed"] / f)), load_file(str(outs["plain"] / f))
        assert all(torch.equal(a[k], b[k]) for k in a), f
    rows = list(csv.DictReader(open(outs["probed"] / "curves.csv")))
    assert [r["step"] for r in rows if r["probe_cas"]] == ["2", "3"]          # every 2 steps and the last
    probe_csv = list(csv.DictReader(open(outs["probed"] / "probe.csv")))     # what dvc plots draws
    assert [r["step"] for r in probe_csv] == ["2", "3"] and all(r["probe_fd"] for r in probe_csv)
    assert not (outs["plain"] / "probe.csv").exists()
    manifest = json.loads((outs["probed"] / "manifest.json").read_text())
    assert 0 <= manifest["metrics"]["probe_cas_final"] <= 100 and manifest["metrics"]["probe_seconds_mean"] > 0
    assert [i["name"] for i in manifest["inputs"]] == ["dataset", "teacher"]   # the teacher is in the lineage
    plain = json.loads((outs["plain"] / "manifest.json").read_text())
    assert "probe_cas_final" not in plain["metrics"]


def test_distill_probes_too(probe_setup, tmp_path):
    from helpers import TINY_DISTILL

    _, data_path, teacher = probe_setup
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data_path)}, overrides=TINY_PRETRAIN + ["steps=1"])
    out = tmp_path / "dist"
    run_stage("distill", output=str(out), inputs={"dataset": str(data_path), "gan": str(gan), "teacher": str(teacher)},
              overrides=TINY_DISTILL + ["steps=2", "probe_every=1", "probe_per_class=2", "probe_steps=2"])
    rows = list(csv.DictReader(open(out / "curves.csv")))
    assert all(r["probe_cas"] and r["probe_fd"] for r in rows) and len(rows) == 2


def test_probe_without_teacher_logs_cas_alone_and_without_val_split_is_one_line(probe_setup, tmp_path, capsys):
    _, data_path, teacher = probe_setup
    run_stage("pretrain", output=str(tmp_path / "a"), inputs={"dataset": str(data_path)},
              overrides=TINY_PRETRAIN + ["steps=2", "probe_every=2", "probe_per_class=2", "probe_steps=2"])
    assert "probe without a teacher input: CAS only" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "a" / "probe.csv")))
    assert list(rows[0]) == ["step", "probe_cas", "probe_seconds"]
    metrics = json.loads((tmp_path / "a" / "manifest.json").read_text())["metrics"]
    assert metrics["probe_fd_final"] is None and metrics["probe_cas_final"] is not None
    no_val = ingest_tiny(tmp_path, val_per_class=0)
    with pytest.raises(SkddError, match="no validation split"):
        run_stage("pretrain", output=str(tmp_path / "b"), inputs={"dataset": str(no_val), "teacher": str(teacher)},
                  overrides=TINY_PRETRAIN + ["steps=2", "probe_every=2"])
    assert not (tmp_path / "b").exists()


def test_probe_select_publishes_the_best_probed_weights(probe_setup, tmp_path, monkeypatch):
    """The published G is the one of the step with the best CAS (scripted here to be step 2 of 4): the same bytes
    as a run stopped at that step, while D stays the last step's."""
    _, data_path, teacher = probe_setup
    scores = iter([10.0, 50.0, 20.0, 30.0])
    monkeypatch.setattr(GeneratorProbe, "_cas", lambda self, images, labels: next(scores))
    probe = ["probe_every=1", "probe_per_class=2", "probe_steps=3"]
    sel = tmp_path / "sel"
    run_stage("pretrain", output=str(sel), inputs={"dataset": str(data_path), "teacher": str(teacher)},
              overrides=TINY_PRETRAIN + ["steps=4", "checkpoint_every=2", "probe_select=true"] + probe)
    assert [float(r["probe_cas"]) for r in csv.DictReader(open(sel / "probe.csv"))] == [10, 50, 20, 30]
    assert json.loads((sel / "manifest.json").read_text())["resolved"]["probe_selected_step"] == 2
    ref = tmp_path / "ref"
    run_stage("pretrain", output=str(ref), inputs={"dataset": str(data_path)},
              overrides=TINY_PRETRAIN + ["steps=2", "checkpoint_every=2"])
    final = tmp_path / "final"
    run_stage("pretrain", output=str(final), inputs={"dataset": str(data_path)},
              overrides=TINY_PRETRAIN + ["steps=4", "checkpoint_every=2"])
    a, b, c = (load_file(str(p / "generator.safetensors")) for p in (sel, ref, final))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)                  # not the last step's
    d_sel, d_final = (load_file(str(p / "discriminator.safetensors")) for p in (sel, final))
    assert all(torch.equal(d_sel[k], d_final[k]) for k in d_sel)        # D stays the last step's


def test_probe_best_weights_survive_a_checkpoint_round_trip():
    from skdd.gan_artifact import GanSpec

    probe = GeneratorProbe.__new__(GeneratorProbe)
    probe.select, probe.best = True, {"step": 3, "cas": 41.5, "state": {"w": torch.arange(4.0)}}
    other = GeneratorProbe.__new__(GeneratorProbe)
    other.select, other.best = True, None
    other.load_state_tensors(probe.state_tensors())
    assert other.best["step"] == 3 and other.best["cas"] == pytest.approx(41.5)
    assert torch.equal(other.best["state"]["w"], torch.arange(4.0))
    spec = GanSpec(in_channels=1, image_size=28, num_classes=10, g_width=4, d_width=4, z_dim=16,
                   conditioning="overwrite", classes=[str(i) for i in range(10)], dataset="t", mean=[0.5], std=[0.5])
    g = spec.build_generator()
    probe.best["state"] = {k: torch.zeros_like(v) for k, v in g.state_dict().items()}
    assert probe.publish_best(g) == 3 and all(not v.any() for v in g.state_dict().values())


def test_probe_select_without_the_probe_is_refused(probe_setup, tmp_path):
    _, data_path, _ = probe_setup
    with pytest.raises(SkddError, match=r"probe_select: needs the probe"):
        run_stage("pretrain", output=str(tmp_path / "x"), inputs={"dataset": str(data_path)},
                  overrides=TINY_PRETRAIN + ["steps=2", "probe_select=true"])


def test_probe_select_resumes_with_the_best_kept_in_the_checkpoint(probe_setup, tmp_path, monkeypatch):
    """Best at step 2, a crash at step 3's probe, a resume from step 2's checkpoint: step 2 is still published
    (a probe that forgot its best on resume would pick step 4)."""
    _, data_path, teacher = probe_setup
    scores = iter([10.0, 50.0, RuntimeError("crash"), 20.0, 30.0])

    def scripted(self, images, labels):
        value = next(scores)
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(GeneratorProbe, "_cas", scripted)
    args = dict(output=str(tmp_path / "sel"), inputs={"dataset": str(data_path), "teacher": str(teacher)},
                overrides=TINY_PRETRAIN + ["steps=4", "checkpoint_every=2", "probe_select=true", "probe_every=1",
                                           "probe_per_class=2", "probe_steps=3"])
    with pytest.raises(RuntimeError, match="crash"):
        run_stage("pretrain", **args)
    run_stage("pretrain", **args)
    assert json.loads((tmp_path / "sel" / "manifest.json").read_text())["resolved"]["probe_selected_step"] == 2
