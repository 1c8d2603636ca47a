"""Evaluation core: the strict DC/DSA protocol, the DiM protocol, and the coreset selections.

Everything runs on CPU with tiny data made here (28x28x1, a few dozen images) and tiny widths, so the file
stays fast. Protocol properties are checked against independent computations (a plain eval-mode forward,
brute-force selection loops written straight from ALGORITHM.md 5.2/5.3), not against the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

import skdd.evaluation.protocols as protocols
from skdd.checkpoint import Checkpointer
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.errors import SkddError
from skdd.evaluation import (
    TrainConfig,
    checkpoint_kwargs,
    clone_snapshot,
    dim_check_epochs,
    dim_iterations_per_epoch,
    extract_features,
    herding,
    k_center,
    random_subset,
    select_per_class,
    snapshot_from_checkpoint,
    train_dim,
    train_strict,
)
from skdd.models import create_model

CPU = torch.device("cpu")
PIXELS = Pixels([0.5], [0.25])


def _dataset(n: int, num_classes: int, seed: int) -> ImageDataset:
    """Noise plus a class-dependent bright band, so a few epochs learn something."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randint(0, 120, (n, 1, 28, 28), generator=g)
    for c in range(num_classes):
        rows = slice(2 * c, 2 * c + 3)
        images[labels == c, :, rows, :] += 120
    return ImageDataset(images.to(torch.uint8), labels, [f"c{c}" for c in range(num_classes)])


@pytest.fixture(scope="module")
def train_set() -> ImageDataset:
    return _dataset(36, 4, seed=1)


@pytest.fixture(scope="module")
def test_set() -> ImageDataset:
    return _dataset(40, 4, seed=2)


def _cfg(arch: str = "convnet3", epochs: int = 4, width: int = 8, **kw) -> TrainConfig:
    return TrainConfig(arch, epochs=epochs, batch_size=kw.pop("batch_size", 16), width=width, **kw)


class _Stop(Exception):
    pass


def _final_state(runner, *args, **kwargs) -> tuple[dict, dict]:
    """Run a protocol and return (result, CPU copy of the snapshot after its last epoch)."""
    snaps = {}

    def keep(epoch: int, snap: dict) -> None:
        snaps["last"] = clone_snapshot(snap)

    result = runner(*args, on_epoch=keep, **kwargs)
    return result, snaps["last"]


def _model_from(snap: dict, cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    model = create_model(cfg.arch, in_channels=1, num_classes=num_classes, image_size=28, width=cfg.width)
    model.load_state_dict(snap["model"])
    return model


def _plain_accuracy(model: torch.nn.Module, ds: ImageDataset, train_mode: bool = False) -> float:
    model.train(train_mode)
    with torch.no_grad():
        logits = model(PIXELS.classifier(ds.images))
    return (logits.argmax(1) == ds.labels).double().mean().item()


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sampler(num_classes: int, calls: list[int] | None = None):
    """Stand-in generator: [-1, 1] images with a label-dependent band, random labels, global torch RNG only."""
    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if calls is not None:
            calls.append(n)
        y = torch.randint(num_classes, (n,))
        x = torch.rand(n, 1, 28, 28) * 0.9 - 1.0
        for c in range(num_classes):
            x[y == c, :, 2 * c:2 * c + 3, :] += 0.9
        return x, y
    return sample


# ------------------------------------------------------------------------------------------- strict protocol
@pytest.mark.parametrize("epochs", [4, 5])
def test_strict_lr_decays_once_at_half(train_set, test_set, epochs):
    result = train_strict(_cfg(epochs=epochs), train_set, test_set, PIXELS, CPU, seed=0)
    half = epochs // 2
    assert result["lr_history"] == pytest.approx([0.01] * half + [0.001] * (epochs - half), rel=1e-12)
    assert result["protocol"] == "strict" and result["epochs"] == epochs
    assert result["steps_per_epoch"] == 3   # 36 images at batch 16: the last partial batch is kept


def test_strict_reports_final_model_tested_once(train_set, test_set, monkeypatch):
    calls = []
    real = protocols.evaluate_accuracy

    def spy(model, *args, **kwargs):
        calls.append(model.training)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(protocols, "evaluate_accuracy", spy)
    cfg = _cfg(epochs=4)
    result, snap = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=3)
    assert len(calls) == 1   # tested once, at the end: no best-of
    assert snap["epoch"] == 4
    model = _model_from(snap, cfg, 4)
    assert result["accuracy"] == _plain_accuracy(model, test_set)
    assert math.isfinite(result["train_loss"])
    assert result["train_loss"] == snap["tensors"]["train_loss"].item()


