"""Divergence guards: a training run whose losses or weights went non-finite stops before it can publish.

A diverged GAN still writes finite-looking files (NaN weights save fine), so without a guard it would be
checkpointed, published with a manifest and sampled from. The guards raise `Diverged` (a `SkddError`: one
line, exit 2) naming the run, the step and the term; the caller's staging folder then never gets a manifest,
so nothing is published, and checkpoints are only written after the weights were checked, so the newest one
left on disk is the last good state. A re-run with other params (e.g. a lower lr) starts clean, because a
checkpoint made with other params is never resumed.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from skdd.errors import SkddError


class Diverged(SkddError):
    """Training produced a non-finite loss or weight."""


def check_losses(run: str, step: int, losses: Mapping[str, object]) -> None:
    """Refuse the first non-finite float among a step's logged losses (they are host floats already)."""
    for term, value in losses.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise Diverged(f"{run}: diverged at step {step}: {term} is {value}")


def check_weights(run: str, step: int, modules: Mapping[str, torch.nn.Module]) -> None:
    """Refuse the first module with a non-finite floating parameter or buffer (one fused reduction per module)."""
    for name, module in modules.items():
        tensors = [t for t in module.state_dict().values() if torch.is_floating_point(t)]
        if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            bad = next(k for k, t in module.state_dict().items()
                       if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()))
            raise Diverged(f"{run}: diverged at step {step}: weight {name}.{bad} is not finite")
