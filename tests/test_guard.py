"""Divergence guards: a run whose losses or weights go non-finite stops with one line and publishes nothing."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import TINY_PRETRAIN, ingest_tiny, one_line_error
from skdd.checkpoint import Checkpointer
from skdd.guard import Diverged, check_losses, check_weights
from skdd.stages.loop import run_steps
from skdd.storage import staging_dir


def test_check_losses_names_the_first_non_finite_term():
    check_losses("run", 3, {"loss_g": 1.0, "loss_d": -2.0, "note": "text"})
    with pytest.raises(Diverged, match=r"^run: diverged at step 3: loss_d is nan$"):
        check_losses("run", 3, {"loss_g": 1.0, "loss_d": math.nan, "loss_x": math.inf})
    with pytest.raises(Diverged, match="loss_g is -inf"):
        check_losses("run", 1, {"loss_g": -math.inf})


def test_check_weights_names_the_module_and_tensor():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    check_weights("run", 5, {"g": net})
    with torch.no_grad():
        net[1].running_var[0] = math.inf      # a buffer counts too: eval mode would use it
    with pytest.raises(Diverged, match=r"^run: diverged at step 5: weight g\.1\.running_var is not finite$"):
        check_weights("run", 5, {"g": net})


class _Toy:
    """A one-weight trainer whose weight turns NaN at step `nan_at`."""

    def __init__(self, nan_at: int):
        self.w, self.nan_at, self.n = torch.nn.Linear(1, 1), nan_at, 0
        self.opt = torch.optim.SGD(self.w.parameters(), lr=0.1)

    def step(self):
        self.n += 1
        with torch.no_grad():
            if self.n >= self.nan_at:
                self.w.weight.fill_(math.nan)
        return {"loss": float(self.w.weight.detach().sum())}

    def modules(self):
        return {"w": self.w}

    def optimizers(self):
        return {"w": self.opt}

    def state_tensors(self):
        return {}

    def meta(self):
        return {}

    def resume(self, ckpt):
        raise AssertionError("not resumed in this test")


def test_run_steps_stops_at_the_diverged_step_and_keeps_only_good_checkpoints(tmp_path):
    ckpts = Checkpointer(tmp_path / "ck", "hash")
    with pytest.raises(Diverged) as info:
        run_steps(_Toy(nan_at=5), name="toy", ckpts=ckpts, steps=10, log_every=1, checkpoint_every=2,
                  images_per_step=1)
    msg = str(info.value)
    assert msg.startswith("toy: diverged at step 5: loss is nan; nothing published, the checkpoint of step 4 is kept")
    assert "\n" not in msg
    kept = ckpts.latest()
    assert kept.step == 4 and torch.isfinite(kept.modules["w"]["weight"]).all()


def test_run_steps_refuses_non_finite_weights_at_the_end_even_with_finite_losses(tmp_path):
    class Silent(_Toy):
        def step(self):
            super().step()
            return {"loss": 0.0}            # the loss hides it; the weights do not

    with pytest.raises(Diverged, match="toy: diverged at step 3: weight w.weight is not finite; nothing published, "
                                       "no checkpoint was made"):
        run_steps(Silent(nan_at=3), name="toy", ckpts=Checkpointer(tmp_path / "ck", "h"), steps=3, log_every=1,
                  checkpoint_every=100, images_per_step=1)


def test_a_diverging_pretrain_publishes_nothing_and_a_rerun_with_sane_params_starts_clean(tmp_path, capsys):
    data = ingest_tiny(tmp_path)
    out = tmp_path / "gan"
    argv = ["pretrain", "--dataset", str(data), "--out", str(out), "--set", "steps=6", "--set", "checkpoint_every=2"]
    argv += [a for item in TINY_PRETRAIN for a in ("--set", item)]
    from skdd.cli import main

    assert main(argv + ["--set", "lr=1e6"]) == 2           # lr 1e6: finite for a step or two, then not
    errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x]   # progress lines share stderr
    assert len(errors) == 1 and errors[0].startswith("skdd pretrain: error: pretrain: diverged at step"), errors
    line = errors[0]
    assert "nothing published, the checkpoint of step " in line
    assert not out.exists() and not (staging_dir(out) / "manifest.json").exists()
    kept = Checkpointer(staging_dir(out) / "checkpoints", "any")._all()
    assert kept and f"step {int(kept[-1].name.split('-')[1])} is kept" in line

    assert main(argv) == 0           # lr back to the default: other params, so the diverged run is not resumed
    assert "params changed since the last checkpoint; starting fresh" in capsys.readouterr().out
    assert (out / "manifest.json").is_file()


def test_a_diverging_evaluation_publishes_nothing(tmp_path, capsys):
    data = ingest_tiny(tmp_path)
    from skdd.stages.registry import run_stage

    real = tmp_path / "random"
    run_stage("select", output=str(real), inputs={"dataset": str(data)}, overrides=["method=random", "ipc=2"])
    out = tmp_path / "eval"
    one_line_error(capsys, ["evaluate", "--dataset", str(data), "--synthetic", str(real), "--out", str(out),
                            "--set", "lr=1e30", "--set", "epochs=4", "--set", "trials=1", "--set", "width=8",
                            "--set", "ipc=2", "--set", "device=cpu"],
                   "skdd evaluate: error: evaluate[convnet3 1/1]: diverged at step")
    assert not (out / "manifest.json").exists()