def _record_modes(monkeypatch) -> list[tuple[bool, bool]]:
    """Wrap create_model in the protocols module so every forward records (model.training, grad enabled)."""
    log: list[tuple[bool, bool]] = []
    real = protocols.create_model

    def wrapped(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inp: log.append((m.training, torch.is_grad_enabled())))
        return model

    monkeypatch.setattr(protocols, "create_model", wrapped)
    return log


def test_strict_tests_in_eval_mode(train_set, test_set, monkeypatch):
    log = _record_modes(monkeypatch)
    cfg = _cfg("resnet10", epochs=3, width=4)   # BatchNorm: train and eval mode give different outputs
    result, snap = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=0)
    assert log[-1] == (False, False)                               # the test forward: eval mode, no grad
    assert all(entry == (True, True) for entry in log[:-1])         # 3 epochs x 3 training steps
    assert len(log) == 3 * 3 + 1
    model = _model_from(snap, cfg, 4)
    assert result["accuracy"] == _plain_accuracy(model, test_set, train_mode=False)
    with torch.no_grad():
        x = PIXELS.classifier(test_set.images)
        eval_logits = model.eval()(x)
        train_logits = model.train()(x)   # batch statistics: the behaviour DiM's test() had
    assert not torch.allclose(eval_logits, train_logits, atol=1e-3)


def test_strict_seeds_differ_and_reproduce(train_set, test_set):
    cfg = _cfg(epochs=2)
    a, snap_a = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=0)
    b, snap_b = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=1)
    # A callback that draws random numbers must not perturb the run (RNG restored after it).
    c = train_strict(cfg, train_set, test_set, PIXELS, CPU, seed=0, on_epoch=lambda e, s: torch.rand(7))
    assert not _same_weights(snap_a["model"], snap_b["model"])
    assert a["train_loss"] != b["train_loss"]
    assert c == a
    a2, snap_a2 = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=0)
    assert a2 == a and _same_weights(snap_a["model"], snap_a2["model"])


@pytest.mark.parametrize("stop_after", [1, 2, 3])   # 2 == epochs // 2: resume exactly at the lr decay
def test_strict_resume_is_bit_identical(train_set, test_set, stop_after):
    cfg = _cfg(epochs=4)
    full, full_snap = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=5)
    saved = {}

    def stop(epoch: int, snap: dict) -> None:
        if epoch == stop_after:
            saved["state"] = clone_snapshot(snap)
            raise _Stop

    with pytest.raises(_Stop):
        train_strict(cfg, train_set, test_set, PIXELS, CPU, seed=5, on_epoch=stop)
    torch.manual_seed(1234)   # whatever the global RNG holds, the resume restores its own
    resumed, resumed_snap = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=5,
                                         state=saved["state"])
    assert resumed == full
    assert _same_weights(full_snap["model"], resumed_snap["model"])


def test_strict_resume_refuses_foreign_state(train_set, test_set):
    cfg = _cfg(epochs=2)
    _, snap = _final_state(train_strict, cfg, train_set, test_set, PIXELS, CPU, seed=0)
    with pytest.raises(SkddError, match="seed"):
        train_strict(cfg, train_set, test_set, PIXELS, CPU, seed=1, state=snap)
    with pytest.raises(SkddError, match="protocol"):
        train_dim(cfg, _sampler(4), test_set, PIXELS, CPU, seed=0, ipc=1, num_classes=4, state=snap)


# ------------------------------------------------------------------------------------------- DiM protocol
@pytest.mark.parametrize("ipc,batch,expected", [(1, 32, 1), (10, 64, 2), (50, 128, 4)])
def test_dim_iterations_per_epoch(ipc, batch, expected):
    assert dim_iterations_per_epoch(10, ipc, batch) == expected


@pytest.mark.parametrize("ipc,batch,expected", [(1, 32, 1), (10, 64, 2), (50, 128, 4)])
def test_dim_sampler_calls_per_epoch(ipc, batch, expected, monkeypatch):
    monkeypatch.setattr(protocols, "evaluate_accuracy", lambda *a, **k: 0.5)   # only the training loop counts
    calls: list[int] = []
    test10 = _dataset(10, 10, seed=3)
    result = train_dim(_cfg(epochs=2, batch_size=batch), _sampler(10, calls), test10, PIXELS, CPU,
                       seed=0, ipc=ipc, num_classes=10, checks=1)
    assert calls == [batch] * (2 * expected)
    assert result["iterations_per_epoch"] == expected


