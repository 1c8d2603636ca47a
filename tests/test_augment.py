"""Tests for skdd.augment: shapes, bounds, exact colour/crop/cutout maths, siamese pairing, gradients, RNG."""

import math

import pytest
import torch
import torch.nn.functional as F

from skdd.augment import (
    OPS, STRATEGY_DEFAULT, STRATEGY_DIGITS, AugParams, DiffAug, dsa_strategy_for,
)
from skdd.errors import SkddError



def _x(b=4, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)  # test data only; the module itself uses the global RNG
    return torch.randn(b, c, h, w, generator=g) * 2 + 0.5


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shared", [False, True])
def test_each_op_keeps_shape_dtype_device_and_bounds(op, shared):
    x = _x()
    aug = DiffAug(op)
    for seed in range(5):
        torch.manual_seed(seed)
        y = aug(x, shared=shared)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all()
        if op != "color":
            lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
            assert y.min().item() >= lo - 1e-5 and y.max().item() <= hi + 1e-5


@pytest.mark.parametrize("scheme", ["dsa", "dim"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_schemes_keep_shape_dtype(scheme, dtype):
    x = _x(h=7, w=9).to(dtype)  # odd, non-square sizes
    aug = DiffAug(STRATEGY_DEFAULT, scheme)
    for _ in range(10):
        y = aug(x)
        assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()


def test_identity_strategies():
    x = _x()
    for s in ("", "none", "None"):
        aug = DiffAug(s)
        assert torch.equal(aug(x), x)
        assert aug.sample(3, "cpu").ops == ()


def test_color_matches_hand_computation():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    p = AugParams(1, ("color",), {"brightness": torch.tensor([0.2]), "saturation": torch.tensor([1.7]),
                                   "contrast": torch.tensor([0.75])})
    # +0.2 -> [.2, 1.2, 2.2, 3.2]; saturation is identity for one channel; contrast around mean 1.7, factor .75
    want = torch.tensor([[[[0.575, 1.325], [2.075, 2.825]]]])
    assert torch.allclose(DiffAug("color").apply(x, p), want, atol=1e-6)
    # two channels: saturation scales the deviation from the per-pixel channel mean
    x2 = torch.tensor([[[[1.0]], [[3.0]]]])
    p2 = AugParams(1, ("color",), {"brightness": torch.tensor([0.0]), "saturation": torch.tensor([0.5]),
                                    "contrast": torch.tensor([1.0])})
    assert torch.allclose(DiffAug("color").apply(x2, p2), torch.tensor([[[[1.5]], [[2.5]]]]))


def test_color_ranges_match_references():
    torch.manual_seed(0)
    v = DiffAug("color").sample(20000, "cpu").values
    assert -0.5 <= v["brightness"].min() and v["brightness"].max() < 0.5
    assert 0.0 <= v["saturation"].min() and v["saturation"].max() < 2.0
    assert 0.5 <= v["contrast"].min() and v["contrast"].max() < 1.5


def _dsa_crop_reference(x, dy, dx):
    """DC/DSA utils.rand_crop with given integer translations (per sample)."""
    B, _, H, W = x.shape
    gb, gx, gy = torch.meshgrid(torch.arange(B), torch.arange(H), torch.arange(W), indexing="ij")
    gx = torch.clamp(gx + dy.view(B, 1, 1) + 1, 0, H + 1)
    gy = torch.clamp(gy + dx.view(B, 1, 1) + 1, 0, W + 1)
    xp = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return xp.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def test_crop_equals_dsa_reference_and_shift_range():
    x = _x(b=9, h=8, w=10)
    dy = torch.tensor([-1, 0, 1, 3, -1, 0, 2, -1, 1])  # s = int(8*.125+.5) = 1 rows, int(10*.125+.5) = 1 cols
    dx = torch.tensor([0, -1, 1, -4, 5, 0, 1, 1, -1])
    p = AugParams(9, ("crop",), {"crop": torch.stack([dy, dx], 1)})
    assert torch.equal(DiffAug("crop").apply(x, p), _dsa_crop_reference(x, dy, dx))
    # drawn uniforms map onto every integer shift in [-4, 4] at 32 px (DSA's randint(-4, 5))
    torch.manual_seed(0)
    r = DiffAug("crop").sample(2000, "cpu").values["crop"]
    shifts = (r * 9).floor() - 4
    assert set(shifts.unique().tolist()) == set(range(-4, 5))


def test_cutout_box_size_and_clipping():
    x = torch.ones(3, 1, 8, 8)
    p = AugParams(3, ("cutout",), {"cutout": torch.tensor([[4, 4], [0, 0], [8, 7]])})
    y = DiffAug("cutout").apply(x, p)
    assert (y[0] == 0).sum() == 16 and (y[0, 0, 2:6, 2:6] == 0).all()  # 4x4 box (ratio .5) centred at (4, 4)
    assert (y[1] == 0).sum() == 4 and (y[1, 0, :2, :2] == 0).all()  # clipped at the top-left corner
    assert (y[2] == 0).sum() == 6 and (y[2, 0, 6:8, 5:8] == 0).all()  # clipped at the bottom-right
    # same as DC/DSA utils.rand_cutout for explicit offsets
    cy, cx = torch.tensor([4, 0, 8]), torch.tensor([4, 0, 7])
    gb, gx, gy = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    gx = torch.clamp(gx + cy.view(3, 1, 1) - 2, min=0, max=7)
    gy = torch.clamp(gy + cx.view(3, 1, 1) - 2, min=0, max=7)
    mask = torch.ones(3, 8, 8)
    mask[gb, gx, gy] = 0
    assert torch.equal(y, x * mask.unsqueeze(1))
    torch.manual_seed(0)
    for _ in range(20):
        z = DiffAug("cutout")(torch.ones(4, 2, 8, 8))
        zeros = (z == 0).sum(dim=(1, 2, 3))
        assert (zeros > 0).all() and (zeros <= 2 * 16).all()


def test_flip_scale_rotate_with_known_params():
    x = _x(b=2)
    aug = DiffAug("flip")
    y = aug.apply(x, AugParams(2, ("flip",), {"flip": torch.tensor([True, False])}))
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])
    y = DiffAug("scale").apply(x, AugParams(1, ("scale",), {"scale": torch.tensor([[1.0, 1.0]])}))
    assert torch.allclose(y, x, atol=1e-5)
    y = DiffAug("rotate").apply(x, AugParams(1, ("rotate",), {"rotate": torch.tensor([0.0])}))
    assert torch.allclose(y, x, atol=1e-5)
    y = DiffAug("rotate").apply(x, AugParams(1, ("rotate",), {"rotate": torch.tensor([math.pi])}))
    assert torch.allclose(y, x.flip(-1).flip(-2), atol=1e-4)  # 180 degrees on a square image
    torch.manual_seed(0)
    v = DiffAug("scale_rotate").sample(1, "cpu")
    assert v.n == 1
    r = DiffAug("rotate").sample(5000, "cpu").values["rotate"]
    assert r.abs().max() <= math.radians(15) + 1e-6 and r.abs().max() > math.radians(14)


