"""What an experiment is: a name and title, typed settings with ranges and named modes, a
``plan`` of the training runs it needs, and an ``analyse`` of their results.

A new experiment is a subclass of ``Experiment`` in a module of its own, and one line in
``reslab.experiments.EXPERIMENTS``; ``executor.execute`` does everything else (checks the
settings, prepares the folder, trains the runs, skips finished ones, writes the report)::

    @dataclass
    class WidthSettings(TrainingSettings):
        widths: tuple[int, ...] = setting((8, 16, 32), "first-stage widths to compare")

    class Width(Experiment):
        name, title, settings = "width", "Wider or deeper?", WidthSettings
        modes = {"quick": dict(epochs=1, train_size=2048)}

        def plan(self, s, data):
            return [PlannedRun(f"w{w}", f"resnet20-w{w}", model=...,
                               config=paper_recipe(s, data, seed=0)) for w in s.widths]

        def analyse(self, s, data, runs, measured):
            return Analysis(description=..., table=..., findings=[...], figures={...},
                            shows=[...], does_not_show=[...])
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from reslab.errors import ConfigError, check_fields

if typing.TYPE_CHECKING:
    from torch import nn

    from reslab.data import Dataset
    from reslab.training import FitResult, TrainConfig, TrainState

PRECISIONS = ("auto", "fp32", "bf16")


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            choices: Sequence[str] | None = None) -> Any:
    """A settings field with its line of help and its range: ``low``/``high`` bound a number
    (or each integer of a tuple), ``choices`` a string (or each string of a tuple). Integers
    default to >= 1, numbers to > 0."""
    meta = {"help": help, "low": low, "high": high, "choices": tuple(choices or ())}
    if isinstance(default, list | tuple):  # a mutable default needs a factory
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Fields every experiment has. Sizes cut each split to its first N images (None: all)."""

    data_dir: str | None = setting(None, "where Fashion-MNIST is looked for first")
    train_size: int | None = setting(None, "training images (the first N)")
    val_size: int | None = setting(None, "validation images, of the 5,000 held out of train")
    test_size: int | None = setting(None, "test images (the first N)")
    quiet: bool = setting(False, "no per-epoch progress from the training runs")

    def check(self) -> None:
        """Rules across fields, beyond each field's own range (none by default)."""


@dataclass
class TrainingSettings(Settings):
    """The recipe knobs of experiments that train with the paper's recipe (``paper_recipe``)."""

    epochs: int = setting(20, "epochs of each training run")
    batch_size: int = setting(128, "images per SGD step")
    lr: float = setting(0.1, "peak learning rate")
    warmup_epochs: float = setting(0.0, "epochs of linear learning-rate warm-up, or of "
                                   "one-cycle's rise (0: the paper's constant start)", low=0)
    # bf16 autocast where the CPU multiplies bf16 fast (1.3-1.8x per step for these nets)
    precision: str = setting("auto", "autocast precision (fp32: the paper's arithmetic)",
                             choices=PRECISIONS)


@dataclass
class PlannedRun:
    """One training run an experiment needs, trained through ``reslab.training.fit``.

    ``model(done)`` builds the network (seeding torch itself: the executor rebuilds it when it
    reads a finished run back); ``done`` holds the runs planned before it, already trained, so
    a run can start from another's weights. ``probe`` measures the run as it trains; ``info``
    is whatever ``analyse`` needs to know of it (depth, seed, arm...)."""

    key: str  # its folder under runs/, unique in the plan
    label: str  # its name in progress lines and its run's config
    model: Callable[[dict[str, RunResult]], nn.Module]
    config: TrainConfig
    probe: Probe | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """A planned run, trained (or read back): the engine's result and its probe's rows."""

    run: PlannedRun
    fit: FitResult
    probe: list[dict[str, Any]]  # each with its "step"; step 0 is before training

    @property
    def info(self) -> dict[str, Any]:
        return self.run.info

    @property
    def last(self) -> dict[str, Any]:
        """The last epoch's metrics row."""
        return self.fit.history[-1]

    @property
    def test_error(self) -> float:
        """Test error of the model validation chose."""
        return 1 - self.fit.test["accuracy"]


class Probe:
    """Measurements a run takes beyond its epoch metrics. Each method returns a row (a dict)
    to record, or None; the executor stamps each row with its step and keeps the rows in the
    report folder, so a resumed run keeps those up to its checkpoint and a finished run's are
    read back. Methods see the model in the mode the engine has it in and must leave it so."""

    def start(self, model: nn.Module, config: TrainConfig) -> dict[str, Any] | None:
        """Before the first step of a new run (step 0); ``model`` is on the run's device."""
        return None

    def on_step(self, state: TrainState, loss: float, correct: int, images: int
                ) -> dict[str, Any] | None:
        """After each optimizer step (``fit``'s ``on_step``)."""
        return None

    def on_epoch_end(self, row: dict[str, Any], model: nn.Module) -> dict[str, Any] | None:
        """After each epoch, with its metrics row and the eval-mode model (``on_epoch_end``)."""
        return None


