"""ResNetSpec: a residual network described as data, the way the papers' tables do.

Every network in the zoo — torchvision's ResNets and ResNeXts, the CIFAR ResNets, plain
networks, the pre-activation orderings, the seed's D2L ResNet-18 — is one of these, and one
builder (``reslab.models.build``) turns any valid spec into an ``nn.Module``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reslab.errors import SpecError, check_fields
from reslab.limits import MAX_UNITS
from reslab.models.choices import (  # the spec's own vocabulary, imported from here too
    Block,
    Naming,
    Ordering,
    Shortcut,
    Stem,
    StemPool,
    StrideOn,
)

_ENUM_FIELDS = {
    "block": Block,
    "stem": Stem,
    "shortcut": Shortcut,
    "ordering": Ordering,
    "bottleneck_stride": StrideOn,
    "stem_pool": StemPool,
    "naming": Naming,
}


@dataclass(frozen=True)
class ResNetSpec:
    """A residual network. Stage ``i`` has ``depths[i]`` units of width ``widths[i]``.

    A unit is one residual unit (torchvision's ``layer1.0``), built by the ``unit`` registry;
    ``block`` is only the kind of branch inside every unit, basic or bottleneck.

    ``widths`` are the "planes" of torchvision: a bottleneck stage outputs ``4 * width``
    channels. The first stage keeps the stem's resolution; every later stage halves it.
    """

    block: Block = Block.BASIC
    depths: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    groups: int = 1  # grouped 3x3 convs (ResNeXt's cardinality)
    width_per_group: int = 64  # bottleneck inner width = widths[i] * width_per_group / 64 * groups
    stem: Stem = Stem.IMAGENET
    stem_width: int = 64  # channels out of the stem
    shortcut: Shortcut = Shortcut.PROJECTION
    ordering: Ordering = Ordering.ORIGINAL
    zero_init_residual: bool = False  # last BN (or last conv) of each branch starts at zero
    conv_bias: bool = False  # D2L's convolutions keep their bias
    bottleneck_stride: StrideOn = StrideOn.CONV3X3
    in_channels: int = 3
    num_classes: int = 1000  # 0 gives a feature extractor (no classifier)
    input_size: int = 224  # the natural input side, used when no input size is given
    # --- timm's variants: each a field; the names below are looked up in their registries
    # when the network is built (models.build.check_names), so the spec stays plain data ---
    stem_pool: StemPool = StemPool.MAX
    avg_down: bool = False  # a strided shortcut average-pools 2x2, then a 1x1 conv (ResNet-D)
    norm: str = "batchnorm"  # reslab.models.layers.NORMS
    act: str = "relu"  # reslab.models.layers.ACTIVATIONS
    attention: str | None = None  # reslab.models.attention.ATTENTION, e.g. "se", "eca"
    attention_ratio: float | None = None  # its reduction ratio; None: the module's default
    anti_alias: str | None = None  # reslab.models.layers.ANTI_ALIAS: "blur", "avgpool"
    drop_path_rate: float = 0.0  # stochastic depth of the last unit; 0 at the first, linear
    unit: str = "residual"  # reslab.models.blocks.UNITS: what each unit is built by
    naming: Naming = Naming.TORCHVISION

    def __post_init__(self) -> None:
        for name, enum in _ENUM_FIELDS.items():
            object.__setattr__(self, name, _coerce(enum, name, getattr(self, name)))
        for name in ("depths", "widths"):
            value = getattr(self, name)
            if isinstance(value, int) or not all(isinstance(v, int) for v in value):
                raise SpecError(f"{name} must be a sequence of integers, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        if not self.depths:
            raise SpecError("a ResNetSpec needs at least one stage: depths is empty")
        if len(self.depths) != len(self.widths):
            raise SpecError(
                f"depths has {len(self.depths)} stages but widths has {len(self.widths)}: "
                "give one width per stage"
            )
        for name in ("depths", "widths"):
            if any(v < 1 for v in getattr(self, name)):
                raise SpecError(f"every entry of {name} must be >= 1, got {getattr(self, name)}")
        if sum(self.depths) > MAX_UNITS:  # every way to a network comes through here
            raise SpecError(f"depths {_short(self.depths)} ask for {sum(self.depths):,} residual "
                            f"units, more than the limit of {MAX_UNITS:,}: lower them")
        for name in ("groups", "width_per_group", "stem_width", "in_channels", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise SpecError(f"num_classes must be an integer >= 0, got {self.num_classes!r}")
        if self.block is Block.BASIC:
            if self.width_per_group != 64:
                raise SpecError(
                    "width_per_group only applies to bottleneck blocks; leave it at 64 "
                    "or use block='bottleneck'"
                )
            channels_in = (self.stem_width, *self.widths)
            for width, previous in zip(self.widths, channels_in, strict=False):
                if width % self.groups or previous % self.groups:
                    raise SpecError(
                        f"groups={self.groups} does not divide the basic-block widths "
                        f"{(self.stem_width, *self.widths)}: choose groups that divide every width"
                    )
        elif any(w * self.width_per_group % 64 for w in self.widths):
            raise SpecError(
                f"width_per_group={self.width_per_group} gives a fractional bottleneck width "
                f"for widths {self.widths}: each width * width_per_group must divide by 64"
            )
        self._validate_variants()
        if self.shortcut is Shortcut.PAD:
            channels = [self.stem_width, *(w * self.expansion for w in self.widths)]
            if any(b < a for a, b in zip(channels, channels[1:], strict=False)):
                raise SpecError(
                    "shortcut='pad' can only add channels, but the widths shrink: "
                    "use shortcut='projection'"
                )

    def _validate_variants(self) -> None:
        ratio = self.attention_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int | float)
                                  or not 0 < ratio <= 1):
            raise SpecError(f"attention_ratio must be a number in (0, 1] or None, got {ratio!r}")
        if ratio is not None and self.attention is None:
            raise SpecError("attention_ratio sets the attention's reduction, but attention is "
                            "None: name one (e.g. attention='se') or leave the ratio out")
        rate = self.drop_path_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise SpecError(f"drop_path_rate must be a number in [0, 1), got {rate!r}")
        if rate and self.is_plain:
            raise SpecError("drop_path_rate drops residual branches, but shortcut='none' has "
                            "none: use a shortcut or drop_path_rate=0")
        if not isinstance(self.avg_down, bool):
            raise SpecError(f"avg_down must be true or false, got {self.avg_down!r}")
        if self.avg_down and self.shortcut not in (Shortcut.PROJECTION, Shortcut.CONV):
            raise SpecError(f"avg_down pools before a 1x1-conv shortcut, but shortcut is "
                            f"{self.shortcut.value!r}: use shortcut='projection' or 'conv'")
        if self.stem is Stem.CIFAR and self.stem_pool is not StemPool.MAX:
            raise SpecError("the cifar stem has no pooling to replace: leave stem_pool='max' "
                            "or use a pooled stem (imagenet, deep, tiered)")
        if self.naming is Naming.RESNETV2 and self.ordering is not Ordering.FULL_PREACT:
            raise SpecError("naming='resnetv2' names timm's pre-activation ResNetV2: use "
                            "ordering='full_preact' with it")

    @property
    def expansion(self) -> int:
        return 4 if self.block is Block.BOTTLENECK else 1

    @property
    def num_features(self) -> int:
        """Channels of the last stage, which the classifier sees."""
        return self.widths[-1] * self.expansion

    @property
    def is_plain(self) -> bool:
        return self.shortcut is Shortcut.NONE

    @property
    def depth(self) -> int:
        """Weighted layers as the papers count them: stem convs + unit convs + classifier."""
        stem_convs = (3 if self.stem.is_deep else 1) + (self.stem_pool is StemPool.CONV)
        unit_convs = 3 if self.block is Block.BOTTLENECK else 2
        return stem_convs + unit_convs * sum(self.depths) + 1

    def replace(self, **changes: Any) -> ResNetSpec:
        """A copy with some fields changed; unknown field names are refused with a suggestion."""
        check_fields(ResNetSpec, changes, SpecError, "ResNetSpec has no field")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (enums as strings, tuples as lists)."""
        return {
            f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ResNetSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(f"unknown ResNetSpec fields {unknown}: this spec is from another tool")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)


def _coerce(enum: type[StrEnum], name: str, value: Any) -> StrEnum:
    try:
        return enum(value)
    except ValueError:
        choices = [m.value for m in enum]
        raise SpecError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def _short(values: tuple[int, ...]) -> str:
    """A tuple as a message shows it: a few entries, each of at most a few digits shown."""
    text = ", ".join(f"{v:,}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    return f"({text})"
