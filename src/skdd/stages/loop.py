"""The checkpointed step loop shared by `pretrain` and `distill` (nanoGPT's single resume switch:
re-running the same command with the same params resumes; other params start fresh)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from skdd import checkpoint as ckpt_mod
from skdd import telemetry
from skdd.guard import Diverged, check_losses, check_weights
from skdd.progress import Progress


class Trainable(Protocol):
    def step(self) -> dict[str, float]: ...
    def modules(self) -> dict: ...
    def optimizers(self) -> dict: ...
    def state_tensors(self) -> dict: ...
    def meta(self) -> dict[str, Any]: ...
    def resume(self, ckpt: ckpt_mod.Checkpoint) -> None: ...
    def sampler(self): ...


def run_steps(trainer: Trainable, *, name: str, ckpts: ckpt_mod.Checkpointer, steps: int, log_every: int,
              checkpoint_every: int, images_per_step: int, probe=None,
              probe_every: int = 0) -> tuple[list[dict], float]:
    """Run steps 1..`steps`, resuming from the newest checkpoint; returns the logged curves and wall time.

    Every step's losses and, before each checkpoint and at the end, every weight must be finite (`skdd.guard`):
    a diverged run raises with the step and term, keeps only checkpoints of finite weights, and publishes nothing.
    `probe(generator, step)` (skdd.probe), when given, runs every `probe_every` steps and at the last on
    `trainer.sampler()`; its figures join that step's row of the curves and the Prometheus gauges.
    """
    start, curves = 0, []
    resumed = ckpts.latest()
    if resumed is not None:
        trainer.resume(resumed)
        if probe is not None:
            probe.load_state_tensors(resumed.tensors)
        start, curves = resumed.step, resumed.meta["curves"]
        print(f"{name}: resuming from step {start} ({ckpts.folder})", flush=True)
    elif ckpts.stale():
        print(f"{name}: params changed since the last checkpoint; starting fresh", flush=True)
        ckpts.clear()
    t0 = time.perf_counter()
    progress = Progress(steps, name, start=start, every=log_every, images_per_step=images_per_step)
    telemetry.set_planned(steps)
    telemetry.report_step(start, {})
    last_good = start
    try:
        for step in range(start + 1, steps + 1):
            losses = trainer.step()
            check_losses(name, step, losses)
            if probe is not None and (step % probe_every == 0 or step == steps):
                losses = {**losses, **probe(trainer.sampler(), step)}
            if step % log_every == 0 or step == steps or "grad_ratio" in losses or "probe_cas" in losses:
                # a measured or probed step is always kept
                curves.append({"step": step, **losses})
            progress.update(step, **{k: v for k, v in losses.items() if isinstance(v, float)})
            telemetry.report_step(step, losses, progress.rate(step))   # in memory only: pushing is another thread's
            if step % checkpoint_every == 0 and step < steps:
                check_weights(name, step, trainer.modules())
                tensors = {**trainer.state_tensors(), **(probe.state_tensors() if probe is not None else {})}
                ckpts.save(step, trainer.modules(), trainer.optimizers(), tensors=tensors,
                           meta={"curves": curves, **trainer.meta()})
                last_good = step
        check_weights(name, steps, trainer.modules())
    except Diverged as exc:
        kept = f"the checkpoint of step {last_good} is kept" if last_good else "no checkpoint was made"
        raise Diverged(f"{exc}; nothing published, {kept}; change the params (e.g. a lower lr) and re-run, "
                       "which starts clean") from None
    return curves, time.perf_counter() - t0