@dataclass
class Analysis:
    """What ``analyse`` reads from the runs: the report's parts. ``figures``: file name ->
    (matplotlib Figure, caption); the executor saves them beside report.md."""

    description: str
    table: str
    findings: list[str]
    figures: dict[str, tuple[Any, str]]
    shows: list[str]  # the closing "what this shows / what it does not", sentence by sentence
    does_not_show: list[str]
    results: dict[str, Any] = field(default_factory=dict)  # more numbers for results.json


class Experiment:
    """The protocol; see the module's docstring. ``modes`` are named sets of settings
    ("full" is the settings' own defaults and need not be listed)."""

    name: ClassVar[str]
    title: ClassVar[str]
    settings: ClassVar[type[Settings]]
    modes: ClassVar[dict[str, dict[str, Any]]] = {}

    def plan(self, s: Any, data: Dataset) -> list[PlannedRun]:
        """The runs, in the order they train. Build specs and configs here, not networks, so
        a setting they refuse stops the experiment before any work."""
        raise NotImplementedError

    def measure(self, s: Any, data: Dataset, runs: dict[str, RunResult]) -> dict[str, Any]:
        """Anything measured outside training (timings...), after the runs; JSON-able, kept in
        the report folder so a continued experiment does not measure again."""
        return {}

    def analyse(self, s: Any, data: Dataset, runs: dict[str, RunResult],
                measured: dict[str, Any]) -> Analysis:
        raise NotImplementedError

    def mode_names(self) -> list[str]:
        return ["full", *(m for m in self.modes if m != "full")]

    def resolve(self, mode: str, overrides: dict[str, Any]) -> Settings:
        """The settings of ``mode`` with ``overrides`` on top, each parsed by its field's type
        (text from the command line) and checked against its range, before any work."""
        if mode not in self.mode_names():
            raise ConfigError(f"experiment {self.name} has modes {', '.join(self.mode_names())}"
                              f"; got {mode!r}")
        check_fields(self.settings, overrides, ConfigError, "unknown experiment setting")
        hints = typing.get_type_hints(self.settings)
        fields = {f.name: f for f in dataclasses.fields(self.settings)}
        values = self.modes.get(mode, {}) | overrides
        parsed = {k: parse_setting(k, hints[k], fields[k].metadata, v) for k, v in values.items()}
        s = self.settings(**parsed)
        for name, f in fields.items():  # the defaults too: a subclass may get one wrong
            parse_setting(name, hints[name], f.metadata, getattr(s, name))
        s.check()
        return s


def parse_setting(name: str, hint: Any, meta: Any, value: Any) -> Any:
    """``value`` as the field's type, checked against its range; text (from ``--set``) is
    parsed by that type. One line naming the setting and what it takes, otherwise."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if value is None or (isinstance(value, str) and hint is not str
                             and value.strip().lower() in ("none", "null")):
            return None
    kind, item = _kinds(hint)
    if isinstance(value, str) and kind is not str:
        value = _from_text(value, kind, item)
    expected = _expected(kind, item, meta)
    if kind is tuple:
        ok = isinstance(value, tuple | list) and bool(value) and all(
            _fits(item, meta, v) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = _fits(kind, meta, value)
    if not ok:
        raise ConfigError(f"setting {name} must be {expected}, got {value!r:.60}")
    return value


def _kinds(hint: Any) -> tuple[type, type | None]:
    if typing.get_origin(hint) is tuple:
        return tuple, typing.get_args(hint)[0]
    return hint, None


def _from_text(text: str, kind: type, item: type | None) -> Any:
    """``--set`` text as ``kind``; what does not parse is left as text, for the check to
    refuse naming what was given."""
    text = text.strip()
    if kind is tuple:
        if text.startswith("["):
            try:
                values = json.loads(text)
            except ValueError:
                return text
        else:  # 20,56 or a single value
            values = [v.strip() for v in text.split(",")]
        return tuple(_from_text(v, item, None) if isinstance(v, str) else v for v in values)
    if kind is bool:
        return {"true": True, "yes": True, "1": True, "false": False, "no": False,
                "0": False}.get(text.lower(), text)
    try:
        return kind(text) if kind is int else float(text) if kind is float else text
    except ValueError:
        return text


def _fits(kind: type | None, meta: Any, value: Any) -> bool:
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices") or ()
    if kind is int:
        low = 1 if low is None else low
        return isinstance(value, int) and not isinstance(value, bool) and low <= value and (
            high is None or value <= high)
    if kind is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value) and (value > 0 if low is None else value >= low)
                and (high is None or value <= high))
    if kind is bool:
        return isinstance(value, bool)
    return isinstance(value, str) and (not choices or value in choices)


def _expected(kind: type, item: type | None, meta: Any) -> str:
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices") or ()
    if kind is tuple:
        each = _expected(item, None, meta)
        if item is int:
            each = "integers" + each.removeprefix("an integer")
        else:
            each = f"names ({each})" if choices else "names"
        return f"a non-empty list of {each}"
    if kind is int:
        low = 1 if low is None else low
        return f"an integer from {low} to {high}" if high is not None else \
            f"an integer >= {low}"
    if kind is float:
        bound = "a positive number" if low is None else f"a number >= {low}"
        return bound + (f" up to {high}" if high is not None else "")
    if kind is bool:
        return "true or false"
    return f"one of {', '.join(choices)}" if choices else "a string"

