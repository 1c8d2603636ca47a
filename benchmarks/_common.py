"""Bits the benchmark scripts share: device sync, step timing, peak memory, and the distill-step image count.

The scripts run as `python benchmarks/<name>.py`, so this folder is on `sys.path` and they import it as `_common`.
"""

from __future__ import annotations

import resource
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a host timer read afterwards covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], steps: int, device: torch.device, warmup: int = 1) -> float:
    """Seconds per call of `fn`, over `steps` calls after `warmup` untimed ones (allocations, cudnn autotune)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak-memory window (CPU: the process high-water mark cannot be reset)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak bytes allocated by tensors since the last reset, in MiB. CPU: the process's peak RSS
    (`ru_maxrss`, KiB on Linux) in MiB, a high-water mark over the whole process lifetime."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def distill_images_per_step(batch: int, pool_steps: int) -> int:
    """Images through a model in one distill step: `pool_steps` pool-training batches, the real and synthetic
    matching batches, and three GAN batches (G's fake, D's real and fake)."""
    return batch * (pool_steps + 2) + batch * 3
