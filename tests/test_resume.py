"""A run killed with SIGKILL mid-way and re-run must end bit-identical (CPU) to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from skdd.stages.registry import run_stage
from skdd.storage import staging_dir

from helpers import TINY_DISTILL, TINY_PRETRAIN, ingest_tiny, kill_after_checkpoint, run_cli, skdd_cmd

pytestmark = pytest.mark.integration


def same_weights(a: Path, b: Path) -> None:
    for name in ("generator.safetensors", "discriminator.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for key in ta:
            assert ta[key].equal(tb[key]), f"{name}:{key} differs after resume"


def test_pretrain_and_distill_resume_bit_identical(tmp_path):
    data = ingest_tiny(tmp_path, n_per_class=16)
    pre = TINY_PRETRAIN + ["steps=40", "checkpoint_every=4"]
    ref = tmp_path / "gan_ref"
    run_cli(skdd_cmd("pretrain", ref, {"dataset": data}, pre))

    out = tmp_path / "gan"
    kill_after_checkpoint(skdd_cmd("pretrain", out, {"dataset": data}, pre), out, min_step=8)
    run_cli(skdd_cmd("pretrain", out, {"dataset": data}, pre))
    same_weights(ref, out)

    dis = TINY_DISTILL + ["steps=24", "checkpoint_every=3", "pool_sampling=epoch"]
    dref = tmp_path / "dist_ref"
    run_cli(skdd_cmd("distill", dref, {"dataset": data, "gan": ref}, dis))
    dout = tmp_path / "dist"
    kill_after_checkpoint(skdd_cmd("distill", dout, {"dataset": data, "gan": ref}, dis), dout, min_step=9)
    result = run_cli(skdd_cmd("distill", dout, {"dataset": data, "gan": ref}, dis))
    assert "resuming from step" in result.stdout
    same_weights(dref, dout)
    assert not staging_dir(dout).exists(), "staging folder (and its checkpoints) removed after success"


def test_changed_params_start_fresh(tmp_path, capsys):
    data = ingest_tiny(tmp_path)
    out = tmp_path / "gan"
    stage = staging_dir(out)
    # leave a checkpoint from a run with other params behind
    from skdd.checkpoint import Checkpointer
    import torch
    m = torch.nn.Linear(1, 1)
    Checkpointer(stage / "checkpoints", "other-params").save(2, {"g": m}, {"g": torch.optim.SGD(m.parameters(), 0.1)})
    run_stage("pretrain", output=str(out), inputs={"dataset": str(data)}, overrides=TINY_PRETRAIN + ["steps=3"])
    assert "params changed since the last checkpoint; starting fresh" in capsys.readouterr().out
    assert (out / "manifest.json").exists()
