"""What a network does to its input: output shape, parameters and FLOPs, stem to classifier.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions and
matrix products only, a multiply-add as 2 FLOPs. MACs are FLOPs / 2: the unit torchvision
publishes as "GFLOPS" (resnet18: 1.81, resnet50: 4.09).

Zoo models are built on the ``meta`` device, so a summary costs no memory and no arithmetic,
even for resnet1202 or wide_resnet101_2.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reslab import memory
from reslab.errors import ConfigError, InputShapeError
from reslab.models.build import ResNet
from reslab.models.lenet import LeNetBN
from reslab.models.zoo import create_model
from reslab.tables import CONVENTION, format_count, format_shape, text_table, wrapped

Shape = tuple[int, ...]
InputSize = int | str | Sequence[int] | None

@dataclass(frozen=True)
class Row:
    """One part of the network: the stem, a stage, or a piece of the head."""

    name: str
    kind: str  # "stem", "stage", "head"; "layer" for non-residual nets
    output_shape: Shape  # without the batch dimension
    params: int
    flops: int

    @property
    def macs(self) -> int:
        return self.flops // 2

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "output": list(self.output_shape),
                "params": self.params, "flops": self.flops, "macs": self.macs}


@dataclass(frozen=True)
class Summary:
    model: str
    block: str  # "basic", "bottleneck", or "-" for a network without residual units
    depth: int  # weighted layers, as the papers count them
    input_shape: Shape  # C, H, W
    rows: tuple[Row, ...]
    params: int  # every parameter of the model

    @property
    def flops(self) -> int:
        return sum(row.flops for row in self.rows)

    @property
    def macs(self) -> int:
        return self.flops // 2

    def row(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "block": self.block, "depth": self.depth,
            "input": list(self.input_shape), "rows": [row.to_dict() for row in self.rows],
            "total": {"params": self.params, "flops": self.flops, "macs": self.macs},
            "convention": CONVENTION,
        }

    def render(self) -> str:
        """A plain text table, aligned for a terminal and unchanged when piped."""
        body = [[row.name, format_shape(row.output_shape), f"{row.params:,}",
                 format_count(row.macs), format_count(row.flops)] for row in self.rows]
        body.append(["total", "", f"{self.params:,}", format_count(self.macs),
                     format_count(self.flops)])
        table = text_table(["", "output", "params", "MACs", "FLOPs"], body,
                           rule_before_last=True)
        title = f"{self.model} at {format_shape(self.input_shape)}"
        return f"{title}\n{table}\n{wrapped(CONVENTION)}"

    __str__ = render

    def __repr__(self) -> str:  # a notebook shows this; the dataclass's own lists every row
        return (f"<Summary {self.model} at {format_shape(self.input_shape)}: {self.params:,} "
                f"params, {format_count(self.macs)} MACs, depth {self.depth}; print() it for "
                "the table>")


@dataclass(frozen=True)
class Comparison:
    """Several summaries side by side, one column per model."""

    summaries: tuple[Summary, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"models": [s.to_dict() for s in self.summaries], "convention": CONVENTION}

    def render(self) -> str:
        first = self.summaries[0]
        names = list(dict.fromkeys(row.name for s in self.summaries for row in s.rows))
        body = [
            ["input", *(format_shape(s.input_shape) for s in self.summaries)],
            ["params", *(f"{s.params:,}{_change(s.params, first.params)}"
                         for s in self.summaries)],
            ["MACs", *(f"{format_count(s.macs)}{_change(s.macs, first.macs)}"
                       for s in self.summaries)],
            ["depth", *(str(s.depth) for s in self.summaries)],
        ]
        for name in names:
            cells = [next((format_shape(r.output_shape) for r in s.rows if r.name == name), "-")
                     for s in self.summaries]
            body.append([name, *cells])
        table = text_table(["", *(s.model for s in self.summaries)], body)
        return f"{table}\n(changes relative to {first.model})\n{wrapped(CONVENTION)}"

    __str__ = render

    def __repr__(self) -> str:
        return (f"<Comparison of {', '.join(s.model for s in self.summaries)}; print() it for "
                "the table>")


def summary(model: nn.Module | str, input_size: InputSize = None, *, name: str | None = None,
            **overrides: int) -> Summary:
    """Output shape, parameters and FLOPs of each part of ``model`` (a module or zoo name).

    ``input_size``: ``(C, H, W)``, ``"CxHxW"``, or one side (``96`` / ``"96"``) with the
    model's own channels; by default the model's natural input (224 for ImageNet nets, 32 for
    CIFAR ones, 28 for reslab's Fashion-MNIST nets). ``overrides`` (``in_channels``,
    ``num_classes``) change a zoo model as ``create_model`` does. ``name``: what the table
    calls a module (default: its class).
    """
    if isinstance(model, str):
        if overrides:
            built = _build_on_meta(model, tuple(sorted(overrides.items())))
            shape = resolve_input(built, input_size, name=model)
            return _summarise(built, name or model, shape)
        shape = resolve_input(_build_on_meta(model), input_size, name=model)
        return _zoo_summary(model, shape)
    name = name or type(model).__name__
    return _summarise(model, name, resolve_input(model, input_size, name=name))


def compare(models: Iterable[nn.Module | str], input_size: InputSize = None) -> Comparison:
    """Summaries of several models at the same input, for a side-by-side table."""
    summaries = tuple(summary(m, input_size) for m in models)
    if not summaries:
        raise ConfigError("nothing to compare: give at least one model")
    return Comparison(summaries)


def parse_input(text: str, channels: int | None = None) -> Shape:
    """``"CxHxW"`` -> (C, H, W); a bare side ``"S"`` -> (channels, S, S)."""
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)|(\d+)", text.strip(), re.ASCII)
    if match is None:
        raise ConfigError(
            f"input size {text!r} is not CxHxW (like 3x224x224) or one side (like 224)"
        )
    if match[4] is None:
        return tuple(int(v) for v in match.groups()[:3])
    if channels is None:
        raise ConfigError(f"input size {text!r} gives no channel count: write CxHxW")
    return channels, int(match[4]), int(match[4])


def resolve_input(model: nn.Module, input_size: InputSize = None, name: str | None = None) -> Shape:
    """The (C, H, W) ``model`` will see, checked against what it can take.

    ``name`` (the zoo name, say) is how error messages call the model.
    """
    name = name or type(model).__name__
    channels, side = _natural_input(model)
    if input_size is None:
        if side is None:
            raise InputShapeError(f"{name} has no natural input size: give input_size=(C, H, W)")
        shape: Shape = (channels, side, side)
    elif isinstance(input_size, str):
        shape = parse_input(input_size, channels)
    elif isinstance(input_size, int):
        shape = (channels, input_size, input_size)
    else:
        shape = tuple(input_size)
    _check_input(model, name, shape, channels, side)
    return shape


# --- running the model -----------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    name: str
    kind: str
    run: Callable[[torch.Tensor], torch.Tensor]
    modules: tuple[nn.Module, ...]  # whose parameters the row counts


def _segments(model: nn.Module) -> list[_Segment]:
    if isinstance(model, ResNet):
        segments = [_Segment("stem", "stem", model.forward_stem, tuple(model.stem_modules()))]
        segments += [_Segment(name, "stage", model.get_submodule(name),
                              (model.get_submodule(name),)) for name in model.stage_names]
        if model.norm is not None:  # ResNetV2's last norm (and act, below)
            segments.append(_Segment("norm", "head", model.norm, (model.norm,)))
        if not isinstance(model.final_act, nn.Identity):  # pre-activation nets' last BN-ReLU
            segments.append(_Segment("final_act", "head", model.final_act, (model.final_act,)))
        if not hasattr(model, "avgpool"):  # a features_only backbone: no head at all
            return segments
        segments.append(_Segment("avgpool", "head", model.avgpool, (model.avgpool,)))
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Identity):
            segments.append(_Segment(model.classifier_name, "head",
                                     lambda x: classifier(torch.flatten(x, 1)), (classifier,)))
        return segments
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and hasattr(model, "forward_head"):
        # One row per weighted layer, with the norm/activation/pooling that follow it.
        starts = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d | nn.Linear)]
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        ends = [*starts[1:], len(features)]
        segments = [_Segment(f"features.{a}-{b - 1}", "layer", features[a:b], (features[a:b],))
                    for a, b in zip(starts, ends, strict=True)]
        return [*segments, _Segment("fc", "head", model.forward_head, (model.get_classifier(),))]
    return [_Segment(type(model).__name__, "layer", model, (model,))]


def _summarise(model: nn.Module, name: str, shape: Shape) -> Summary:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    rows = []
    was_training = model.training
    model.eval()  # batch statistics of a single image are undefined (BatchNorm1d refuses)
    try:
        if device.type != "meta":  # a real network computes: its activations must fit
            memory.require(memory.inference_per_image(model, shape), f"a summary of {name} at "
                           f"{format_shape(shape)}", "give a smaller --input")
        x = torch.zeros(1, *shape, device=device)
        shortcuts = memory.MetaShortcuts() if device.type == "meta" else contextlib.nullcontext()
        with torch.no_grad(), shortcuts:
            for segment in _segments(model):
                with FlopCounterMode(display=False) as counter:
                    x = segment.run(x)
                params = sum(p.numel() for m in segment.modules for p in m.parameters())
                rows.append(Row(segment.name, segment.kind, tuple(x.shape[1:]), params,
                                counter.get_total_flops()))
    except RuntimeError as error:
        channels, side = _natural_input(model)
        natural = f"; its natural input is {channels}x{side}x{side}" if side else ""
        reason = str(error).strip().splitlines()[0]
        raise InputShapeError(
            f"{name} cannot take a {format_shape(shape)} input ({reason}){natural}"
        ) from error
    finally:
        model.train(was_training)
    block, depth = _architecture(model)
    return Summary(name, block, depth, shape, tuple(rows),
                   sum(p.numel() for p in model.parameters()))


@functools.lru_cache(maxsize=128)
def _zoo_summary(name: str, shape: Shape) -> Summary:
    # Summaries are immutable, so repeated calls (`reslab models`, tests) share them.
    return _summarise(_build_on_meta(name), name, shape)


@functools.lru_cache(maxsize=64)
def _build_on_meta(name: str, overrides: tuple[tuple[str, int], ...] = ()) -> nn.Module:
    with torch.device("meta"), memory.MetaShortcuts():
        return create_model(name, **dict(overrides))


# --- what a model takes ----------------------------------------------------------------


def _natural_input(model: nn.Module) -> tuple[int, int | None]:
    """(channels, side) the model was designed for; side None when it does not say."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        return spec.in_channels, spec.input_size
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = getattr(model, "in_channels", first_conv.in_channels if first_conv else 3)
    return channels, getattr(model, "input_size", None)


