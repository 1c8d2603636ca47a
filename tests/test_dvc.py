"""The real `dvc repro` of dvc.yaml on the smoke profile, and DVC's change tracking over our params."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import MNIST

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not MNIST.is_dir():
        pytest.skip("../shared/datasets/mnist not present")
    if not (BIN / "dvc").exists():
        pytest.skip("dvc not installed in this environment")
    repo = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "params" / "smoke.yaml", repo / "params.yaml")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SKDD_DATA_LOCATION": str(MNIST),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "init", "-q"], repo, env)
    first = run([str(BIN / "dvc"), "repro"], repo, env)
    return repo, env, first


def test_smoke_profile_reproduces_end_to_end(project):
    repo, env, first = project
    assert {"ingest", "pretrain", "distill@skd", "distill@none", "sample@skd", "select", "evaluate@skd",
            "evaluate@gan-only", "evaluate@random", "report"} <= ran_stages(first)
    assert (repo / "dvc.lock").is_file() and (repo / "artifacts" / "report" / "report.md").is_file()
    shown = run([str(BIN / "dvc"), "metrics", "show"], repo, env)
    assert "eval-skd/metrics.json" in shown and "architectures.convnet3.mean" in shown
    verify = run([str(BIN / "skdd"), "lineage", "verify", "artifacts/report"], repo, env)
    assert "every file and every ancestor matches" in verify


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
    assert second == {"sample@skd", "sample@none", "evaluate@skd", "evaluate@gan-only", "report"}
