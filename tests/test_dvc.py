"""The real `dvc repro` of dvc.yaml on the smoke profile: end to end, a param change, a crash mid-pretrain.

The data source and DVC remote in a real S3-compatible server (`dvc push`, then `dvc pull` into a fresh clone)
are checked in tests/test_cifar_shaped.py, on the RGB chain, sharing that module's one repro."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from dvc_project import BIN, ROOT, new_project, ran_stages, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(dvc_smoke):
    repo, env, first, _ = dvc_smoke
    return repo, env, first


def test_smoke_profile_reproduces_end_to_end(project):
    repo, env, first = project
    assert {"ingest", "teacher", "pretrain", "distill@skd", "distill@gan-only", "sample@skd", "refine@skd", "refine@gan-only",
            "select", "evaluate@skd", "evaluate@gan-only", "evaluate@skd-unrefined", "evaluate@random",
            "report"} <= ran_stages(first)
    assert (repo / "dvc.lock").is_file() and (repo / "artifacts" / "report" / "report.md").is_file()
    shown = run([str(BIN / "dvc"), "metrics", "show"], repo, env)
    assert "eval-skd/metrics.json" in shown and "architectures.convnet3.mean" in shown
    verify = run([str(BIN / "skdd"), "lineage", "verify", "artifacts/report"], repo, env)
    assert "every file and every ancestor matches" in verify
    # the generator probe's curve (smoke: every 2 steps) is a plot DVC reads without errors
    plots = json.loads(run([str(BIN / "dvc"), "plots", "show", "--json", "artifacts/gan/probe.csv"], repo, env))
    assert not plots.get("errors"), plots["errors"]
    assert "probe_cas" in json.dumps(plots["data"]["artifacts/gan/probe.csv"])


def test_dvc_config_is_offline():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


def test_changing_one_param_reruns_only_what_depends_on_it(project):
    repo, env, _ = project
    assert "up to date" in run([str(BIN / "dvc"), "repro"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sample"]["seed"] = params["sample"]["seed"] + 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = ran_stages(run([str(BIN / "dvc"), "repro"], repo, env))
    assert second == {"sample@skd", "sample@gan-only", "refine@skd", "refine@gan-only", "evaluate@skd", "evaluate@gan-only",
                      "evaluate@skd-unrefined", "report"}


def test_killed_repro_resumes_from_checkpoints(tmp_path):
    """A machine crash mid-pretrain (SIGKILL to dvc and its stage process): the next `dvc repro` does not redo
    ingest, resumes pretrain from `artifacts/gan.partial/checkpoints` (DVC leaves that folder alone: it is not an
    out), and ends with the weights of an uninterrupted `skdd pretrain` with the same params, bit for bit."""
    repo = tmp_path / "project"
    repo.mkdir()
    env = new_project(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain"].update(steps=40, checkpoint_every=4)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    checkpoints = repo / "artifacts" / "gan.partial" / "checkpoints"
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "pretrain"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            steps = [int(p.name.split("-")[1]) for p in checkpoints.glob("step-*")] if checkpoints.is_dir() else []
            if steps and max(steps) >= 8:
                break
            assert proc.poll() is None, "dvc repro finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no pretrain checkpoint appeared in time")
        os.killpg(proc.pid, signal.SIGKILL)   # dvc and the stage it runs, as a power cut would
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (repo / "artifacts" / "gan" / "manifest.json").exists()

    second = run([str(BIN / "dvc"), "repro", "pretrain"], repo, env)
    assert ran_stages(second) == {"pretrain"}, second
    assert "pretrain: resuming from step" in second, second
    assert "up to date" in run([str(BIN / "dvc"), "status", "pretrain"], repo, env)
    ref = tmp_path / "ref"
    run([str(BIN / "skdd"), "pretrain", "--dataset", "artifacts/dataset", "--teacher", "artifacts/teacher",
         "--out", str(ref)], repo, env)
    for name in ("generator.safetensors", "discriminator.safetensors"):
        assert (repo / "artifacts" / "gan" / name).read_bytes() == (ref / name).read_bytes(), name
    assert "every file and every ancestor matches" in run([str(BIN / "skdd"), "lineage", "verify", "artifacts/gan"],
                                                          repo, env)