@pytest.mark.parametrize("scheme", ["dsa", "dim"])
@pytest.mark.parametrize("shared", [True, False])
def test_pair_applies_identical_parameters(scheme, shared):
    x = _x(b=6)
    aug = DiffAug(STRATEGY_DEFAULT, scheme)
    for seed in range(8):
        torch.manual_seed(seed)
        a, b = aug.pair(x, x.clone(), shared=shared)
        assert torch.equal(a, b)


def test_pair_shared_allows_different_batch_sizes_and_per_sample_requires_equal():
    aug = DiffAug("color_crop_cutout", "dim")
    a, b = aug.pair(_x(b=4), _x(b=2, seed=1), shared=True)
    assert a.shape[0] == 4 and b.shape[0] == 2
    with pytest.raises(SkddError, match="equal shapes"):
        aug.pair(_x(b=4), _x(b=2), shared=False)


@pytest.mark.parametrize("op", OPS)
def test_shared_vs_per_sample(op):
    img = _x(b=1).expand(16, 3, 8, 8).contiguous()  # identical images
    aug = DiffAug(op)
    torch.manual_seed(1)
    a, b = aug.pair(img, img, shared=True)
    assert torch.equal(a, b) and all(torch.equal(a[0], a[i]) for i in range(16))
    torch.manual_seed(1)
    a, b = aug.pair(img, img, shared=False)
    assert torch.equal(a, b)
    assert any(not torch.equal(a[0], a[i]) for i in range(16))  # per-sample parameters differ


