"""What a checkpoint says about its model and data, as one typed record: ``CheckpointMeta``.

It travels as JSON in the safetensors header (``reslab`` key). ``from_dict`` is the one way in
from a file: it migrates older layouts to this one and checks every field eval, predict,
export and resume read (a damaged or edited header fails here, naming the field, before any
network is built); ``to_dict`` is the way out. Keys it does not know (a newer reslab's) are
kept in ``extra`` and written back unchanged.

Version 1 (``"format": "reslab-checkpoint/1"``) is today's layout; files written before the
format was recorded (and hand-written ones) have no ``format`` and read as version 1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reslab.errors import WeightsError
from reslab.limits import MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIDE
from reslab.paths import printable

if TYPE_CHECKING:
    from torch import nn

    from reslab.data import Dataset
    from reslab.training.config import TrainConfig

VERSION = 1
CHECKPOINT_FORMAT = f"reslab-checkpoint/{VERSION}"
# version n -> the function turning its dict into version n + 1's (none yet: version 1 is the
# first recorded layout)
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's metadata. ``spec`` is the ResNetSpec as a dict (None for a zoo model
    without one, which ``num_classes`` and ``in_channels`` describe instead); ``epoch``,
    ``step`` and ``metrics`` are the run's progress when it was written; ``data_identity``
    is what a resumed run checks its data against (checked there, see training/run.py)."""

    model: str
    classes: tuple[str, ...]
    input_size: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spec: dict[str, Any] | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    data: str | None = None
    data_identity: Any = None
    tta_flip: bool = False
    tta_shift: int = 0
    config: dict[str, Any] | None = None
    epoch: int | None = None
    step: int | None = None
    metrics: dict[str, Any] | None = None
    source: str | None = None  # "model-folder" for a timm / Hugging Face folder
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this reslab does not know

    @classmethod
    def from_dict(cls, meta: dict[str, Any], path: str | os.PathLike = "checkpoint"
                  ) -> CheckpointMeta:
        """The record of a header's JSON ``meta`` (without ``train_state``), migrated to this
        version and checked; a WeightsError naming ``path`` and the field otherwise."""
        if not isinstance(meta, dict) or "model" not in meta:
            raise WeightsError(f"{printable(path)} has no reslab metadata: load it with "
                               "load_weights instead")
        version = _version(meta, path)
        for old in range(version, VERSION):
            meta = MIGRATIONS[old](meta)
        _check_metadata(path, meta)
        for name, kind, expected in (("epoch", int, "a count"), ("step", int, "a count"),
                                     ("metrics", dict, "a JSON object"),
                                     ("source", str, "a name")):
            value = meta.get(name)
            if value is not None and not (isinstance(value, kind) and type(value) is not bool
                                          and (kind is not int or value >= 0)):
                raise _bad_field(path, name, value, expected)
        known = {f.name for f in dataclasses.fields(cls)} - {"version", "extra"}
        fields = {k: v for k, v in meta.items() if k in known}
        fields["spec"] = meta.get("spec") or None  # {} or null: a zoo model's, no spec
        for name in ("classes", "input_size", "mean", "std"):
            fields[name] = tuple(fields[name])
        return cls(**fields, version=max(version, VERSION),
                   extra={k: v for k, v in meta.items() if k not in known and k != "format"})

    def to_dict(self) -> dict[str, Any]:
        """The JSON a checkpoint's header holds: fields that are None are left out (absent
        and null read the same), keys of a newer version kept as they came."""
        meta = dict(self.extra) | {"format": f"reslab-checkpoint/{self.version}"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("version", "extra") and value is not None:
                meta[f.name] = list(value) if isinstance(value, tuple) else value
        return meta

    def replace(self, **changes: Any) -> CheckpointMeta:
        return dataclasses.replace(self, **changes)


def run_metadata(model: nn.Module, config: TrainConfig, data: Dataset,
                 input_size: tuple[int, int, int]) -> CheckpointMeta:
    """What every checkpoint of a run says about its model and data (``input_size``: the
    images as the network sees them, after any resize)."""
    spec = getattr(model, "spec", None)
    return CheckpointMeta(
        model=config.model, spec=spec.to_dict() if spec is not None else None,
        num_classes=len(data.classes), in_channels=data.image_shape[0],
        classes=tuple(data.classes), mean=tuple(data.mean), std=tuple(data.std),
        input_size=tuple(input_size), data=data.name, data_identity=data.identity,
        tta_flip=config.tta_flip, tta_shift=config.tta_shift, config=config.to_dict())


def _version(meta: dict[str, Any], path: str | os.PathLike) -> int:
    """The layout's version, from ``format``; none recorded is version 1."""
    written = meta.get("format")
    if written is None:
        return 1
    found = re.fullmatch(r"reslab-checkpoint/([1-9][0-9]{0,5})", written) \
        if isinstance(written, str) else None
    if found is None:
        raise _bad_field(path, "format", written, "'reslab-checkpoint/<version>'")
    return int(found[1])


def _bad_field(path: str | os.PathLike, name: str, value: Any, expected: str) -> WeightsError:
    return WeightsError(f"{printable(path)}: metadata field {name!r} is "
                        f"{printable(repr(value)[:60])}, expected {expected}; the file is "
                        "damaged or was edited")


def _check_metadata(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """The fields eval, predict and export read: a damaged or edited header fails here, naming
    the field, rather than later with a bare KeyError or IndexError."""

    def numbers(value: Any, count: int, kinds=(int, float), positive=False) -> bool:
        return (isinstance(value, list) and len(value) == count
                and all(type(v) in kinds and math.isfinite(v) and (v > 0 or not positive)
                        for v in value))

    size = meta.get("input_size")
    channels = size[0] if isinstance(size, list) and size else 0
    required = {
        "model": (lambda v: isinstance(v, str), "a model name"),
        "classes": (lambda v: isinstance(v, list) and bool(v)
                    and all(isinstance(c, str) for c in v), "a list of class names"),
        "input_size": (lambda v: numbers(v, 3, (int,), positive=True),
                       "[channels, height, width]"),
        "mean": (lambda v: numbers(v, channels), f"{channels} numbers"),
        "std": (lambda v: numbers(v, channels, positive=True), f"{channels} positive numbers"),
    }
    if meta.get("spec"):
        required["spec"] = (lambda v: isinstance(v, dict), "a ResNetSpec as a JSON object")
    else:
        for name in ("num_classes", "in_channels"):
            required[name] = (lambda v: type(v) is int and v > 0, "a positive integer")
    optional = {"config": (dict, "a JSON object"), "data": (str, "a data set name")}
    for name, (kind, expected) in optional.items():
        if name in meta:
            required[name] = (lambda v, kind=kind: isinstance(v, kind), expected)
    if "tta_flip" in meta:
        required["tta_flip"] = (lambda v: isinstance(v, bool), "true or false")
    if "tta_shift" in meta:  # reflect padding needs a shift smaller than the image
        required["tta_shift"] = (lambda v: type(v) is int and 0 <= v <= 4 and v < min(size[1:]),
                                 "an integer shift in 0...4 pixels, below the image size")
    for name, (fits, expected) in required.items():
        if not fits(meta.get(name)):
            raise _bad_field(path, name, meta.get(name), expected)
    _, height, width = size
    too_big = {"input channels": (channels, MAX_CHANNELS), "input height": (height, MAX_IMAGE_SIDE),
               "input width": (width, MAX_IMAGE_SIDE), "classes": (len(meta["classes"]),
                                                                   MAX_CLASSES)}
    if not meta.get("spec"):
        too_big |= {"num_classes": (meta["num_classes"], MAX_CLASSES),
                    "in_channels": (meta["in_channels"], MAX_CHANNELS)}
    for name, (value, limit) in too_big.items():
        if value > limit:
            raise WeightsError(f"{printable(path)}: metadata asks for {value:,} {name}, more than "
                               f"the limit of {limit:,}; the file is damaged or was edited")
