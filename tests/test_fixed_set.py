"""teacher → sample (over-generate and select) → refine on tiny real artifacts: what each writes, that the
teacher never trains on val or test images, resume after SIGKILL, tampered inputs and bad params."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import skdd.stages.teacher as teacher_stage
from skdd import lineage
from skdd.stages.registry import run_stage
from skdd.data.parquet import read_shards
from skdd.errors import SkddError
from skdd.storage import staging_dir

from helpers import TINY_PRETRAIN, ingest_tiny, kill_after_checkpoint, one_line_error, run_cli, skdd_cmd

pytestmark = pytest.mark.integration

TEACHER = ["width=8", "epochs=2", "device=cpu"]
SAMPLE = ["ipc=2", "candidates_per_class=6", "selection=confidence+coverage", "device=cpu"]
REFINE = ["steps=4", "real_per_class=4", "embed_width=4", "device=cpu", "log_every=1", "checkpoint_every=2"]


@pytest.fixture(autouse=True)
def _no_params_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed")
    paths = {"root": root, "data": ingest_tiny(root, n_per_class=14)}
    paths["teacher"] = root / "teacher"
    run_stage("teacher", output=str(paths["teacher"]), inputs={"dataset": str(paths["data"])}, overrides=TEACHER)
    paths["gan"] = root / "gan"
    run_stage("pretrain", output=str(paths["gan"]), inputs={"dataset": str(paths["data"])},
              overrides=TINY_PRETRAIN + ["steps=3", "ema_decay=0.9"])
    paths["sample"] = root / "sample"
    run_stage("sample", output=str(paths["sample"]), inputs={"gan": str(paths["gan"]), "teacher": str(paths["teacher"])},
              overrides=SAMPLE)
    paths["refine"] = root / "refine"
    run_stage("refine", output=str(paths["refine"]), overrides=REFINE,
              inputs={"dataset": str(paths["data"]), "synthetic": str(paths["sample"]), "gan": str(paths["gan"])})
    return paths


def test_teacher_artifact_records_val_accuracy_and_its_parent(art):
    manifest = lineage.verify_artifact(art["teacher"], "classifier")
    assert manifest["stage"] == "teacher" and manifest["metrics"]["accuracy_on"] == "val"
    assert 0.0 <= manifest["metrics"]["val_accuracy"] <= 100.0
    assert manifest["inputs"][0]["manifest_sha256"] == lineage.sha256_file(art["data"] / "manifest.json")
    loaded = teacher_stage.load_teacher(art["teacher"], torch.device("cpu"))
    feats, probs = loaded.features_and_probs(read_shards(art["data"] / "val").images)
    assert feats.shape[0] == probs.shape[0] == 20 and torch.allclose(probs.sum(1), torch.ones(20))


def test_teacher_never_sees_val_or_test_images(art, tmp_path, monkeypatch):
    seen = []
    real_train = teacher_stage.train_strict

    def spy(cfg, train_set, held_out, *args, **kwargs):
        seen.append(train_set)
        return real_train(cfg, train_set, held_out, *args, **kwargs)

    monkeypatch.setattr(teacher_stage, "train_strict", spy)
    run_stage("teacher", output=str(tmp_path / "t"), inputs={"dataset": str(art["data"])}, overrides=TEACHER)
    (trained,) = seen
    rows = {bytes(x.numpy().tobytes()) for x in trained.images}
    train = read_shards(art["data"] / "train")
    assert rows == {bytes(x.numpy().tobytes()) for x in train.images}
    for split in ("val", "test"):
        held = {bytes(x.numpy().tobytes()) for x in read_shards(art["data"] / split).images}
        assert held and not rows & held, f"teacher trained on {split} images"


def test_sample_over_generates_and_keeps_ipc_by_the_teacher(art):
    manifest = lineage.verify_artifact(art["sample"], "dataset")
    ds = read_shards(art["sample"] / "train")
    assert ds.class_counts() == [2] * 10
    assert [r["name"] for r in manifest["inputs"]] == ["gan", "teacher"]
    assert manifest["metrics"]["candidates"] == 60 and manifest["dataset"]["generator_weights"] == "ema"
    sel = json.loads((art["sample"] / "selection.json").read_text())
    assert sel["selection"] == "confidence+coverage" and sel["candidates_per_class"] == 6
    assert len(sel["kept_candidate_indices"]) == 20 and len(sel["teacher_own_label_probability"]) == 20
    kept = sel["kept_candidate_indices"]
    assert all(6 * c <= i < 6 * (c + 1) for c in range(10) for i in kept[2 * c:2 * c + 2])   # class-major
    latents = load_file(str(art["sample"] / "latents.safetensors"))
    assert latents["z"].shape == (20, 100) and torch.equal(latents["labels"], ds.labels)
    assert (art["sample"] / "grid.png").is_file()


def test_sample_without_selection_needs_no_teacher_and_matches_the_candidates(art, tmp_path):
    out = tmp_path / "plain"
    run_stage("sample", output=str(out), inputs={"gan": str(art["gan"])}, overrides=["ipc=2", "device=cpu"])
    manifest = lineage.read_manifest(out)
    assert [r["name"] for r in manifest["inputs"]] == ["gan"]
    assert read_shards(out / "train").class_counts() == [2] * 10


def test_refine_keeps_labels_and_schema_and_records_its_parents(art):
    manifest = lineage.verify_artifact(art["refine"], "dataset")
    before, after = read_shards(art["sample"] / "train"), read_shards(art["refine"] / "train")
    assert torch.equal(before.labels, after.labels) and after.images.shape == before.images.shape
    assert not torch.equal(before.images, after.images)
    assert [r["name"] for r in manifest["inputs"]] == ["dataset", "synthetic", "gan"]
    assert manifest["dataset"]["refined"] == "latent" and manifest["metrics"]["steps"] == 4
    z0 = load_file(str(art["sample"] / "latents.safetensors"))["z"]
    z1 = load_file(str(art["refine"] / "latents.safetensors"))["z"]
    assert z1.shape == z0.shape and not torch.equal(z0, z1)
    assert (art["refine"] / "curves.csv").read_text().startswith("step,loss_dm")


def test_refine_pixel_space_and_steps_zero(art, tmp_path):
    pix = tmp_path / "pix"
    run_stage("refine", output=str(pix), overrides=REFINE + ["space=pixel"],
              inputs={"dataset": str(art["data"]), "synthetic": str(art["sample"])})
    assert read_shards(pix / "train").class_counts() == [2] * 10
    assert lineage.read_manifest(pix)["dataset"]["refined"] == "pixel"
    same = tmp_path / "same"
    run_stage("refine", output=str(same), overrides=["steps=0", "space=pixel", "device=cpu"],
              inputs={"dataset": str(art["data"]), "synthetic": str(art["sample"])})
    assert torch.equal(read_shards(same / "train").images, read_shards(art["sample"] / "train").images)


def test_bad_params_and_missing_inputs_are_one_line(art, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["sample", "--gan", str(art["gan"]), "--out", str(out), "--set", "device=cpu"]
    one_line_error(capsys, base + ["--set", "candidates_per_class=1", "--set", "ipc=2"],
                   "sample.candidates_per_class", "fewer than ipc")
    one_line_error(capsys, base + ["--set", "selection=best"], "sample.selection", "best")
    one_line_error(capsys, base + ["--set", "truncation=0"], "sample.truncation")
    one_line_error(capsys, base + ["--set", "selection=coverage", "--set", "candidates_per_class=20"],
                   "sample.selection", "--teacher")
    one_line_error(capsys, ["refine", "--dataset", str(art["data"]), "--synthetic", str(art["sample"]), "--out",
                            str(out), "--set", "device=cpu"], "refine.space", "--gan")
    one_line_error(capsys, ["refine", "--dataset", str(art["data"]), "--synthetic", str(art["teacher"]), "--out",
                            str(out), "--set", "space=pixel"], "expected a dataset artifact")
    one_line_error(capsys, ["teacher", "--dataset", str(art["data"]), "--out", str(out), "--set", "arch=lenet5"],
                   "teacher.arch", "lenet5")
    assert not out.exists()


def test_truncated_noise_stays_inside_psi_is_seeded_and_recorded(art, tmp_path):
    """sample.truncation: every noise entry inside [-ψ, ψ] (the untruncated draw has entries beyond it), the same
    bytes for the same seed, the ψ in selection.json and the params; null leaves today's N(0, 1) draw unchanged."""
    def draw(out, *extra):
        run_stage("sample", output=str(out), inputs={"gan": str(art["gan"])},
                  overrides=["ipc=20", "device=cpu", *extra])
        return load_file(str(out / "latents.safetensors"))["z"]

    plain, cut, again = draw(tmp_path / "plain"), draw(tmp_path / "cut", "truncation=0.5"), \
        draw(tmp_path / "again", "truncation=0.5")
    assert plain.abs().max() > 0.5 and cut.abs().max() <= 0.5 and torch.equal(cut, again)
    assert cut.std() < plain.std()
    assert json.loads((tmp_path / "cut" / "selection.json").read_text())["truncation"] == 0.5
    assert lineage.read_manifest(tmp_path / "cut")["params"]["truncation"] == 0.5
    from skdd.gan_artifact import noise

    torch.manual_seed(0)       # null is the plain N(0, 1) draw, as before the option existed
    a = noise(5, 7, torch.device("cpu"))
    torch.manual_seed(0)
    assert torch.equal(a, torch.randn(5, 7))


