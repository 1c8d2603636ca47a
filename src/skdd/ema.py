"""An exponential moving average of the generator's weights (BigGAN's / StyleGAN's G_ema).

After every optimizer step of G: `ema_p = decay * ema_p + (1 - decay) * p` for each parameter, and each
buffer (BatchNorm running statistics, `num_batches_tracked`) copied from G as it is. The average is a
separate module (a deep copy of G, eval mode, no gradients) that `pretrain`/`distill` checkpoint with the
others and save beside G as `generator_ema.safetensors`; `sample` and the `dim` evaluation draw from it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    """The moving average of `g`'s weights; starts as a copy of `g` (or of `init`, a state dict, when given)."""

    def __init__(self, g: nn.Module, decay: float, init: dict[str, torch.Tensor] | None = None):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(g).eval().requires_grad_(False)
        for p in self.module.parameters():
            p.grad = None
        if init is not None:
            self.module.load_state_dict(init)
        self._params = list(self.module.parameters())
        self._buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self, g: nn.Module) -> None:
        """One step towards `g`'s current weights (call after each optimizer step of `g`)."""
        params = [p.detach() for p in g.parameters()]
        buffers = list(g.buffers())
        if len(params) != len(self._params) or len(buffers) != len(self._buffers):
            raise ValueError("EMA module and generator differ in structure")
        if params:
            torch._foreach_lerp_(self._params, params, 1.0 - self.decay)
        for mine, theirs in zip(self._buffers, buffers):
            mine.copy_(theirs)
