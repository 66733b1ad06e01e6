"""The small layers a unit is made of, each chosen by name: normalisation, activation,
anti-aliased downsampling; and stochastic depth (``DropPath``).

The defaults are torchvision's (BatchNorm, ReLU); the others are timm's, with the same
parameters and buffers, so their weight files load as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reslab.models.registry import Registry

# channels -> a normalisation layer
NORMS: Registry[Callable[[int], nn.Module]] = Registry("normalisation", "norm")
# () -> an activation layer
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation", "act")


@dataclass(frozen=True)
class AntiAlias:
    """A downsampling that low-pass filters first (Zhang 2019): ``make(channels, stride)``.

    In a unit it follows a conv run at stride 1, and its output must have the size the strided
    3x3 conv's would, ceil(side / stride), odd sides included: the shortcut's has it.
    ``replaces_max_pool``: in the stem it stands in for the 3x3 max-pool (an average pool
    does), made by ``stem_pool(channels, stride)`` if given, else ``make``; otherwise the
    max-pool runs at stride 1 and this does the striding, as timm does.
    """

    make: Callable[[int, int], nn.Module]
    replaces_max_pool: bool = False
    stem_pool: Callable[[int, int], nn.Module] | None = None


ANTI_ALIAS: Registry[AntiAlias] = Registry("anti-aliasing", "anti_alias")


def register_norm(name: str, factory: Callable[[int], nn.Module] | None = None, **kw):
    """Register ``factory(channels) -> nn.Module`` as ``norm=name``."""
    return NORMS.register(name, factory, **kw)


def register_act(name: str, factory: Callable[[], nn.Module] | None = None, **kw):
    """Register ``factory() -> nn.Module`` as ``act=name``."""
    return ACTIVATIONS.register(name, factory, **kw)


def register_anti_alias(name: str, kind: AntiAlias, **kw) -> AntiAlias:
    return ANTI_ALIAS.register(name, kind, **kw)


@torch.fx.wrap
def _safe_group_norm_input(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """torch 2.13's CPU GroupNorm backward segfaults on a channels_last input that does not
    require grad while the norm's weight does (a frozen first conv: --whiten-stem). Such an
    input goes in contiguous: one copy of one map, no gradient computed that was not."""
    if (x.device.type == "cpu" and torch.is_grad_enabled() and not x.requires_grad
            and weight is not None and weight.requires_grad and x.dim() == 4
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
        return x.contiguous()
    return x


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (its parameters and state dict) that does not crash torch's CPU backward
    on a channels_last input without grad; the same numbers as nn.GroupNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_safe_group_norm_input(x, self.weight))


def group_norm(channels: int) -> nn.GroupNorm:
    # timm's GroupNorm: 32 groups; fewer where the channels do not divide by 32
    return GroupNorm(math.gcd(32, channels), channels)


register_norm("batchnorm", nn.BatchNorm2d)
register_norm("groupnorm", group_norm)
register_act("relu", nn.ReLU)
register_act("silu", nn.SiLU)
register_act("gelu", nn.GELU)


class BlurPool2d(nn.Module):
    """A fixed [1 2 1] x [1 2 1] / 16 blur, then striding (timm's BlurPool2d, reflect-padded).

    The filter is a non-persistent buffer: it is no weight, and weight files do not hold it.
    """

    def __init__(self, channels: int, stride: int = 2):
        super().__init__()
        self.channels, self.stride = channels, stride
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("filt", (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3)
                             .contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt, stride=self.stride, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}"


register_anti_alias("blur", AntiAlias(lambda channels, stride: BlurPool2d(channels, stride)))
# timm's avgpool anti-aliasing is nn.AvgPool2d(stride): at an odd side it gives one row and
# column fewer than the shortcut (timm's own resnetaa50d fails there). In a unit reslab pools
# in ceil mode, as the D shortcut's pool does: equal to timm's wherever timm's runs (even
# sides), and the shortcut's size at odd ones. The stem keeps timm's pool, so that the maps
# after it, and the outputs, stay timm's at every input size timm takes.
register_anti_alias("avgpool", AntiAlias(
    lambda channels, stride: nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False),
    replaces_max_pool=True, stem_pool=lambda channels, stride: nn.AvgPool2d(stride)))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, each sample's branch is dropped
    with probability ``rate`` and kept ones scaled by 1 / (1 - rate); identity in eval."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"
