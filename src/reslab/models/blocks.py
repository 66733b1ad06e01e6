"""Residual units: one class for basic and bottleneck units in all five BN/ReLU orderings.

A unit is ``post(branch(pre(x)) + shortcut(x))``. Which layers run, and in what order, is
data (``ResidualUnit.pre / branch / post``: lists of submodule names), so the five orderings
of "Identity Mappings in Deep Residual Networks" differ in one table, not five classes.
Submodule names follow torchvision (``conv1``, ``bn1``, ..., ``downsample.0/1``) so its
weight files load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reslab.models.small_map import conv_forward
from reslab.models.spec import Block, Ordering, Shortcut, StrideOn


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)


def _layer_order(ordering: Ordering, convs: int) -> tuple[list[str], list[str], list[str]]:
    """(pre, branch, post) as submodule names, for a unit with ``convs`` convolutions.

    In the pre-activation orderings ``pre`` is shared: a projection shortcut sees the
    activated input too, as the paper prescribes after a stand-alone conv.
    """
    conv_bn = [[f"conv{i}", f"bn{i}"] for i in range(1, convs + 1)]
    relu = "relu"
    if ordering is Ordering.ORIGINAL:
        branch = [n for i, cb in enumerate(conv_bn) for n in (cb + [relu] if i < convs - 1 else cb)]
        return [], branch, [relu]
    if ordering is Ordering.BN_AFTER_ADD:
        branch = [n for cb in conv_bn[:-1] for n in cb + [relu]] + [f"conv{convs}"]
        return [], branch, [f"bn{convs}", relu]
    if ordering is Ordering.RELU_BEFORE_ADD:
        branch = [n for cb in conv_bn for n in cb + [relu]]
        return [], branch, []
    if ordering is Ordering.RELU_PREACT:
        branch = [n for i, cb in enumerate(conv_bn) for n in (cb + [relu] if i < convs - 1 else cb)]
        return [relu], branch, []
    # FULL_PREACT: bn_i sits before conv_i
    branch = [n for i in range(2, convs + 1) for n in (f"conv{i - 1}", f"bn{i}", relu)]
    return ["bn1", relu], branch + [f"conv{convs}"], []


class PadShortcut(nn.Module):
    """Option A of He et al. 2015: subsample, then zero-pad the extra channels. No weights."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class ResidualUnit(nn.Module):
    """A basic or bottleneck unit; ``shortcut='none'`` makes it a plain (non-residual) unit."""

    def __init__(
        self,
        block: Block,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        shortcut: Shortcut = Shortcut.PROJECTION,
        ordering: Ordering = Ordering.ORIGINAL,
        bias: bool = False,
        bottleneck_stride: StrideOn = StrideOn.CONV3X3,
    ):
        super().__init__()
        block, shortcut, ordering = Block(block), Shortcut(shortcut), Ordering(ordering)
        bottleneck_stride = StrideOn(bottleneck_stride)
        self.ordering = ordering
        self.is_plain = shortcut is Shortcut.NONE
        if block is Block.BASIC:
            out_channels = width
            convs = [
                conv3x3(in_channels, width, stride, groups, bias),
                conv3x3(width, width, 1, groups, bias),
            ]
        else:
            inner = width * width_per_group // 64 * groups
            out_channels = width * 4
            s1, s3 = (stride, 1) if bottleneck_stride is StrideOn.CONV1X1 else (1, stride)
            convs = [
                conv1x1(in_channels, inner, s1, bias),
                nn.Conv2d(inner, inner, 3, s3, 1, groups=groups, bias=bias),
                conv1x1(inner, out_channels, 1, bias),
            ]
        # each BN normalises what its position in the ordering sees
        if ordering is Ordering.FULL_PREACT:
            bn_channels = [c.in_channels for c in convs]
        else:
            bn_channels = [c.out_channels for c in convs]
        layers = {f"conv{i}": c for i, c in enumerate(convs, start=1)}
        layers |= {f"bn{i}": nn.BatchNorm2d(c) for i, c in enumerate(bn_channels, start=1)}
        layers["relu"] = nn.ReLU()
        self.pre, self.branch, self.post = _layer_order(ordering, len(convs))
        for name in dict.fromkeys(self.pre + self.branch + self.post):  # execution order
            self.add_module(name, layers[name])
        self.downsample = self._make_shortcut(shortcut, in_channels, out_channels, stride, bias)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    @staticmethod
    def _make_shortcut(kind, cin, cout, stride, bias) -> nn.Module | None:
        if kind is Shortcut.NONE or (stride == 1 and cin == cout):
            return None  # identity, or no shortcut at all for a plain unit
        if kind is Shortcut.PAD:
            return PadShortcut(stride, cout - cin)
        if kind is Shortcut.CONV:
            return nn.Sequential(conv1x1(cin, cout, stride, bias))
        return nn.Sequential(conv1x1(cin, cout, stride, bias), nn.BatchNorm2d(cout))

    def _run(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = conv_forward(getattr(self, name), x)  # plain layer(x) but on tiny maps
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._run(self.pre, x)
        y = self._run(self.branch, h)
        if not self.is_plain:
            if self.downsample is None:
                y = y + x
            elif isinstance(self.downsample, PadShortcut):
                y = y + self.downsample(x)
            else:
                y = y + self.downsample(h)
        return self._run(self.post, y)

    def last_scaled_layer(self) -> nn.Module:
        """The branch's last BN or conv: zeroing it makes the branch output zero."""
        name = next(n for n in reversed(self.branch) if n != "relu")
        return getattr(self, name)

    def zero_init_last(self) -> None:
        layer = self.last_scaled_layer()
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
