"""The closed choices a ``ResNetSpec`` names: block, stem, shortcut, ordering and the rest.

Apart from the spec so that the units (``blocks.py``) take them without the spec: a
``ResidualUnit`` is made from these fields alone, spec or not.
"""

from __future__ import annotations

from enum import StrEnum


class Block(StrEnum):
    """The kind of branch in every unit (torchvision's BasicBlock and Bottleneck): all that
    "block" names in reslab. One residual unit, branch and shortcut, is a "unit"."""

    BASIC = "basic"  # two 3x3 convolutions
    BOTTLENECK = "bottleneck"  # 1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4


class Stem(StrEnum):
    IMAGENET = "imagenet"  # 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (torchvision, and D2L with bias)
    CIFAR = "cifar"  # 3x3/1 conv, BN, ReLU (He et al. 2015, section 4.2)
    DEEP = "deep"  # three 3x3 convs (w/2, w/2, w), the first with stride 2 (ResNet-C/D)
    TIERED = "tiered"  # the same with widths 3w/8, w/2, w (timm's ResNet-T)

    @property
    def is_deep(self) -> bool:
        return self in (Stem.DEEP, Stem.TIERED)


class StemPool(StrEnum):
    """How a pooled stem halves its map (the CIFAR stem does not)."""

    MAX = "max"  # 3x3/2 max-pool
    CONV = "conv"  # 3x3/2 conv, norm, activation (ResNet-RS)


class Naming(StrEnum):
    """Whose module tree, and so whose state-dict keys, the network has."""

    TORCHVISION = "torchvision"  # conv1, bn1, layer1.0.conv1, downsample.0, fc
    RESNETV2 = "resnetv2"  # timm's ResNetV2: stem.conv, stages.0.blocks.0.norm1, norm, head.fc


class Shortcut(StrEnum):
    """What the shortcut does where a unit changes the shape (identity everywhere else)."""

    PROJECTION = "projection"  # 1x1 conv + BN (torchvision, option B)
    CONV = "conv"  # 1x1 conv alone (D2L's `use_1x1conv`, with bias; pre-activation nets)
    PAD = "pad"  # option A: subsample and zero-pad the new channels; no parameters
    NONE = "none"  # no shortcut and no addition at all: a plain network


class Ordering(StrEnum):
    """Where BN and ReLU sit in a unit: the five variants of He et al. 2016, Fig. 4."""

    ORIGINAL = "original"  # (a) conv-BN-ReLU-conv-BN, add, ReLU
    BN_AFTER_ADD = "bn_after_add"  # (b) conv-BN-ReLU-conv, add, BN, ReLU
    RELU_BEFORE_ADD = "relu_before_add"  # (c) conv-BN-ReLU-conv-BN-ReLU, add
    RELU_PREACT = "relu_preact"  # (d) ReLU-conv-BN-ReLU-conv-BN, add
    FULL_PREACT = "full_preact"  # (e) BN-ReLU-conv-BN-ReLU-conv, add

    @property
    def is_preact(self) -> bool:
        return self in (Ordering.RELU_PREACT, Ordering.FULL_PREACT)


class StrideOn(StrEnum):
    """Which bottleneck conv downsamples."""

    CONV3X3 = "3x3"  # torchvision's "ResNet V1.5": better accuracy
    CONV1X1 = "1x1"  # the original paper: the first 1x1 conv
