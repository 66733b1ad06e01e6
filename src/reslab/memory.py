"""What a job will allocate, against what this machine has: the one check every command makes
before it builds a network, decodes a batch or grows a checkpoint, so that a size that passes
each option's own range but not the machine is refused in one line with the figure and the fix
(``needs ~37 GB, this machine has 21 GB available: lower --blocks``), not found by the kernel.

Available memory is the least of ``MemAvailable`` (/proc/meminfo), the room left under the
process's address-space limit (``ulimit -v``) and its cgroup's ``memory.max``; the environment
variable ``RESLAB_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix) lowers it further. A job may
use ``USABLE_FRACTION`` of it: the rest is left to Python, torch and the other processes.

Estimates come from the network itself, shapes only: a forward pass on the ``meta`` device
records every module's output (what training keeps for the backward pass); parameters count
four times in training (weights, gradients, two optimizer moments) and once in inference.
"""

from __future__ import annotations

import math
import os
import re
import resource
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from reslab.errors import ReslabError

USABLE_FRACTION = 0.8  # of the memory available, what one job may plan to allocate
FALLBACK_BYTES = 4 << 30  # where the machine says nothing (not Linux)


class MemoryBudgetError(ReslabError, ValueError):
    """A job that would allocate more memory than this machine has available."""


def available_bytes() -> int:
    """Bytes this process can still allocate (see the module's docstring)."""
    figures = [_meminfo_available(), _address_space_left(), _cgroup_left(), _env_limit()]
    known = [f for f in figures if f is not None]
    return max(0, min(known)) if known else FALLBACK_BYTES


def budget_bytes() -> int:
    """What one job may plan to allocate: ``USABLE_FRACTION`` of the memory available."""
    return int(available_bytes() * USABLE_FRACTION)


def require(needed: float, what: str, fix: str) -> None:
    """Refuse ``what`` (``"eval of resnet18 at 224x224, batch 256"``) when it needs more than
    the budget, in one line naming both figures and ``fix`` (what to lower)."""
    if needed > budget_bytes():
        raise MemoryBudgetError(f"{what} needs ~{format_bytes(needed)}, this machine has "
                                f"{format_bytes(available_bytes())} available: {fix}")


def fitting_batch(per_item: float, fixed: float, batch: int, what: str, fix: str) -> int:
    """The largest batch up to ``batch`` whose ``fixed + per_item * batch`` bytes fit the
    budget; refused (``require``) when not even one item fits."""
    room = budget_bytes() - fixed
    if per_item <= 0:
        return batch
    fits = int(room // per_item) if room > 0 else 0
    if fits < 1:
        require(fixed + per_item, what, fix)
    return max(1, min(batch, fits))


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{max(n, 0) / 1e3:.3g} kB"


# --- estimates ------------------------------------------------------------------------------

def parameter_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(sum, largest) of the bytes of every module output for ONE input of ``input_shape``
    (C, H, W) in float32: the sum is what training keeps for its backward pass, the largest
    (twice, in and out) what inference holds at once. Shapes only: the forward runs on the meta
    device with ``model``'s parameters swapped for meta copies, so nothing is allocated."""
    sizes: list[int] = []

    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * 4)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    state = {k: torch.empty_like(v, device="meta") for k, v in
             (*model.named_parameters(), *model.named_buffers())}
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), MetaShortcuts():  # batch norm and init skipped
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                         torch.float32)  # a network stored in bf16 takes bf16
            torch.func.functional_call(model, state, (torch.empty(1, *input_shape, dtype=dtype,
                                                                  device="meta"),))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    sizes.append(math.prod(input_shape) * 4)
    return sum(sizes), max(sizes)


def training_bytes(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> int:
    """A training step's peak: parameters four times over, every activation of the batch."""
    total, _ = activation_bytes(model, input_shape)
    return 4 * parameter_bytes(model) + batch * total


def inference_per_image(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes one more image of a batch costs in inference: its input and the largest
    activation twice (a layer's input and output), and the float copies eval makes of it."""
    _, largest = activation_bytes(model, input_shape)
    return 3 * largest + 4 * math.prod(input_shape)


def check_training(model: nn.Module, input_shape: tuple[int, ...], batch: int,
                   what: str) -> None:
    require(training_bytes(model, input_shape, batch), f"{what} at "
            f"{'x'.join(map(str, input_shape))}, batch {batch}",
            "lower --batch-size or --resize, or choose a smaller model")


class MetaShortcuts(TorchFunctionMode):
    """Skip what means nothing for meta tensors yet costs about a millisecond a call there.

    Meta tensors hold no values, so weight initialisation is moot, and batch norm keeps the
    shape and is not counted by FlopCounterMode. Without this, resnet1202 takes seconds.
    """

    _SKIPPED = frozenset({"kaiming_uniform_", "uniform_", "normal_", "fill_", "zero_",
                          "batch_norm", "relu"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self._SKIPPED:
            return args[0] if args else next(iter(kwargs.values()))  # the tensor, unchanged
        return func(*args, **kwargs)


# --- what the machine has -----------------------------------------------------------------

def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _address_space_left() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = _status_bytes("VmSize")
    return soft - used if used is not None else soft


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_left() -> int | None:
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def _env_limit() -> int | None:
    text = os.environ.get("RESLAB_MEMORY_LIMIT", "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text, re.IGNORECASE)
    if match is None:
        raise MemoryBudgetError(f"RESLAB_MEMORY_LIMIT={text!r} is not a size: write bytes, or "
                                "a number with K, M, G or T (e.g. 2G)")
    scale = 1024 ** ("KMGT".find(match[2].upper()) + 1) if match[2] else 1
    return int(float(match[1]) * scale)
