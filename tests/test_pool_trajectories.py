"""The pool stage (recorded trajectories) and distill's `pool_source: trajectories`: a deterministic, verified
artifact; draws that follow the seed; a SIGKILLed run of either stage resumes bit-identical; bad inputs refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from skdd import lineage
from skdd.errors import SkddError
from skdd.pool import SNAPSHOT_DIR, TrajectorySpec
from skdd.stages.registry import run_stage
from skdd.storage import staging_dir

from helpers import TINY_DISTILL, TINY_PRETRAIN, ingest_tiny, kill_after_checkpoint, run_cli, skdd_cmd

pytestmark = pytest.mark.integration

POOL = ["width=4", "steps=6", "snapshot_every=3", "batch_size=16", "device=cpu", "log_every=1",
        "archs=[convnet3, resnet10]"]
TRAJ = TINY_DISTILL + ["pool_source=trajectories", "steps=6", "log_every=1"]


@pytest.fixture(autouse=True)
def _no_params_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    paths = {"data": ingest_tiny(root, n_per_class=14), "pool": root / "pool", "gan": root / "gan"}
    run_stage("pool", output=str(paths["pool"]), inputs={"dataset": str(paths["data"])}, overrides=POOL)
    run_stage("pretrain", output=str(paths["gan"]), inputs={"dataset": str(paths["data"])},
              overrides=TINY_PRETRAIN + ["steps=2"])
    return paths


def file_hashes(artifact: Path) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in json.loads((artifact / "manifest.json").read_text())["files"]
            if f["path"].startswith(SNAPSHOT_DIR)}


def curves(artifact: Path) -> list[dict]:
    with open(artifact / "curves.csv") as fh:
        return list(csv.DictReader(fh))


def test_pool_artifact_holds_every_snapshot_verified_and_deterministic(art, tmp_path):
    manifest = lineage.verify_artifact(art["pool"], "pool")
    spec = TrajectorySpec.read(art["pool"])
    assert spec.steps == [0, 3, 6] and spec.archs == ["convnet3", "resnet10"] and spec.width == 4
    hashes = file_hashes(art["pool"])
    assert len(hashes) == 6 == manifest["metrics"]["snapshots"]
    first = load_file(str(art["pool"] / SNAPSHOT_DIR / "convnet3-000000.safetensors"))
    last = load_file(str(art["pool"] / SNAPSHOT_DIR / "convnet3-000006.safetensors"))
    assert any(not first[k].equal(last[k]) for k in first if first[k].is_floating_point())   # it trained
    again = tmp_path / "again"
    run_stage("pool", output=str(again), inputs={"dataset": str(art["data"])}, overrides=POOL)
    assert file_hashes(again) == hashes


def test_distill_from_trajectories_draws_follow_the_seed_and_train_no_pool(art, tmp_path):
    inputs = {"dataset": str(art["data"]), "gan": str(art["gan"]), "pool": str(art["pool"])}
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        manifest = run_stage("distill", output=str(out), inputs=inputs, overrides=TRAJ + [f"seed={seed}"])
        runs[name] = [(r["pool"], r["pool_snapshot"]) for r in curves(out)]
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]
    assert len(runs["a"]) == 6 and {snap for _, snap in runs["a"] + runs["c"]} <= {"0", "3", "6"}
    assert "loss_pool" not in curves(tmp_path / "a")[0]                  # nothing trained inside distill
    assert manifest["metrics"]["pool_source"] == "trajectories"
    assert sum(manifest["metrics"]["pool_draws"].values()) == 6
    pool_input = next(i for i in manifest["inputs"] if i["name"] == "pool")
    assert pool_input["manifest_sha256"] == lineage.sha256_file(art["pool"] / "manifest.json")


def test_pool_and_distill_from_trajectories_resume_bit_identical_after_sigkill(art, tmp_path):
    pool = POOL + ["steps=40", "snapshot_every=5", "checkpoint_every=4"]
    ref, out = tmp_path / "pool_ref", tmp_path / "pool_killed"
    run_cli(skdd_cmd("pool", ref, {"dataset": art["data"]}, pool))
    kill_after_checkpoint(skdd_cmd("pool", out, {"dataset": art["data"]}, pool), out, min_step=44)
    (staging_dir(out) / SNAPSHOT_DIR / ".tmpF6Sbj5").write_bytes(b"")   # a save_file the kill cut short
    assert "resuming from step" in run_cli(skdd_cmd("pool", out, {"dataset": art["data"]}, pool)).stdout
    assert file_hashes(out) == file_hashes(ref)
    # resumed where the snapshots are gone (a new pod, checkpoints from S3): it starts fresh, same bytes in the end
    lost = tmp_path / "pool_lost"
    kill_after_checkpoint(skdd_cmd("pool", lost, {"dataset": art["data"]}, pool), lost, min_step=12)
    (staging_dir(lost) / SNAPSHOT_DIR / "convnet3-000005.safetensors").unlink()
    assert "starting fresh" in run_cli(skdd_cmd("pool", lost, {"dataset": art["data"]}, pool)).stdout
    assert file_hashes(lost) == file_hashes(ref)

    dis = TRAJ + ["steps=30", "checkpoint_every=3", "gp_every=4"]   # the lazy penalty's cadence resumes too
    inputs = {"dataset": art["data"], "gan": art["gan"], "pool": ref}
    dref, dout = tmp_path / "dist_ref", tmp_path / "dist_killed"
    run_cli(skdd_cmd("distill", dref, inputs, dis))
    kill_after_checkpoint(skdd_cmd("distill", dout, inputs, dis), dout, min_step=9)
    assert "resuming from step" in run_cli(skdd_cmd("distill", dout, inputs, dis)).stdout
    for name in ("generator.safetensors", "discriminator.safetensors"):
        a, b = load_file(str(dref / name)), load_file(str(dout / name))
        assert all(a[k].equal(b[k]) for k in a), f"{name} differs after resume"
    assert curves(dref) == curves(dout)


def test_trajectories_refusals_are_one_line(art, tmp_path):
    base = {"dataset": str(art["data"]), "gan": str(art["gan"])}
    with pytest.raises(SkddError, match="pool_source trajectories needs --pool"):
        run_stage("distill", output=str(tmp_path / "x"), inputs=base, overrides=TRAJ)
    with pytest.raises(SkddError, match=r"pool holds \['convnet3', 'resnet10'\] at width 4; distill.pool is"):
        run_stage("distill", output=str(tmp_path / "y"), inputs={**base, "pool": str(art["pool"])},
                  overrides=TRAJ + ["pool=[convnet3, resnet18]"])
    with pytest.raises(SkddError, match="archs: unknown architecture 'nope'"):
        run_stage("pool", output=str(tmp_path / "z"), inputs={"dataset": str(art["data"])},
                  overrides=POOL + ["archs=[nope]"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