def test_tampered_teacher_and_latents_are_refused(art, tmp_path, capsys):
    import shutil

    bad_teacher = tmp_path / "teacher"
    shutil.copytree(art["teacher"], bad_teacher)
    weights = bad_teacher / "teacher.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    out = tmp_path / "o"
    one_line_error(capsys, ["sample", "--gan", str(art["gan"]), "--teacher", str(bad_teacher), "--out", str(out)]
                   + sum((["--set", o] for o in SAMPLE), []), "teacher.safetensors", "sha256")
    bad_set = tmp_path / "set"
    shutil.copytree(art["sample"], bad_set)
    (bad_set / "latents.safetensors").write_bytes(b"not safetensors")
    one_line_error(capsys, ["refine", "--dataset", str(art["data"]), "--synthetic", str(bad_set), "--gan",
                            str(art["gan"]), "--out", str(out)] + sum((["--set", o] for o in REFINE), []),
                   "latents.safetensors", "sha256")
    assert not out.exists()


@pytest.mark.parametrize("stage", ["teacher", "refine"])
def test_resume_after_sigkill_is_bit_identical(art, tmp_path, stage):
    if stage == "teacher":
        inputs, overrides = {"dataset": art["data"]}, ["width=8", "epochs=20", "device=cpu"]
        weights, min_step = "teacher.safetensors", 2
    else:
        inputs = {"dataset": art["data"], "synthetic": art["sample"], "gan": art["gan"]}
        overrides, weights, min_step = REFINE[:-1] + ["steps=80", "checkpoint_every=3"], "latents.safetensors", 6
    ref = tmp_path / "ref"
    run_cli(skdd_cmd(stage, ref, inputs, overrides))
    out = tmp_path / "out"
    kill_after_checkpoint(skdd_cmd(stage, out, inputs, overrides), out, min_step=min_step)
    assert (staging_dir(out) / "checkpoints").is_dir()
    result = run_cli(skdd_cmd(stage, out, inputs, overrides))
    assert "resuming" in result.stdout
    a, b = load_file(str(ref / weights)), load_file(str(out / weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert lineage.sha256_file(ref / "train" / "part-00000.parquet" if stage == "refine" else ref / weights) == \
        lineage.sha256_file(out / "train" / "part-00000.parquet" if stage == "refine" else out / weights)


def test_select_baselines_refuse_a_teacher_of_another_shape(art, tmp_path):
    data3 = ingest_tiny(tmp_path, n_per_class=14, channels=3, size=32)
    with pytest.raises(SkddError, match="teacher was trained for 1x28x28"):
        run_stage("select", output=str(tmp_path / "s"), inputs={"dataset": str(data3), "teacher": str(art["teacher"])},
                  overrides=["method=kcenter", "ipc=2", "device=cpu"])
