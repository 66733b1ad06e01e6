"""What an experiment is: a name and title, typed settings with ranges and named modes, a
``plan`` of the training runs it needs, and an ``analyse`` of their results.

A new experiment is a subclass of ``Experiment`` in a module of its own, and its name in
``reslab.experiments.NAMES``; ``executor.execute`` does everything else (checks the
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

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from reslab.errors import ConfigError, check_fields
from reslab.runtime.precision import Precision
from reslab.settings import normalised, parsed, problems
from reslab.settings import setting as setting  # an experiment declares its settings with it

if typing.TYPE_CHECKING:
    from torch import nn

    from reslab.data import Dataset
    from reslab.training import FitResult, TrainConfig, TrainState


@dataclass
class Settings:
    """Fields every experiment has. Sizes cut each split to its first N images (None: all)."""

    data_dir: str | None = setting(None, "where Fashion-MNIST is looked for first")
    train_size: int | None = setting(None, "training images (the first N)")
    val_size: int | None = setting(None, "validation images, of the 5,000 held out of train")
    test_size: int | None = setting(None, "test images (the first N)")
    quiet: bool = setting(False, "no per-epoch progress from the training runs")

    def rules(self) -> list[str]:
        """What is wrong across fields, once each field is in its range (none by default):
        one line each, naming the setting ("arms must include grown...")."""
        return []


@dataclass
class TrainingSettings(Settings):
    """The recipe knobs of experiments that train with the paper's recipe (``paper_recipe``)."""

    epochs: int = setting(20, "epochs of each training run")
    batch_size: int = setting(128, "images per SGD step")
    lr: float = setting(0.1, "peak learning rate")
    warmup_epochs: float = setting(0.0, "epochs of linear learning-rate warm-up, or of "
                                   "one-cycle's rise (0: the paper's constant start)", low=0)
    # bf16 autocast where the CPU multiplies bf16 fast (1.3-1.8x per step for these nets)
    precision: Precision = setting("auto", "autocast precision (fp32: the paper's arithmetic)")


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
        values = self.modes.get(mode, {}) | overrides
        s = normalised(self.settings(**{k: parsed(v, hints[k]) for k, v in values.items()}))
        # the defaults are checked too: a subclass may get one wrong
        if found := problems(s):
            raise ConfigError(f"setting {found[0]}")
        return s
