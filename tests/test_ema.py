"""The exponential moving average of G's weights (skdd.ema): the update rule, the artifact file, checkpoint
resume, distill carrying it on, and the loaders that sample from it (`sample`, the `dim` evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import skdd.stages.distill as distill_stage
import skdd.stages.pretrain as pretrain_stage
from skdd.stages.registry import run_stage
from skdd.ema import GeneratorEMA
from skdd.gan_artifact import G_EMA_FILE, G_FILE, load_gan, load_sampling_generator
from skdd.storage import staging_dir

from helpers import TINY_DISTILL, TINY_PRETRAIN, ingest_tiny

pytestmark = pytest.mark.integration


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.bn = torch.nn.BatchNorm1d(1)


def _set(toy: _Toy, w: list[float], b: float) -> None:
    with torch.no_grad():
        toy.lin.weight.copy_(torch.tensor([w]))
        toy.lin.bias.fill_(b)


def test_update_matches_hand_computed_values_and_copies_buffers():
    toy = _Toy()
    _set(toy, [1.0, 2.0], 0.5)
    ema = GeneratorEMA(toy, decay=0.9)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())

    _set(toy, [3.0, -2.0], 1.5)
    toy.bn(torch.tensor([[1.0], [3.0]]))                  # running stats move, num_batches_tracked = 1
    ema.update(toy)
    # 0.9 * [1, 2] + 0.1 * [3, -2] = [1.2, 1.6];  0.9 * 0.5 + 0.1 * 1.5 = 0.6
    torch.testing.assert_close(ema.module.lin.weight, torch.tensor([[1.2, 1.6]]))
    torch.testing.assert_close(ema.module.lin.bias, torch.tensor([0.6]))

    _set(toy, [0.0, 0.0], -1.0)
    toy.bn(torch.tensor([[5.0], [7.0]]))
    ema.update(toy)
    # 0.9 * [1.2, 1.6] + 0.1 * [0, 0] = [1.08, 1.44];  0.9 * 0.6 + 0.1 * -1 = 0.44
    torch.testing.assert_close(ema.module.lin.weight, torch.tensor([[1.08, 1.44]]))
    torch.testing.assert_close(ema.module.lin.bias, torch.tensor([0.44]))
    for name, buf in toy.bn.named_buffers():               # buffers are copied, not averaged
        assert getattr(ema.module.bn, name).equal(buf), name
    assert int(ema.module.bn.num_batches_tracked) == 2

    toy.lin.weight.data.fill_(9.0)                          # a separate copy: G's later steps do not leak in
    assert ema.module.lin.weight[0, 0].item() == pytest.approx(1.08)


def test_decay_one_freezes_and_init_state_is_used():
    toy = _Toy()
    _set(toy, [1.0, 1.0], 0.0)
    init = {k: v.clone() for k, v in toy.state_dict().items()}
    init["lin.weight"] = torch.tensor([[4.0, 5.0]])
    ema = GeneratorEMA(toy, decay=1.0, init=init)
    ema.update(toy)
    assert ema.module.lin.weight.equal(torch.tensor([[4.0, 5.0]]))


# ------------------------------------------------------------------------------------------------ stages
def pretrain(data: Path, out: Path, *extra: str) -> dict:
    return run_stage("pretrain", output=str(out), inputs={"dataset": str(data)},
                     overrides=TINY_PRETRAIN + ["steps=4", *extra])


@pytest.fixture(scope="module")
def gans(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    data = ingest_tiny(root)
    pretrain(data, root / "gan_ema", "ema_decay=0.9")
    pretrain(data, root / "gan_raw")
    return {"data": data, "ema": root / "gan_ema", "raw": root / "gan_raw"}


def test_pretrain_writes_ema_and_sampling_loader_prefers_it(gans):
    folder = gans["ema"]
    g, ema = load_file(str(folder / G_FILE)), load_file(str(folder / G_EMA_FILE))
    assert g.keys() == ema.keys()
    assert any(not g[k].equal(ema[k]) for k in g if g[k].is_floating_point()), "EMA must differ from G"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["params"]["ema_decay"] == 0.9
    assert G_EMA_FILE in {f["path"] for f in manifest["files"]}

    spec, sampler, which = load_sampling_generator(folder, torch.device("cpu"))
    assert which == "ema" and not sampler.training
    for k, v in sampler.state_dict().items():
        assert v.equal(ema[k]), k
    _, g_loaded, _, _ = load_gan(folder, torch.device("cpu"))   # load_gan still gives the raw G
    for k, v in g_loaded.state_dict().items():
        assert v.equal(g[k]), k
    out = sampler(torch.randn(3, spec.z_dim), torch.tensor([0, 1, 2]))
    assert out.shape == (3, spec.in_channels, spec.image_size, spec.image_size)


def test_ema_off_writes_no_file_and_samples_raw_g(gans):
    folder = gans["raw"]
    assert not (folder / G_EMA_FILE).exists()
    assert json.loads((folder / "manifest.json").read_text())["params"]["ema_decay"] is None
    _, sampler, which = load_sampling_generator(folder, torch.device("cpu"))
    g = load_file(str(folder / G_FILE))
    assert which == "raw" and not sampler.training
    for k, v in sampler.state_dict().items():
        assert v.equal(g[k]), k
    # same seed and params apart from the EMA: G itself is unchanged by keeping an average
    g_ema_run = load_file(str(gans["ema"] / G_FILE))
    assert all(g[k].equal(g_ema_run[k]) for k in g)


class _Stop(Exception):
    pass


def _stop_at(monkeypatch, cls, call: int) -> None:
    """Make `cls.step` raise on its `call`-th call in this process (a crash after the last checkpoint)."""
    real, calls = cls.step, {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] == call:
            raise _Stop
        return real(self)

    monkeypatch.setattr(cls, step.__name__, step)


def _same_files(a: Path, b: Path, names: tuple[str, ...]) -> None:
    for name in names:
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for key in ta:
            assert ta[key].equal(tb[key]), f"{name}:{key} differs after resume"


def test_resume_after_crash_is_bit_identical_with_ema(gans, tmp_path, monkeypatch, capsys):
    data = gans["data"]
    opts = ("steps=9", "checkpoint_every=3", "ema_decay=0.8")
    ref = tmp_path / "ref"
    pretrain(data, ref, *opts)

    out = tmp_path / "gan"
    with monkeypatch.context() as m:
        _stop_at(m, pretrain_stage.Pretrainer, call=8)     # checkpoint at step 6 exists, steps 7 lost
        with pytest.raises(_Stop):
            pretrain(data, out, *opts)
    assert (staging_dir(out) / "checkpoints" / "step-00000006").is_dir() and not (out / "manifest.json").exists()
    capsys.readouterr()
    pretrain(data, out, *opts)
    assert "resuming from step 6" in capsys.readouterr().out
    _same_files(ref, out, (G_FILE, G_EMA_FILE, "discriminator.safetensors"))

    dis = TINY_DISTILL + ["steps=5", "checkpoint_every=2", "ema_decay=0.7", "pool_sampling=epoch"]
    dref, dout = tmp_path / "dref", tmp_path / "dist"
    run_stage("distill", output=str(dref), inputs={"dataset": str(data), "gan": str(ref)}, overrides=dis)
    with monkeypatch.context() as m:
        _stop_at(m, distill_stage.Distiller, call=4)       # checkpoint at step 2
        with pytest.raises(_Stop):
            run_stage("distill", output=str(dout), inputs={"dataset": str(data), "gan": str(ref)}, overrides=dis)
    capsys.readouterr()
    run_stage("distill", output=str(dout), inputs={"dataset": str(data), "gan": str(ref)}, overrides=dis)
    assert "resuming from step 2" in capsys.readouterr().out
    _same_files(dref, dout, (G_FILE, G_EMA_FILE))


def _params(state: dict) -> list[str]:
    return [k for k in state if "running_" not in k and "num_batches_tracked" not in k]


def distill(gans, out: Path, gan: str, *extra: str) -> dict:
    return run_stage("distill", output=str(out), inputs={"dataset": str(gans["data"]), "gan": str(gans[gan])},
                     overrides=TINY_DISTILL + ["steps=2", *extra])


def test_distill_carries_the_input_ema_or_starts_one_from_g(gans, tmp_path):
    # decay 1.0 keeps the starting point exactly, so where it started is visible in the output
    carried = distill(gans, tmp_path / "carried", "ema", "ema_decay=1.0")
    assert carried["resolved"]["ema_init"] == "input-ema"
    start, ema = load_file(str(gans["ema"] / G_EMA_FILE)), load_file(str(tmp_path / "carried" / G_EMA_FILE))
    assert all(start[k].equal(ema[k]) for k in _params(start))   # buffers follow G: copied, not averaged
    assert load_sampling_generator(tmp_path / "carried", torch.device("cpu"))[2] == "ema"

    fresh = distill(gans, tmp_path / "fresh", "raw", "ema_decay=1.0")
    assert fresh["resolved"]["ema_init"] == "generator"
    start, ema = load_file(str(gans["raw"] / G_FILE)), load_file(str(tmp_path / "fresh" / G_EMA_FILE))
    assert all(start[k].equal(ema[k]) for k in _params(start))

    off = distill(gans, tmp_path / "off", "ema")
    assert off["resolved"]["ema_init"] is None and off["params"]["ema_decay"] is None
    assert not (tmp_path / "off" / G_EMA_FILE).exists()
    assert load_sampling_generator(tmp_path / "off", torch.device("cpu"))[2] == "raw"


def test_dim_evaluation_samples_and_records_the_ema(gans, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no ./params.yaml
    for which in ("ema", "raw"):
        out = tmp_path / f"ev-{which}"
        run_stage("evaluate", output=str(out), inputs={"dataset": str(gans["data"]), "synthetic": str(gans[which])},
                  overrides=["width=8", "device=cpu", "epochs=1", "trials=1", "protocol=dim", "ipc=1", "checks=1"])
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["generator_weights"] == which
        assert json.loads((out / "manifest.json").read_text())["evaluation"]["generator_weights"] == which
