"""Small real artifacts for stage tests: a tiny dataset written through the real ingest stage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import numpy as np

from skdd.stages.registry import run_stage
from skdd.storage import staging_dir

SHARED = Path(__file__).resolve().parents[2] / "shared"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MNIST = SHARED / "datasets" / "mnist"

TINY_PRETRAIN = ["g_width=8", "d_width=8", "batch_size=16", "device=cpu", "log_every=2"]
TINY_DISTILL = ["pool_width=4", "pool_steps=2", "batch_size=16", "device=cpu", "log_every=2",
                "pool=[convnet3, resnet10]"]


def tiny_npz(path: Path, *, n_per_class: int = 12, classes: int = 10, size: int = 28, channels: int = 1,
             seed: int = 0) -> Path:
    """Class-dependent blobs so that a classifier can tell the classes apart."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.repeat(np.arange(classes), n)
        x = rng.integers(0, 60, size=(len(y), size, size, channels), dtype=np.uint8)
        for i, label in enumerate(y):
            r = 2 + 2 * int(label)
            x[i, r:r + 4, 4:size - 4, :] = 230
        return (x[..., 0] if channels == 1 else x), y.astype(np.int64)

    x_train, y_train = make(n_per_class)
    x_test, y_test = make(max(2, n_per_class // 3))
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def ingest_tiny(tmp_path: Path, *, val_per_class: int = 2, **kwargs) -> Path:
    """The tiny npz ingested: `val_per_class` of each class's training images go to val/ (the params default,
    500, is far more than a tiny set holds), so n_per_class=12 leaves 10 per class in train."""
    npz = tiny_npz(tmp_path / "tiny.npz", **kwargs)
    out = tmp_path / "dataset"
    run_stage("ingest", output=str(out), inputs={},
              overrides=["source=npz", f"location={npz}", "name=tiny", f"val_per_class={val_per_class}"])
    return out


def kill_after_checkpoint(cmd: list[str], out: Path, min_step: int, timeout: float = 240, env: dict | None = None) -> None:
    """Start the stage, SIGKILL it once a checkpoint at >= min_step exists, and check it had not finished."""
    ckdir = staging_dir(out) / "checkpoints"
    env = env or {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            steps = [int(p.name.split("-")[1]) for p in ckdir.glob("step-*")] if ckdir.is_dir() else []
            if steps and max(steps) >= min_step:
                break
            assert proc.poll() is None, "stage finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint appeared in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "manifest.json").exists(), "killed run must not leave a complete-looking artifact"


def skdd_cmd(stage: str, out: Path, inputs: dict, overrides: list[str]) -> list[str]:
    """`python -m skdd.cli <stage>` with its inputs and `--set` overrides."""
    cmd = [sys.executable, "-m", "skdd.cli", stage, "--out", str(out)]
    for name, path in inputs.items():
        cmd += [f"--{name}", str(path)]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def run_cli(cmd: list[str]) -> subprocess.CompletedProcess:
    """Every run in its own process: CPU results are bit-identical only at equal thread counts and settings."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def run_script(name: str, *args: str) -> str:
    """A benchmark script in its own process, one thread (as the README's figures were taken); must exit 0."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    """`skdd` with argv must fail with exit code 2 and exactly one stderr line holding every fragment."""
    from skdd.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def presets_run_by(script: str) -> list[str]:
    """The presets in benchmarks/presets/ whose header names `script` as their runner (`python benchmarks/<script>
    --preset benchmarks/presets/<name>.yaml`), so a new preset is validated by its runner's test without being added
    to a list by hand; tests/test_benchmarks_smoke.py checks that every preset names exactly one runner."""
    return sorted(name for name, runner in preset_runners().items() if runner == script)


def preset_runners() -> dict[str, str | None]:
    """Each preset's runner script as its header names it (None where it names none)."""
    out = {}
    for path in sorted((BENCHMARKS / "presets").glob("*.yaml")):
        found = set(re.findall(rf"python benchmarks/(\w+\.py) --preset benchmarks/presets/{re.escape(path.stem)}\.yaml",
                               path.read_text()))
        out[path.stem] = found.pop() if len(found) == 1 else None
    return out
