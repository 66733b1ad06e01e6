"""Channel attention a unit applies to its branch before the addition, chosen by name.

A factory is ``make(channels, ratio)``; ``ratio`` is the spec's ``attention_ratio``, or None
for the module's own default. Both built-ins are timm's, with its parameter names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from reslab.models.registry import Registry

ATTENTION: Registry[Callable[[int, float | None], nn.Module]] = Registry("attention",
                                                                        "attention")


def register_attention(name: str, factory: Callable[[int, float | None], nn.Module] | None = None,
                       **kw):
    """Register ``factory(channels, ratio) -> nn.Module`` (same shape out as in) as
    ``attention=name``; usable as a decorator on a class taking (channels, ratio)."""
    return ATTENTION.register(name, factory, **kw)


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` (at least ``divisor``), as timm rounds widths."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


@register_attention("se")
class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): pool, 1x1 conv down by ``ratio``, ReLU,
    1x1 conv up, sigmoid gate. Default ratio 1/16; ResNet-RS uses 1/4."""

    def __init__(self, channels: int, ratio: float | None = None):
        super().__init__()
        reduced = make_divisible(channels * (1 / 16 if ratio is None else ratio))
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


@register_attention("eca")
class EfficientChannelAttention(nn.Module):
    """ECA (Wang et al. 2020): a 1-D conv across the pooled channels, its kernel growing
    with log2(channels); no reduction, so ``ratio`` is unused."""

    def __init__(self, channels: int, ratio: float | None = None):
        super().__init__()
        t = int(abs(math.log2(channels) + 1) / 2)
        kernel = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # N, 1, C
        return x * y.sigmoid().transpose(1, 2).unsqueeze(-1)  # N, C, 1, 1
