"""Registry-driven model tests (in the spirit of timm's tests/test_models.py).

Every registered name is exercised through `create_model` on the shapes the pipeline feeds it, at a
tiny width so the whole file stays fast on a laptop CPU. Default widths appear only where the
parameter count itself is the thing checked, and those models are built but never run.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from skdd.errors import SkddError
from skdd.models import create_model, list_models, model_kind, register_model
from skdd.models.gan import ConditionalBatchNorm2d

NUM_CLASSES = 10
BATCH = 4
WIDTH = 8
MAIN_CONFIGS = [(1, 28), (3, 32)]  # (in_channels, image_size): MNIST/Fashion and CIFAR-10
ALL_CONFIGS = MAIN_CONFIGS + [(3, 28), (1, 32)]


def _cases() -> list[tuple[str, dict]]:
    """Every registered model, with the generator once per conditioning mode."""
    cases = []
    for name in list_models():
        if model_kind(name) == "generator":
            cases += [(name, {"conditioning": "overwrite"}), (name, {"conditioning": "concat"})]
        else:
            cases.append((name, {}))
    return cases


CASES = _cases()
CASE_IDS = [name + "".join(f"-{v}" for v in kw.values()) for name, kw in CASES]


def _build(name: str, cfg: tuple[int, int], **kwargs) -> torch.nn.Module:
    c, s = cfg
    return create_model(name, in_channels=c, num_classes=NUM_CLASSES, image_size=s, width=WIDTH, **kwargs)


def _label_conditioned(model: torch.nn.Module) -> bool:
    """A critic that takes the label as a second input (the projection critic) rather than predicting it."""
    return len(inspect.signature(model.forward).parameters) == 2


def _inputs(model: torch.nn.Module, name: str, cfg: tuple[int, int], seed: int = 123) -> tuple:
    """Inputs drawn from a private generator so they never depend on the global RNG state."""
    g = torch.Generator().manual_seed(seed)
    c, s = cfg
    if model_kind(name) == "generator":
        return torch.randn(BATCH, model.z_dim, generator=g), torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)
    x = torch.randn(BATCH, c, s, s, generator=g)
    if model_kind(name) == "discriminator" and _label_conditioned(model):
        return x, torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)
    return (x,)


def _outputs(model: torch.nn.Module, name: str, inputs: tuple) -> list[torch.Tensor]:
    out = model(*inputs)
    if model_kind(name) == "classifier":
        return [out, model.embed(*inputs)]
    return list(out) if isinstance(out, tuple) else [out]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------- registry


def test_registry_lists_expected_names_sorted_and_by_kind():
    names = list_models()
    assert names == sorted(names)
    assert set(names) >= {"generator", "discriminator", "convnet3", "resnet10", "resnet18",
                          "resnet10_dc", "resnet18_dc", "alexnet", "vgg11"}
    assert list_models("generator") == ["generator"]
    assert list_models("discriminator") == ["discriminator", "projection-discriminator"]
    by_kind = list_models("classifier") + list_models("generator") + list_models("discriminator")
    assert sorted(by_kind) == names


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="convnet3"):
        register_model("convnet3", "classifier")(lambda **kw: None)
    assert model_kind("convnet3") == "classifier"


def test_unknown_name_raises_readable_error():
    with pytest.raises(SkddError, match=r"unknown model 'foo' \(known: .*convnet3"):
        create_model("foo", in_channels=3, num_classes=10, image_size=32)
    with pytest.raises(SkddError, match="'foo'"):
        model_kind("foo")


@pytest.mark.parametrize("name", list_models())
def test_unsupported_image_size_raises(name):
    with pytest.raises(SkddError, match="64") as exc:
        create_model(name, in_channels=3, num_classes=10, image_size=64)
    assert "\n" not in str(exc.value)


def test_unsupported_channels_and_unknown_option_raise():
    with pytest.raises(SkddError, match="channels 2"):
        create_model("convnet3", in_channels=2, num_classes=10, image_size=32)
    with pytest.raises(SkddError, match="widht"):
        create_model("convnet3", in_channels=3, num_classes=10, image_size=32, widht=8)
    with pytest.raises(SkddError, match="width"):
        create_model("vgg11", in_channels=3, num_classes=10, image_size=32, width=0)
    with pytest.raises(SkddError, match="'huge'"):
        create_model("resnet18", in_channels=3, num_classes=10, image_size=32, style="huge")
    with pytest.raises(SkddError, match="'film'"):
        create_model("generator", in_channels=3, num_classes=10, image_size=32, conditioning="film")


# ------------------------------------------------------------------------------------ every model


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_output_shapes(name, kwargs, cfg):
    c, s = cfg
    model = _build(name, cfg, **kwargs)
    inputs = _inputs(model, name, cfg)
    with torch.no_grad():
        out = model(*inputs)
        kind = model_kind(name)
        if kind == "classifier":
            assert out.shape == (BATCH, NUM_CLASSES)
            assert model.embed(*inputs).shape == (BATCH, model.feature_dim)
        elif kind == "generator":
            assert out.shape == (BATCH, c, s, s)
            assert out.min() >= -1 and out.max() <= 1
        elif _label_conditioned(model):
            assert out.shape == (BATCH,)        # one score of each image as a member of its given class
        else:
            src, cls = out
            assert src.shape == (BATCH,)
            assert cls.shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize("cfg", MAIN_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_backward_reaches_every_parameter(name, kwargs, cfg):
    model = _build(name, cfg, **kwargs)
    loss = sum(o.float().pow(2).mean() for o in _outputs(model, name, _inputs(model, name, cfg)))
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("cfg", MAIN_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_seeded_construction_is_deterministic(name, kwargs, cfg):
    def build(seed):
        torch.manual_seed(seed)
        return _build(name, cfg, **kwargs)

    a, b, other = build(0), build(0), build(1)
    sa, sb, so = a.state_dict(), b.state_dict(), other.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], so[k]) for k in sa if k in dict(a.named_parameters()))
    with torch.no_grad():
        for x, y in zip(_outputs(a, name, _inputs(a, name, cfg)), _outputs(b, name, _inputs(b, name, cfg))):
            assert torch.equal(x, y)


@pytest.mark.parametrize(
    "name,cfg,expected",
    [
        ("generator", (3, 32), 3.56e6),
        ("generator", (1, 28), 3.29e6),
        ("discriminator", (3, 32), 3.1e6),
        ("discriminator", (1, 28), 3.1e6),
        ("convnet3", (3, 32), 320e3),
    ],
)
def test_default_param_counts(name, cfg, expected):
    c, s = cfg
    model = create_model(name, in_channels=c, num_classes=10, image_size=s)
    assert abs(_n_params(model) - expected) <= 0.05 * expected


# -------------------------------------------------------------------------------- model specifics


def test_generator_overwrite_conditions_on_label_and_ignores_overwritten_noise():
    torch.manual_seed(0)
    g = create_model("generator", in_channels=3, num_classes=10, image_size=32, width=WIDTH).eval()
    z = torch.randn(BATCH, g.z_dim)
    y = torch.tensor([0, 1, 2, 3])
    z_before = z.clone()
    with torch.no_grad():
        base = g(z, y)
        assert not torch.allclose(base, g(z, torch.tensor([5, 1, 2, 3])))
        z_other = z.clone()
        z_other[:, :10] = torch.randn(BATCH, 10)
        assert torch.equal(base, g(z_other, y))  # DiM semantics: those entries *are* the label
    assert torch.equal(z, z_before)
    assert torch.equal(g.condition(z, y)[:, :10], F.one_hot(y, 10).float())


def test_generator_concat_input_width_and_attributes():
    g = create_model("generator", in_channels=1, num_classes=10, image_size=28, width=WIDTH, z_dim=16,
                     conditioning="concat")
    assert (g.z_dim, g.num_classes, g.conditioning) == (16, 10, "concat")
    assert g.fc[0].in_features == 26
    assert g.condition(torch.zeros(2, 16), torch.tensor([0, 9])).shape == (2, 26)


@pytest.mark.parametrize("z_dim", [5, 10])
def test_generator_overwrite_needs_room_for_noise(z_dim):
    with pytest.raises(SkddError, match=f"z_dim {z_dim}"):
        create_model("generator", in_channels=3, num_classes=10, image_size=32, z_dim=z_dim)
    create_model("generator", in_channels=3, num_classes=10, image_size=32, width=WIDTH, z_dim=z_dim,
                 conditioning="concat")


def test_discriminator_class_head_follows_num_classes():
    d = create_model("discriminator", in_channels=3, num_classes=7, image_size=32, width=WIDTH)
    assert d(torch.randn(2, 3, 32, 32))[1].shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet10", "resnet18"])
def test_dim_resnet_style_follows_image_size_and_can_be_forced(name):
    small = create_model(name, in_channels=3, num_classes=10, image_size=32)
    large = create_model(name, in_channels=1, num_classes=10, image_size=28)
    assert (small.style, small.feature_dim) == ("small", 256)
    assert (large.style, large.feature_dim) == ("large", 512)
    forced = create_model(name, in_channels=3, num_classes=10, image_size=32, style="large", width=WIDTH)
    assert forced.style == "large" and forced(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    forced = create_model(name, in_channels=1, num_classes=10, image_size=28, style="small", width=WIDTH)
    assert forced.style == "small" and forced(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_generator_cbn_conditions_every_norm_and_starts_as_plain_batchnorm():
    """cbn: the label sets each body BatchNorm's scale and shift (per class), on top of concat's input; its gains
    start at 1 and shifts at 0, so at initialisation a cbn body computes what a concat body with the same weights
    does, and a class's shift moves that class's images only."""
    torch.manual_seed(0)
    kw = dict(in_channels=1, num_classes=10, image_size=28, width=WIDTH, z_dim=16)
    g = create_model("generator", conditioning="cbn", **kw).eval()
    plain = create_model("generator", conditioning="concat", **kw).eval()
    cbns = [m for m in g.body if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == 7 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.body)
    plain.fc.load_state_dict(g.fc.state_dict())
    for mine, theirs in zip(g.body, plain.body):
        if not isinstance(mine, ConditionalBatchNorm2d):
            theirs.load_state_dict(mine.state_dict())
    z, y, y5 = torch.randn(BATCH, 16), torch.tensor([0, 1, 2, 3]), torch.tensor([5, 1, 2, 3])
    with torch.no_grad():
        assert torch.allclose(g(z, y), plain(z, y), atol=1e-6)
        cbns[0].shift.weight[5].fill_(3.0)
        moved = (g(z, y5) - plain(z, y5)).abs().flatten(1).amax(1)
        assert moved[0] > 1e-3 and moved[1:].max() < 1e-6
    g(z, y).sum().backward()
    assert cbns[-1].gain.weight.grad[y].abs().sum() > 0 and cbns[-1].gain.weight.grad[5].abs().sum() == 0