@pytest.mark.parametrize("strategy,scheme", [(op, "dsa") for op in OPS] + [(STRATEGY_DEFAULT, "dim")])
def test_gradients_flow_to_input(strategy, scheme):
    x = _x(b=3).requires_grad_(True)
    torch.manual_seed(0)
    y = DiffAug(strategy, scheme)(x)
    (y * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()  # weighted: plain sum is flat for contrast
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("scheme", ["dsa", "dim"])
def test_global_seed_reproducibility(scheme):
    x = _x()
    aug = DiffAug(STRATEGY_DEFAULT, scheme)
    torch.manual_seed(123)
    y1 = [aug(x) for _ in range(5)]
    torch.manual_seed(123)
    y2 = [aug(x) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(y1, y2))
    torch.manual_seed(124)
    y3 = [aug(x) for _ in range(5)]
    assert any(not torch.equal(a, b) for a, b in zip(y1, y3))
    # resuming from a saved global RNG state reproduces the continuation bit for bit
    torch.manual_seed(5)
    aug(x)
    state = torch.get_rng_state()
    z1 = aug(x)
    torch.set_rng_state(state)
    assert torch.equal(aug(x), z1)


def test_dsa_picks_exactly_one_op_per_call():
    x = _x(b=8)
    aug = DiffAug("flip_cutout", "dsa")
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        p = aug.sample(8, "cpu")
        assert len(p.ops) == 1 and p.ops[0] in ("flip", "cutout")
        seen.add(p.ops[0])
        y = aug.apply(x, p)
        has_zero_box = bool((y == 0).any())
        assert has_zero_box == (p.ops[0] == "cutout")  # cutout alone zeroes; flip alone never does
        if p.ops[0] == "flip":
            assert all(torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(-1)) for i in range(8))
    assert seen == {"flip", "cutout"}
    torch.manual_seed(0)
    counts = {}
    for _ in range(600):
        op = DiffAug(STRATEGY_DEFAULT).sample(2, "cpu").ops[0]
        counts[op] = counts.get(op, 0) + 1
    assert set(counts) == set(OPS) and min(counts.values()) > 50  # roughly uniform over the six


def test_dim_applies_flip_and_colour_always_and_one_geometric():
    aug = DiffAug(STRATEGY_DEFAULT, "dim")
    torch.manual_seed(0)
    geo = set()
    for _ in range(60):
        p = aug.sample(4, "cpu")
        assert p.ops[:2] == ("flip", "color") and p.ops[-1] == "cutout" and len(p.ops) == 4
        assert p.ops[2] in ("crop", "scale", "rotate")
        geo.add(p.ops[2])
    assert geo == {"crop", "scale", "rotate"}
    assert DiffAug("color_crop_cutout", "dim").sample(1, "cpu").ops == ("color", "crop", "cutout")
    assert DiffAug("color", "dim").sample(2, "cpu").ops == ("color",)


def test_errors():
    with pytest.raises(SkddError, match="'blur'.*allowed: color, crop, cutout, flip, scale, rotate"):
        DiffAug("color_blur")
    with pytest.raises(SkddError, match="scheme"):
        DiffAug("color", scheme="xyz")
    aug = DiffAug("color")
    with pytest.raises(SkddError, match="3 samples"):
        aug.apply(_x(b=4), aug.sample(3, "cpu"))
    with pytest.raises(SkddError, match="NCHW"):
        aug(torch.zeros(3, 8, 8))


def test_strategy_helpers():
    assert dsa_strategy_for("mnist") == STRATEGY_DIGITS and "flip" not in STRATEGY_DIGITS
    assert dsa_strategy_for("MNIST") == STRATEGY_DIGITS
    assert dsa_strategy_for("fashionmnist") == STRATEGY_DEFAULT
    assert dsa_strategy_for("cifar10") == STRATEGY_DEFAULT


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device_kept():
    x = _x().cuda().requires_grad_(True)
    for scheme in ("dsa", "dim"):
        y = DiffAug(STRATEGY_DEFAULT, scheme)(x)
        assert y.device == x.device
        a, b = DiffAug(STRATEGY_DEFAULT, scheme).pair(x, x, shared=False)
        assert torch.equal(a, b)
        y.sum().backward()