def test_dim_check_epochs():
    assert dim_check_epochs(1000, 5) == [200, 400, 600, 800, 1000]
    assert dim_check_epochs(6, 3) == [2, 4, 6]
    assert dim_check_epochs(7, 3) == [2, 4, 6, 7]   # the last epoch is always tested
    assert dim_check_epochs(2, 5) == [1, 2]
    with pytest.raises(SkddError):
        dim_check_epochs(10, 0)


def test_dim_reports_best_of_checks(test_set, monkeypatch):
    scripted = iter([0.3, 0.9, 0.5])
    seen_modes: list[bool] = []

    def fake_eval(model, *args, **kwargs):
        seen_modes.append(model.training)
        return next(scripted)

    monkeypatch.setattr(protocols, "evaluate_accuracy", fake_eval)
    result = train_dim(_cfg(epochs=6), _sampler(4), test_set, PIXELS, CPU, seed=0, ipc=2, num_classes=4, checks=3)
    assert result["checks"] == [(2, 0.3), (4, 0.9), (6, 0.5)]
    assert result["accuracy"] == 0.9 and result["best_epoch"] == 4
    assert result["final_accuracy"] == 0.5
    assert result["protocol"] == "dim"


def test_dim_tests_in_eval_mode_and_goes_back_to_training(test_set, monkeypatch):
    log = _record_modes(monkeypatch)
    cfg = _cfg("resnet10", epochs=4, width=4, batch_size=8)
    result = train_dim(cfg, _sampler(4), test_set, PIXELS, CPU, seed=0, ipc=2, num_classes=4, checks=2)
    # (4 * 2) // 8 + 1 = 2 iterations per epoch; tests after epochs 2 and 4
    its = dim_iterations_per_epoch(4, 2, 8)
    train, test = (True, True), (False, False)
    assert log == [train] * (2 * its) + [test] + [train] * (2 * its) + [test]
    assert [e for e, _ in result["checks"]] == [2, 4]
    assert result["accuracy"] == max(a for _, a in result["checks"])


def test_dim_resume_through_checkpointer_is_bit_identical(test_set, tmp_path):
    cfg = _cfg("resnet10", epochs=4, width=4, batch_size=8)   # BN buffers and int counters in the state
    kwargs = dict(seed=7, ipc=2, num_classes=4, checks=2)
    full, full_snap = _final_state(train_dim, cfg, _sampler(4), test_set, PIXELS, CPU, **kwargs)
    ckpts = Checkpointer(tmp_path / "ckpt", params_hash="h")

    def stop(epoch: int, snap: dict) -> None:
        if epoch == 3:   # after the first check: the saved checks list must come back too
            ckpts.save(**checkpoint_kwargs(snap))
            raise _Stop

    with pytest.raises(_Stop):
        train_dim(cfg, _sampler(4), test_set, PIXELS, CPU, on_epoch=stop, **kwargs)
    state = snapshot_from_checkpoint(ckpts.latest())
    assert state["epoch"] == 3 and len(state["meta"]["checks"]) == 1
    resumed, resumed_snap = _final_state(train_dim, cfg, _sampler(4), test_set, PIXELS, CPU, state=state, **kwargs)
    assert resumed == full
    assert _same_weights(full_snap["model"], resumed_snap["model"])


def test_dim_seeds_differ(test_set):
    cfg = _cfg(epochs=2)
    a, sa = _final_state(train_dim, cfg, _sampler(4), test_set, PIXELS, CPU, seed=0, ipc=2, num_classes=4, checks=1)
    b, sb = _final_state(train_dim, cfg, _sampler(4), test_set, PIXELS, CPU, seed=1, ipc=2, num_classes=4, checks=1)
    assert not _same_weights(sa["model"], sb["model"]) and a["train_loss"] != b["train_loss"]


