"""What every benchmark shares: timed windows, the machine's matrix-multiply peak, results."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reslab.io import atomic_write_text

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    from reslab.runtime.host import machine as describe
    from reslab.runtime.host import versions

    return describe() | versions() | {"threads": torch.get_num_threads(),
                                      "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The kind of x86 machine from its CPU flags, as the timings differ by it: "AMX" (bf16
    matrix tiles), "AVX-512 bf16", "AVX-512" or "AVX2" (bf16 emulated: trains in fp32)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith("flags")), []))
    for flag, kind in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 bf16"),
                       ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return kind
    return "other"


def rates(run: Callable[[], int], windows: int, warmup: int = 1) -> list[float]:
    """Items/s of ``windows`` timed calls of ``run`` (which returns how many items it did),
    after ``warmup`` untimed calls (allocator, oneDNN primitive caches, autotuning)."""
    return rates_interleaved({"run": run}, windows, warmup)["run"]


def rates_interleaved(runs: dict[str, Callable[[], int]], windows: int, warmup: int = 1
                      ) -> dict[str, list[float]]:
    """``rates`` of several contenders, their windows taken in turn (a, b, a, b, ...): a
    drift in this machine's speed, which shared CPUs show over minutes, then hits all alike
    instead of whichever ran during it."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    measured: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(windows):
        for label, run in runs.items():
            start = time.perf_counter()
            items = run()
            measured[label].append(items / (time.perf_counter() - start))
    return measured


def summary(measured: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(measured), "min": min(measured), "max": max(measured),
            "windows": len(measured)}


def emulated(dtype: torch.dtype) -> bool:
    """Whether this machine multiplies ``dtype`` without kernels of its own (bf16 on an
    AVX2-only CPU: ~1 GFLOP/s), where a large product would take minutes to time."""
    n = 256
    a = torch.randn(n, n).to(dtype)
    torch.mm(a, a)  # the first call builds the kernel (oneDNN's JIT): not its rate
    start = time.perf_counter()
    torch.mm(a, a)
    return 2 * n**3 / (time.perf_counter() - start) < 10e9


def matmul_peak(dtype: torch.dtype, n: int = 4096, windows: int = 5) -> float:
    """This machine's matrix-multiply rate in FLOP/s: a large square ``torch.mm`` (512 where
    the dtype is emulated: its rate is what matters, and 4096 would take minutes)."""
    if emulated(dtype):
        n, windows = min(n, 512), min(windows, 3)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)

    def one() -> int:
        torch.mm(a, b)
        return 2 * n**3

    return statistics.median(rates(one, windows))


def conv_gemm_peak(dtype: torch.dtype, windows: int = 5) -> float:
    """The same in oneDNN, the library the convolutions run in: a 1x1 convolution is a matrix
    product (16,384 x 1,024 x 1,024). On AMD CPUs torch.mm's fp32 goes to MKL, which does not
    use the fastest kernels there, so convolutions can outrun it."""
    side = 8 if emulated(dtype) else 64  # an emulated dtype: 64x fewer pixels, same rate
    conv = torch.nn.Conv2d(1024, 1024, 1, bias=False).to(dtype)
    x = torch.randn(4, 1024, side, side).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)

    def one() -> int:
        with torch.no_grad():
            conv(x)
        return 2 * 4 * side * side * 1024 * 1024

    return statistics.median(rates(one, windows))


def training_flops_per_image(model: torch.nn.Module, input_size: tuple[int, int, int]) -> float:
    """Forward + backward ≈ 3x the forward's FLOPs (2 per multiply-accumulate)."""
    from reslab.models.summary import summary as model_summary

    return 3 * 2 * model_summary(model, input_size=input_size).macs


def write(name: str, results: dict[str, Any]) -> Path:
    """results/NAME.json; a --quick smoke run goes to NAME-quick.json (not kept in git)."""
    path = RESULTS / f"{name}{'-quick' if results.get('quick') else ''}.json"
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": machine()} | results
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path
