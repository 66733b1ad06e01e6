"""Where and how a run computes: the device, the autocast precision, CPU threads and
determinism, resolved from a config's strings once, for training and inference alike."""

from __future__ import annotations

import contextlib

import torch

from reslab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU. A device this machine lacks is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda asked for, but no CUDA GPU is available: use "
                              "--device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} does not exist: this machine has "
                              f"{torch.cuda.device_count()} GPU(s), cuda:0 to "
                              f"cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported here: use auto, cpu or cuda[:N]")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """bf16 only where it is fast: CUDA with bf16, or a CPU whose oneDNN has bf16 kernels
    (AVX512-BF16/AMX). Elsewhere bf16 convolutions fall back to slow reference code."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision ("fp32" means none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def configure(threads: int | None, deterministic: bool) -> None:
    """Process-wide settings a run asks for (torch keeps them per process)."""
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
