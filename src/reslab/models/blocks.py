"""Residual units: one class for basic and bottleneck units in all five BN/ReLU orderings,
with timm's options (attention, anti-aliasing, any norm and activation, stochastic depth).
(torchvision calls a unit a block; here "block" is only the branch's kind, ``spec.block``.)

A unit is ``post(branch(pre(x)) + shortcut(x))``. Which layers run, and in what order, is
data (``ResidualUnit.pre / branch / post``: lists of submodule names), so the five orderings
of "Identity Mappings in Deep Residual Networks" differ in one table, not five classes.
Submodule names follow torchvision (``conv1``, ``bn1``, ..., ``downsample.0/1``) so its
weight files load unchanged; timm's additions keep timm's names (``se``, ``aa``), and under
``naming='resnetv2'`` the norms are ``norm1...`` and the shortcut ``downsample.conv``.

The unit itself is looked up by name (``UNITS``, the spec's ``unit``): a factory
``make(spec, in_channels, width, stride, drop_path)`` returning a module that maps
``in_channels`` to ``width * spec.expansion`` channels and has ``out_channels``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from reslab.errors import SpecError
from reslab.models.attention import ATTENTION
from reslab.models.choices import Block, Naming, Ordering, Shortcut, StrideOn
from reslab.models.layers import ACTIVATIONS, ANTI_ALIAS, NORMS, DropPath
from reslab.models.registry import Registry
from reslab.models.small_map import conv_forward

if TYPE_CHECKING:  # the spec checks its unit's name here: it imports this module
    from reslab.models.spec import ResNetSpec

UNITS: Registry[Callable[..., nn.Module]] = Registry("unit", "unit")


def register_unit(name: str, factory: Callable[..., nn.Module] | None = None, **kw):
    """Register ``factory(spec, in_channels, width, stride, drop_path) -> nn.Module`` as
    ``unit=name``."""
    return UNITS.register(name, factory, **kw)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)


def act_name(act: str) -> str:
    """The submodule name of a unit's activation: ``relu`` for ReLU, as torchvision has it."""
    return "relu" if act == "relu" else "act"


def _layer_order(ordering: Ordering, convs: int, act: str = "relu"
                 ) -> tuple[list[str], list[str], list[str]]:
    """(pre, branch, post) as submodule names, for a unit with ``convs`` convolutions.

    In the pre-activation orderings ``pre`` is shared: a projection shortcut sees the
    activated input too, as the paper prescribes after a stand-alone conv.
    """
    conv_bn = [[f"conv{i}", f"bn{i}"] for i in range(1, convs + 1)]
    relu = act
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


