"""A user's clone of the project as a DVC project in a temp folder, and the commands to drive it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MNIST

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def new_project(repo: Path, params: Path = ROOT / "params" / "smoke.yaml", **env_extra: str) -> dict:
    """A git repo holding what a user's clone holds (dvc.yaml, .dvc/, src/, `params` (default: the smoke profile)
    as params.yaml)."""
    if not MNIST.is_dir():
        pytest.skip("../shared/datasets/mnist not present")
    if not (BIN / "dvc").exists():
        pytest.skip("dvc not installed in this environment")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(params, repo / "params.yaml")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SKDD_DATA_LOCATION": str(MNIST),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           **env_extra}
    run(["git", "init", "-q"], repo, env)
    return env


def first_repro(repo: Path, snapshot: Path) -> tuple[dict, str]:
    """`dvc repro` of the smoke profile; the evaluation chain's manifests and metrics are copied to `snapshot`
    as they were after this first run (later tests change params and re-run the project)."""
    env = new_project(repo)
    first = run([str(BIN / "dvc"), "repro"], repo, env)
    for name in ("eval-skd", "dataset", "synthetic-skd", "refined-skd"):
        (snapshot / name).mkdir(parents=True)
        for f in ("manifest.json", "metrics.json"):
            if (repo / "artifacts" / name / f).is_file():
                shutil.copy(repo / "artifacts" / name / f, snapshot / name / f)
    return env, first