# ------------------------------------------------------------------------------------------- selection
def _ref_herding(phi: list[list[float]], k: int) -> list[int]:
    n, d = len(phi), len(phi[0])
    mu = [sum(phi[i][j] for i in range(n)) / n for j in range(d)]
    chosen: list[int] = []
    for t in range(1, k + 1):
        best, best_dist = -1, math.inf
        for i in range(n):
            if i in chosen:
                continue
            v = [(phi[i][j] + sum(phi[s][j] for s in chosen)) / t for j in range(d)]
            dist = math.sqrt(sum((mu[j] - v[j]) ** 2 for j in range(d)))
            if dist < best_dist:
                best, best_dist = i, dist
        chosen.append(best)
    return chosen


def _ref_k_center(phi: list[list[float]], k: int) -> list[int]:
    n, d = len(phi), len(phi[0])
    mu = [sum(phi[i][j] for i in range(n)) / n for j in range(d)]
    dist = lambda a, b: math.sqrt(sum((a[j] - b[j]) ** 2 for j in range(d)))  # noqa: E731
    chosen = [min(range(n), key=lambda i: dist(phi[i], mu))]
    while len(chosen) < k:
        best, best_d = -1, -math.inf
        for i in range(n):
            if i in chosen:
                continue
            d_i = min(dist(phi[i], phi[s]) for s in chosen)
            if d_i > best_d:
                best, best_d = i, d_i
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(4))
def test_herding_and_k_center_match_brute_force(seed):
    features = torch.randn(30, 5, generator=torch.Generator().manual_seed(seed))
    rows = features.tolist()
    for k in range(1, 7):
        assert herding(features, k).tolist() == _ref_herding(rows, k)
        assert k_center(features, k).tolist() == _ref_k_center(rows, k)
    assert herding(features, 30).sort().values.tolist() == list(range(30))
    with pytest.raises(SkddError):
        k_center(features, 31)


def test_random_subset_per_class_without_duplicates():
    labels = torch.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 0, 2, 0, 1])   # 6, 5 and 7 per class
    pick = random_subset(labels, 4, seed=11)
    assert pick.dtype == torch.long and pick.numel() == 12
    assert len(set(pick.tolist())) == 12
    assert labels[pick].tolist() == [0] * 4 + [1] * 4 + [2] * 4   # class-major
    assert torch.equal(pick, random_subset(labels, 4, seed=11))
    assert not torch.equal(pick, random_subset(labels, 4, seed=12))
    state = torch.get_rng_state()
    random_subset(labels, 2, seed=0)
    assert torch.equal(state, torch.get_rng_state())   # the global RNG is left alone
    with pytest.raises(SkddError, match="class 'cat'"):
        random_subset(labels, 6, seed=0, classes=["dog", "cat", "emu"])   # class 1 has 5 samples
    with pytest.raises(SkddError, match="class 'd' \\(3\\) has 0 samples"):
        random_subset(labels, 1, seed=0, classes=["a", "b", "c", "d"])   # a named class with no samples


def test_select_per_class_dispatch_and_errors():
    g = torch.Generator().manual_seed(0)
    labels = torch.randperm(24, generator=g) % 3
    features = torch.randn(24, 6, generator=g)
    for method, fn in (("herding", herding), ("kcenter", k_center), ("k-center", k_center)):
        pick = select_per_class(method, features, labels, 3, seed=0)
        assert labels[pick].tolist() == [0] * 3 + [1] * 3 + [2] * 3
        for c in range(3):
            idx = torch.nonzero(labels == c).squeeze(1)
            assert pick[3 * c:3 * c + 3].tolist() == idx[fn(features[idx], 3)].tolist()
    assert torch.equal(select_per_class("random", None, labels, 3, seed=4), random_subset(labels, 3, seed=4))
    with pytest.raises(SkddError, match="unknown method"):
        select_per_class("kmeans", features, labels, 3, seed=0)
    with pytest.raises(SkddError, match="needs features"):
        select_per_class("herding", None, labels, 3, seed=0)
    with pytest.raises(SkddError, match="class 0 has 8 samples, fewer than ipc=9"):
        select_per_class("herding", features, labels, 9, seed=0)


def test_extract_features_eval_mode_batched():
    ds = _dataset(25, 4, seed=4)
    torch.manual_seed(0)
    model = create_model("resnet10", in_channels=1, num_classes=4, image_size=28, width=4)
    feats = extract_features(model, ds.images, PIXELS, CPU, batch=10)
    assert model.training   # mode restored
    assert feats.shape == (25, model.feature_dim) and feats.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        whole = model.embed(PIXELS.classifier(ds.images))
    torch.testing.assert_close(feats, whole)