def _insert_after_activation(branch: list[str], conv: str, act: str, name: str) -> list[str]:
    """``name`` after the first activation that follows ``conv`` (timm's place for the
    anti-aliasing filter), or right after ``conv`` if none does."""
    at = branch.index(conv) + 1
    following = branch[at:]
    if act in following:
        at += following.index(act) + 1
    return branch[:at] + [name] + branch[at:]


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
    """A basic or bottleneck unit; ``shortcut='none'`` makes it a plain (non-residual) unit.

    The keyword options after ``bottleneck_stride`` are the spec fields of the same names
    (``drop_path`` is this unit's rate); ``from_spec`` passes them all.
    """

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
        avg_down: bool = False,
        norm: str = "batchnorm",
        act: str = "relu",
        attention: str | None = None,
        attention_ratio: float | None = None,
        anti_alias: str | None = None,
        drop_path: float = 0.0,
        naming: Naming = Naming.TORCHVISION,
    ):
        super().__init__()
        block, shortcut, ordering = Block(block), Shortcut(shortcut), Ordering(ordering)
        bottleneck_stride, naming = StrideOn(bottleneck_stride), Naming(naming)
        self.ordering = ordering
        self.is_plain = shortcut is Shortcut.NONE
        make_norm = NORMS.get(norm)
        # timm's anti-aliasing: the strided conv runs at stride 1 and a filter then strides
        aa = ANTI_ALIAS.get(anti_alias) if anti_alias is not None and stride > 1 else None
        conv_stride = 1 if aa else stride
        if block is Block.BASIC:
            out_channels, strided = width, "conv1"
            convs = [
                conv3x3(in_channels, width, conv_stride, groups, bias),
                conv3x3(width, width, 1, groups, bias),
            ]
        else:
            inner = width * width_per_group // 64 * groups
            out_channels = width * 4
            on_1x1 = bottleneck_stride is StrideOn.CONV1X1
            s1, s3 = (conv_stride, 1) if on_1x1 else (1, conv_stride)
            strided = "conv1" if on_1x1 else "conv2"
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
        relu = act_name(act)
        layers = {f"conv{i}": c for i, c in enumerate(convs, start=1)}
        layers |= {f"bn{i}": make_norm(c) for i, c in enumerate(bn_channels, start=1)}
        layers[relu] = ACTIVATIONS.get(act)()
        self.pre, self.branch, self.post = _layer_order(ordering, len(convs), relu)
        if aa is not None:
            layers["aa"] = aa.make(convs[int(strided[-1]) - 1].out_channels, stride)
            self.branch = _insert_after_activation(self.branch, strided, relu, "aa")
        if attention is not None:
            layers["se"] = ATTENTION.get(attention)(out_channels, attention_ratio)
            self.branch = [*self.branch, "se"]
        if naming is Naming.RESNETV2:  # timm's ResNetV2 calls them norm1, norm2, ...
            layers = {k.replace("bn", "norm"): v for k, v in layers.items()}
            self.pre, self.branch, self.post = ([n.replace("bn", "norm") for n in names]
                                                for names in (self.pre, self.branch, self.post))
        downsample = self._make_shortcut(shortcut, in_channels, out_channels, stride, bias,
                                         avg_down, make_norm, naming)
        if naming is Naming.RESNETV2:  # and registers the shortcut first
            self.downsample = downsample
        for name in dict.fromkeys(self.pre + self.branch + self.post):  # execution order
            self.add_module(name, layers[name])
        self.downsample = downsample
        # no-op modules change traced graphs and repr: only a unit that drops has one
        self.drop_path = DropPath(drop_path) if drop_path and not self.is_plain else None
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    @classmethod
    def from_spec(cls, spec: ResNetSpec, in_channels: int, width: int, stride: int = 1,
                  drop_path: float = 0.0, shortcut: Shortcut | None = None) -> ResidualUnit:
        """The unit ``spec`` describes; ``shortcut`` overrides the spec's (``grow`` does)."""
        return cls(
            spec.block, in_channels, width, stride, groups=spec.groups,
            width_per_group=spec.width_per_group,
            shortcut=spec.shortcut if shortcut is None else shortcut, ordering=spec.ordering,
            bias=spec.conv_bias, bottleneck_stride=spec.bottleneck_stride,
            avg_down=spec.avg_down, norm=spec.norm, act=spec.act, attention=spec.attention,
            attention_ratio=spec.attention_ratio, anti_alias=spec.anti_alias,
            drop_path=drop_path, naming=spec.naming,
        )

    @staticmethod
    def _make_shortcut(kind, cin, cout, stride, bias, avg_down, make_norm, naming
                       ) -> nn.Module | None:
        if kind is Shortcut.NONE or (stride == 1 and cin == cout):
            return None  # identity, or no shortcut at all for a plain unit
        if kind is Shortcut.PAD:
            return PadShortcut(stride, cout - cin)
        layers = OrderedDict()
        if avg_down:  # ResNet-D: average the positions a strided 1x1 conv would skip
            layers["pool"] = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                              if stride > 1 else nn.Identity())
            stride = 1
        layers["conv"] = conv1x1(cin, cout, stride, bias)
        if kind is Shortcut.PROJECTION:
            layers["norm"] = make_norm(cout)
        if naming is Naming.RESNETV2:
            return nn.Sequential(layers)  # an OrderedDict: named children
        return nn.Sequential(*layers.values())  # torchvision/timm ResNet: downsample.0, .1, ...

    def _run(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = conv_forward(getattr(self, name), x)  # plain layer(x) but on tiny maps
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._run(self.pre, x)
        y = self._run(self.branch, h)
        if not self.is_plain:
            if self.drop_path is not None:
                y = self.drop_path(y)
            if self.downsample is None:
                y = y + x
            elif isinstance(self.downsample, PadShortcut):
                y = y + self.downsample(x)
            else:
                y = y + self.downsample(h)
        return self._run(self.post, y)

    def last_scaled_layer(self) -> nn.Module:
        """The branch's last norm or conv: zeroing it makes the branch output zero (an
        attention module after it only rescales that zero)."""
        name = next(n for n in reversed(self.branch) if n.startswith(("conv", "bn", "norm")))
        return getattr(self, name)

    def zero_init_last(self) -> None:
        layer = self.last_scaled_layer()
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


register_unit("residual", ResidualUnit.from_spec)


def zero_init_last(unit: nn.Module) -> None:
    """Zero ``unit``'s branch so that it starts as the identity; a registered unit kind
    must define ``zero_init_last()`` for ``zero_init_residual`` and ``grow``."""
    if not hasattr(unit, "zero_init_last"):
        raise SpecError(f"{type(unit).__name__} units have no zero_init_last(): define it "
                        "(zero the branch's last norm) to use zero_init_residual or grow")
    unit.zero_init_last()