def _check_input(
    model: nn.Module, name: str, shape: Shape, channels: int, side: int | None
) -> None:
    given = format_shape(shape)
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise InputShapeError(
            f"input size {given} is not three positive integers CxHxW (like 3x224x224)"
        )
    c, h, w = shape
    if c != channels:
        raise InputShapeError(
            f"{name} takes {channels}-channel images but the input is {given}: use "
            f"{channels}x{h}x{w}, or build the model with in_channels={c}"
        )
    # LeNet's classifier is sized for the 16x4x4 features of a 28x28 image; a ResNet's
    # padded convolutions and adaptive pooling take any side >= 1 (1x1 stays 1x1).
    if isinstance(model, LeNetBN) and (h, w) != (side, side):
        raise InputShapeError(
            f"{name} takes exactly {channels}x{side}x{side} inputs (its classifier expects "
            f"16x4x4 features) but the input is {given}: resize the images to {side}x{side}"
        )


def _architecture(model: nn.Module) -> tuple[str, int]:
    spec = getattr(model, "spec", None)
    if spec is not None:
        return spec.block.value, spec.depth
    return "-", sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())


# --- text tables -----------------------------------------------------------------------


def _change(value: int, reference: int) -> str:
    if value == reference or reference == 0:
        return ""
    return f" ({(value - reference) / reference:+.1%})"
