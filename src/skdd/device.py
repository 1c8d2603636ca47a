"""Device selection and the speed switches that only make sense on CUDA.

CPU runs are deterministic (the resume test relies on it). On CUDA, bf16 autocast and
channels_last are on by default: they roughly double convolution throughput on recent GPUs.
"""

from __future__ import annotations

import contextlib

import torch

from skdd.errors import SkddError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SkddError("device: 'cuda' requested but no CUDA device is available (use device: auto or cpu)")
    if name not in DEVICES:
        raise SkddError(f"device: unknown device {name!r} (allowed: {', '.join(DEVICES)})")
    return torch.device(name)


def seed_everything(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cpu":
        # CPU kernels are deterministic at a fixed thread count; use_deterministic_algorithms would only
        # add a 3 s import of torch._inductor per process.
        torch.set_flush_denormal(True)   # denormal floats in GAN training slow CPU steps by up to 30x
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def amp_on(device: torch.device, amp: bool, cpu: bool = False) -> bool:
    """Whether a stage autocasts to bf16: with `amp` on CUDA, and on the CPU only when `cpu` too. The CPU is opt-in
    (`cpu_amp` in pretrain and distill): bf16 changes the numbers, is fast only on CPUs with native bf16
    (AVX512-BF16, AMX: about 1.9x on G and D at width 196 on a Zen 4 EPYC) and slower on the rest."""
    return bool(amp) and (device.type == "cuda" or (cpu and device.type == "cpu"))


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on `device` when `enabled`, which callers resolve with `amp_on`."""
    if enabled and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    module = module.to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module
