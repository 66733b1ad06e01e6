"""The stem: the layers before the first stage, as (name, module) pairs in execution order.

Under torchvision naming the pairs sit at the top of the network (``conv1``, ``bn1``,
``relu``, ``maxpool``: a deep stem's three convs are ``conv1.0/3/6``, as in timm's ResNet);
under ``naming='resnetv2'`` they form ``stem`` (``stem.conv``, ``stem.pool``), as in timm's
ResNetV2, whose pre-activation stem has no norm of its own.
"""

from __future__ import annotations

from torch import nn

from reslab.models.blocks import act_name, conv3x3
from reslab.models.layers import ACTIVATIONS, ANTI_ALIAS, NORMS
from reslab.models.spec import Naming, ResNetSpec, Stem, StemPool


def deep_stem_widths(spec: ResNetSpec) -> tuple[int, int, int]:
    width = spec.stem_width
    if spec.stem is Stem.TIERED:  # timm: 3 * (stem_width // 4), stem_width; w = 2 * stem_width
        return 3 * (width // 8), width // 2, width
    return width // 2, width // 2, width


def stem_layers(spec: ResNetSpec) -> list[tuple[str, nn.Module]]:
    """The stem's layers; the last one is the pooling (``maxpool`` / ``pool``), or Identity."""
    if spec.naming is Naming.RESNETV2:
        return _resnetv2_stem(spec)
    norm, act, bias, width = NORMS.get(spec.norm), ACTIVATIONS.get(spec.act), spec.conv_bias, \
        spec.stem_width
    if spec.stem is Stem.CIFAR:
        conv = conv3x3(spec.in_channels, width, bias=bias)
    elif spec.stem.is_deep:
        a, b, c = deep_stem_widths(spec)
        conv = nn.Sequential(
            conv3x3(spec.in_channels, a, stride=2, bias=bias), norm(a), act(),
            conv3x3(a, b, bias=bias), norm(b), act(),
            conv3x3(b, c, bias=bias),
        )
    else:
        conv = nn.Conv2d(spec.in_channels, width, 7, stride=2, padding=3, bias=bias)
    pooled = spec.stem is not Stem.CIFAR
    # A pre-activation net's first unit normalises its own input, so a CIFAR stem is a
    # bare conv; a pooled stem keeps norm-act so the pool sees activations.
    if spec.ordering.is_preact and not pooled:
        layers = [("conv1", conv), ("bn1", nn.Identity()), ("relu", nn.Identity())]
    else:
        layers = [("conv1", conv), ("bn1", norm(width)), (act_name(spec.act), act())]
    return [*layers, ("maxpool", stem_pool(spec) if pooled else nn.Identity())]


def stem_pool(spec: ResNetSpec) -> nn.Module:
    """The stem's halving: max-pool, a strided conv (ResNet-RS), either anti-aliased."""
    width = spec.stem_width
    aa = ANTI_ALIAS.get(spec.anti_alias) if spec.anti_alias is not None else None
    if spec.stem_pool is StemPool.CONV:
        return nn.Sequential(*filter(None, [
            conv3x3(width, width, stride=1 if aa else 2, bias=spec.conv_bias),
            aa.make(width, 2) if aa else None,
            NORMS.get(spec.norm)(width), ACTIVATIONS.get(spec.act)(),
        ]))
    if aa is None:
        return nn.MaxPool2d(3, stride=2, padding=1)
    if aa.replaces_max_pool:
        return (aa.stem_pool or aa.make)(width, 2)
    return nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), aa.make(width, 2))


def _resnetv2_stem(spec: ResNetSpec) -> list[tuple[str, nn.Module]]:
    norm, act, bias = NORMS.get(spec.norm), ACTIVATIONS.get(spec.act), spec.conv_bias
    if spec.stem is Stem.CIFAR:
        layers = [("conv", conv3x3(spec.in_channels, spec.stem_width, bias=bias))]
    elif spec.stem.is_deep:
        a, b, c = deep_stem_widths(spec)
        layers = [("conv1", conv3x3(spec.in_channels, a, stride=2, bias=bias)),
                  ("norm1", norm(a)), ("act1", act()),
                  ("conv2", conv3x3(a, b, bias=bias)), ("norm2", norm(b)), ("act2", act()),
                  ("conv3", conv3x3(b, c, bias=bias))]
    else:
        layers = [("conv", nn.Conv2d(spec.in_channels, spec.stem_width, 7, 2, 3, bias=bias))]
    pool = stem_pool(spec) if spec.stem is not Stem.CIFAR else nn.Identity()
    return [*layers, ("pool", pool)]
