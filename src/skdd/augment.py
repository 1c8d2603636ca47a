"""Differentiable siamese data augmentation (DSA / DiM "DiffAug"), batched and vectorized.

Why this module exists: DSA (Zhao & Bilen 2021) and DiM both augment real and synthetic images with the
*same* random transform before matching, and the transform must be differentiable w.r.t. the images so
that gradients reach the synthetic data / generator. The reference implementations loop over samples in
Python, mix numpy and torch RNGs and re-seed per op; here all parameters are drawn up front by `sample()`
(an explicit `AugParams` record) and `apply()` is a pure function of (x, params). That split is what makes
siamese augmentation trivial (apply one record to two batches) and testable (build a record by hand).

Randomness comes only from the global torch RNG (no Generator objects, no `random`, no numpy), so that
checkpointing `torch.get_rng_state()` (and `torch.cuda.get_rng_state_all()` when sampling on CUDA: parameter
tensors are drawn on the target device to avoid host-device copies) gives bit-identical resumes.

Inputs are float NCHW tensors already normalized by dataset mean/std, so nothing is clamped to [0, 1].
Parameter values follow docs/method.md §1.6: flip p=0.5, scale ratio 1.2, rotate +-15 deg, crop shift
ratio 0.125 with zero border, cutout ratio 0.5, brightness 1.0, saturation 2.0, contrast 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from skdd.errors import SkddError

__all__ = [
    "AugParams", "DiffAug", "OPS", "SCHEMES", "STRATEGY_DEFAULT", "STRATEGY_DIGITS", "dsa_strategy_for",
]

STRATEGY_DIGITS = "color_crop_cutout_scale_rotate"  # DSA README: no flip for digits (flipped digits are other digits)
STRATEGY_DEFAULT = "color_crop_cutout_flip_scale_rotate"
OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
SCHEMES = ("dsa", "dim")
_GEOMETRIC = ("crop", "scale", "rotate")  # DiM draws exactly one of these per call

PROB_FLIP = 0.5
RATIO_SCALE = 1.2
RATIO_ROTATE = 15.0  # degrees
RATIO_CROP_PAD = 0.125
RATIO_CUTOUT = 0.5
BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5


def dsa_strategy_for(dataset_name: str) -> str:
    """DSA strategy string for a dataset: digits (MNIST, SVHN) get no horizontal flip."""
    return STRATEGY_DIGITS if dataset_name.strip().lower() in ("mnist", "svhn") else STRATEGY_DEFAULT


@dataclass
class AugParams:
    """One draw of augmentation parameters for `n` samples (n == 1: one set shared by a whole batch).

    `ops` lists the ops applied, in order. `values` holds per-op tensors whose first dim is n:
    flip (n,) bool; brightness (n,) additive shift; saturation (n,) factor; contrast (n,) factor;
    scale (n, 2) affine factors (sx, sy); rotate (n,) angle (rad).
    crop (n, 2) and cutout (n, 2) are float uniforms in [0, 1) as drawn, mapped to pixels by `apply()` because
    the image size is unknown at sampling time; an integer tensor instead gives explicit pixels:
    crop (dy, dx) with output[i, j] = input[i + dy, j + dx] (zero outside); cutout centre (cy, cx).
    """

    n: int
    ops: tuple[str, ...] = ()
    values: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device) -> AugParams:
        return AugParams(self.n, self.ops, {k: v.to(device) for k, v in self.values.items()})


def _parse(strategy: str) -> list[str]:
    s = (strategy or "").strip().lower()
    if s in ("", "none"):
        return []
    names = s.split("_")
    for name in names:
        if name not in OPS:
            raise SkddError(f"unknown augmentation op {name!r} in strategy {strategy!r}; allowed: {', '.join(OPS)}")
    return names


def _uniform(n: int, device, low: float, high: float) -> Tensor:
    return torch.rand(n, device=device) * (high - low) + low


class DiffAug:
    """Differentiable augmentation with scheme "dsa" (one listed op per call) or "dim" (flip + colour always,
    one of crop/scale/rotate, then cutout). The op choice is made once per call, for the whole batch, as in
    both references; only the op's parameters are per sample (unless shared)."""

    def __init__(self, strategy: str, scheme: str = "dsa"):
        if scheme not in SCHEMES:
            raise SkddError(f"unknown augmentation scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
        self.strategy, self.scheme = strategy, scheme
        self.names = _parse(strategy)
        self.geometric = [o for o in self.names if o in _GEOMETRIC]

    def __repr__(self) -> str:
        return f"DiffAug({self.strategy!r}, scheme={self.scheme!r})"

    @classmethod
    def for_param(cls, key: str, strategy: str, scheme: str = "dsa") -> DiffAug:
        """The augmentation a params field names; a bad strategy is one line naming the key."""
        try:
            return cls(strategy, scheme)
        except SkddError as exc:
            raise SkddError(f"{key}: {exc}") from None

    # ---------------------------------------------------------------- sampling
    def sample(self, n: int, device=None) -> AugParams:
        """Draw the op choice and all parameters for n samples from the global torch RNG."""
        if n < 1:
            raise SkddError(f"augmentation needs at least one sample, got n={n}")
        if not self.names:
            return AugParams(n)
        if self.scheme == "dsa":
            ops = [self.names[int(torch.randint(len(self.names), (1,)).item())]]
        else:
            ops = [o for o in ("flip", "color") if o in self.names]
            if self.geometric:
                ops.append(self.geometric[int(torch.randint(len(self.geometric), (1,)).item())])
            if "cutout" in self.names:
                ops.append("cutout")
        values: dict[str, Tensor] = {}
        for op in ops:
            values.update(self._draw(op, n, device))
        return AugParams(n, tuple(ops), values)

    @staticmethod
    def _draw(op: str, n: int, device) -> dict[str, Tensor]:
        if op == "flip":
            return {"flip": torch.rand(n, device=device) < PROB_FLIP}
        if op == "color":
            return {
                "brightness": (torch.rand(n, device=device) - 0.5) * BRIGHTNESS,
                "saturation": torch.rand(n, device=device) * SATURATION,
                "contrast": torch.rand(n, device=device) + CONTRAST,
            }
        if op == "crop":  # shift in units of the ratio; scaled to pixels in apply() (size unknown here)
            return {"crop": torch.rand(n, 2, device=device)}
        if op == "cutout":
            return {"cutout": torch.rand(n, 2, device=device)}
        if op == "scale":
            return {"scale": _uniform(2 * n, device, 1.0 / RATIO_SCALE, RATIO_SCALE).view(2, n).t().contiguous()}
        if op == "rotate":
            return {"rotate": (torch.rand(n, device=device) - 0.5) * (2 * RATIO_ROTATE / 180 * math.pi)}
        raise AssertionError(op)

    # ---------------------------------------------------------------- applying
    def apply(self, x: Tensor, params: AugParams) -> Tensor:
        """Apply `params` (n == batch, or n == 1 broadcast) to x; differentiable w.r.t. x."""
        if x.dim() != 4 or not x.is_floating_point():
            raise SkddError(f"augmentation expects a float NCHW tensor, got shape {tuple(x.shape)} dtype {x.dtype}")
        if params.n not in (1, x.shape[0]):
            raise SkddError(f"augmentation parameters are for {params.n} samples but the batch has {x.shape[0]}")
        v = {k: t.to(x.device) for k, t in params.values.items()}
        for op in params.ops:
            x = _APPLY[op](x, v)
        return x.contiguous()

    def __call__(self, x: Tensor, shared: bool = False) -> Tensor:
        """Augment x with per-sample parameters, or one shared set (DiM's batch=True) if shared."""
        return self.apply(x, self.sample(1 if shared else x.shape[0], x.device))

    def pair(self, a: Tensor, b: Tensor, shared: bool = True) -> tuple[Tensor, Tensor]:
        """Siamese augmentation: a and b get identical parameters. shared=True: one set for every sample of both
        (batch sizes may differ); shared=False: sample i of a and sample i of b share set i."""
        if not shared and a.shape != b.shape:
            raise SkddError(f"per-sample siamese augmentation needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
        params = self.sample(1 if shared else a.shape[0], a.device)
        return self.apply(a, params), self.apply(b, params)


# -------------------------------------------------------------------- op kernels
def _col(t: Tensor, x: Tensor) -> Tensor:
    return t.to(x.dtype).view(-1, 1, 1, 1)


def _flip(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)


def _color(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    x = x + _col(v["brightness"], x)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * _col(v["saturation"], x) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * _col(v["contrast"], x) + m


def _crop(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    """DSA's pad-by-one-and-clamp translation, as one gather over the flattened padded image."""
    B, C, H, W = x.shape
    r = v["crop"]
    sh, sw = int(H * RATIO_CROP_PAD + 0.5), int(W * RATIO_CROP_PAD + 0.5)
    if r.is_floating_point():  # raw uniforms from sample() -> integers in [-s, s], like randint(-s, s + 1)
        dy = (r[:, 0] * (2 * sh + 1)).floor().long().clamp(max=2 * sh) - sh
        dx = (r[:, 1] * (2 * sw + 1)).floor().long().clamp(max=2 * sw) - sw
    else:
        dy, dx = r[:, 0].long(), r[:, 1].long()
    rows = (torch.arange(H, device=x.device) + dy[:, None] + 1).clamp(0, H + 1)  # (n, H) rows of the padded image
    cols = (torch.arange(W, device=x.device) + dx[:, None] + 1).clamp(0, W + 1)
    idx = (rows[:, :, None] * (W + 2) + cols[:, None, :]).view(-1, 1, H * W).expand(B, C, H * W)
    return F.pad(x, (1, 1, 1, 1)).reshape(B, C, -1).gather(2, idx).view(B, C, H, W)


def _cutout(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    """DSA cutout: zero a (ratio*H, ratio*W) box at a random centre, clipped at the border, as a broadcast mask."""
    B, C, H, W = x.shape
    r = v["cutout"]
    ch, cw = int(H * RATIO_CUTOUT + 0.5), int(W * RATIO_CUTOUT + 0.5)
    if r.is_floating_point():  # DSA: offset ~ randint(0, size + (1 - cut % 2))
        nh, nw = H + (1 - ch % 2), W + (1 - cw % 2)
        cy = (r[:, 0] * nh).floor().long().clamp(max=nh - 1)
        cx = (r[:, 1] * nw).floor().long().clamp(max=nw - 1)
    else:
        cy, cx = r[:, 0].long(), r[:, 1].long()
    ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    y0, x0 = (cy - ch // 2)[:, None], (cx - cw // 2)[:, None]
    in_y = (ys >= y0) & (ys < y0 + ch)  # (n, H)
    in_x = (xs >= x0) & (xs < x0 + cw)  # (n, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep.unsqueeze(1).to(x.dtype)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    """One affine_grid + grid_sample for the whole batch (a shared theta builds one grid and broadcasts it)."""
    B, C, H, W = x.shape
    theta = theta.to(x.dtype)
    grid = F.affine_grid(theta, [theta.shape[0], C, H, W], align_corners=True)
    if theta.shape[0] != B:
        grid = grid.expand(B, H, W, 2)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    s = v["scale"]
    z = torch.zeros_like(s[:, 0])
    return _affine(x, torch.stack([s[:, 0], z, z, z, s[:, 1], z], 1).view(-1, 2, 3))


def _rotate(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    t = v["rotate"]
    c, s, z = torch.cos(t), torch.sin(t), torch.zeros_like(t)
    return _affine(x, torch.stack([c, -s, z, s, c, z], 1).view(-1, 2, 3))


_APPLY = {"flip": _flip, "color": _color, "crop": _crop, "cutout": _cutout, "scale": _scale, "rotate": _rotate}
