"""Progress reporting: a one-line bar on a terminal, plain periodic lines in logs (CI, DVC, pods)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, desc: str, *, start: int = 0, every: int = 50, stream: TextIO | None = None,
                 images_per_step: int = 0):
        self.total, self.desc, self.every = total, desc, max(1, every)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.images_per_step = images_per_step
        self._t0 = time.perf_counter()
        self._start = start
        self._last_draw = 0.0

    def rate(self, step: int) -> float:
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        return (step - self._start) * self.images_per_step / elapsed

    def update(self, step: int, **metrics: float) -> None:
        now = time.perf_counter()
        done = step >= self.total
        if self.tty:
            if not done and now - self._last_draw < 0.2:
                return
            self._last_draw = now
            width = 24
            filled = int(width * step / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.desc} [{bar}] {step}/{self.total} {self._fmt(step, metrics)}")
            if done:
                self.stream.write("\n")
            self.stream.flush()
        elif step % self.every == 0 or done or step == self._start + 1:
            self.stream.write(f"{self.desc} step {step}/{self.total} {self._fmt(step, metrics)}\n")
            self.stream.flush()

    def _fmt(self, step: int, metrics: dict[str, float]) -> str:
        parts = [f"{k}={v:.4g}" for k, v in metrics.items()]
        if self.images_per_step:
            parts.append(f"img/s={self.rate(step):.0f}")
        return " ".join(parts)
