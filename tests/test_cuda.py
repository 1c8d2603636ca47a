"""The CUDA code paths: bf16 autocast, channels_last, CUDA RNG in checkpoints, every stage on the GPU.

Skipped without a CUDA device (CI has none); run on a lent GPU with `pytest -q tests/test_cuda.py`.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY_DISTILL, TINY_PRETRAIN, ingest_tiny, kill_after_checkpoint  # noqa: F401
from skdd import checkpoint as ckpt_mod
from skdd.stages.registry import run_stage
from skdd.device import autocast, prepare_module
from skdd.models import create_model, list_models

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA_PRETRAIN = [o.replace("device=cpu", "device=cuda") for o in TINY_PRETRAIN]
CUDA_DISTILL = [o.replace("device=cpu", "device=cuda") for o in TINY_DISTILL]


@pytest.mark.parametrize("name", list_models("classifier"))
def test_every_classifier_runs_bf16_channels_last(name):
    torch.manual_seed(0)
    model = prepare_module(create_model(name, in_channels=3, num_classes=10, image_size=32, width=16),
                           torch.device("cuda"))
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    with autocast(torch.device("cuda")):
        out = model(x)
    assert out.dtype == torch.bfloat16 and out.shape == (8, 10)
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_checkpoint_round_trips_cuda_rng():
    torch.cuda.manual_seed(123)
    torch.randn(3, device="cuda")
    state = ckpt_mod.rng_state()
    assert any(k.startswith("rng.cuda.") for k in state)
    expected = torch.randn(5, device="cuda")
    torch.randn(7, device="cuda")
    ckpt_mod.set_rng_state(state)
    assert torch.equal(torch.randn(5, device="cuda"), expected)


def test_pipeline_stages_on_cuda(tmp_path):
    """ingest → pretrain → distill → sample → evaluate (strict and dim) with device=cuda and bf16 on."""
    data = ingest_tiny(tmp_path)
    gan = tmp_path / "gan"
    m = run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)}, overrides=CUDA_PRETRAIN + ["steps=6"])
    assert m["device"].startswith("cuda") if "device" in m else True
    curves = (gan / "curves.csv").read_text().splitlines()
    assert len(curves) > 1 and all(math.isfinite(float(v)) for v in curves[-1].split(",")[1:3])
    dist = tmp_path / "distill"
    run_stage("distill", output=str(dist), inputs={"dataset": str(data), "gan": str(gan)},
              overrides=CUDA_DISTILL + ["steps=4", "grad_norm_every=2"])
    rows = (dist / "curves.csv").read_text()
    assert "grad_ratio" in rows
    for name in ("generator.safetensors", "discriminator.safetensors"):
        for t in load_file(str(dist / name)).values():
            assert torch.isfinite(t.float()).all()
    syn = tmp_path / "syn"
    run_stage("sample", output=str(syn), inputs={"gan": str(dist)}, overrides=["ipc=2", "device=cuda"])
    for protocol, synthetic in (("strict", syn), ("dim", dist)):
        out = tmp_path / f"eval-{protocol}"
        run_stage("evaluate", output=str(out), inputs={"dataset": str(data), "synthetic": str(synthetic)},
                  overrides=[f"protocol={protocol}", "device=cuda", "epochs=4", "trials=2", "width=8",
                             "ipc=2", "checkpoint_every_epochs=2", "checks=2"])
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["device"].startswith("cuda")
        accs = metrics["architectures"]["convnet3"]["accuracies"]
        assert len(accs) == 2 and all(0 <= a <= 100 for a in accs)


def test_cuda_resume_after_kill_completes(tmp_path):
    """SIGKILL mid-pretrain on CUDA, re-run: it resumes from the checkpoint (CUDA RNG restored) and finishes."""
    import subprocess
    import sys
    import os

    data = ingest_tiny(tmp_path)
    out = tmp_path / "gan"
    cmd = [sys.executable, "-m", "skdd.cli", "pretrain", "--out", str(out), "--dataset", str(data)]
    for item in CUDA_PRETRAIN + ["steps=3000", "checkpoint_every=20"]:
        cmd += ["--set", item]
    kill_after_checkpoint(cmd, out, min_step=40, timeout=240)
    again = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                                                                     "PYTHONPATH": os.pathsep.join(sys.path)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from step" in again.stdout + again.stderr
    assert (out / "manifest.json").is_file()
