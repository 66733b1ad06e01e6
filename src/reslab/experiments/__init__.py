"""Experiments: the seeds' arguments for residual networks, each run with one command.

    reslab.experiments.run("degradation", "reports/degradation", quick=True)
    reslab.experiments.run("degradation", "reports/degradation-long", mode="long")
    reslab.experiments.run("nested", "reports/nested", seeds=(0, 1))

An experiment is declared, not scripted: a subclass of ``protocol.Experiment`` names itself,
types its settings (with ranges, checked before any work) and modes, ``plan``s the training
runs it needs and ``analyse``s their results; ``executor.execute`` trains the runs through
``reslab.training.fit`` (a finished run is read back, a half-done one resumed, so an
interrupted experiment continues) and writes the report folder: results.json, PNG figures and
report.md. Adding one is a module ``reslab/experiments/NAME.py`` holding its ``EXPERIMENT``,
and NAME in ``NAMES`` below.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING, Any

from reslab.errors import ConfigError, UnknownNameError, close_matches

if TYPE_CHECKING:
    from reslab.data import Dataset
    from reslab.experiments.protocol import Experiment

# the registry, by name: `reslab experiment --help` lists it and an unknown name is refused
# without importing the experiments (and torch); EXPERIMENTS imports them on first use
NAMES = ("degradation", "gradients", "nested", "orderings", "cost")

__all__ = ["EXPERIMENTS", "NAMES", "Experiment", "get_experiment", "run"]


def __getattr__(name: str) -> Any:
    if name == "EXPERIMENTS":  # name -> Experiment, in the order of NAMES
        return _experiments()
    if name == "Experiment":
        from reslab.experiments.protocol import Experiment
        return Experiment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _experiments() -> dict[str, Experiment]:
    return {name: importlib.import_module(f"{__name__}.{name}").EXPERIMENT for name in NAMES}


def get_experiment(name: str) -> Experiment:
    if name not in NAMES:
        close = close_matches(name, NAMES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UnknownNameError(f"unknown experiment {name!r}{hint}; choose one of "
                               f"{', '.join(NAMES)}")
    return _experiments()[name]


def run(name: str, out_dir: str | os.PathLike, quick: bool = False,
        data: Dataset | None = None, mode: str | None = None, **settings: Any
        ) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir`` in ``mode`` (full, quick, or one the
    experiment adds; ``quick=True`` is mode quick), ``settings`` on top; values may be text,
    parsed by each setting's type. Returns what its results.json holds."""
    from reslab.experiments.executor import execute

    return execute(get_experiment(name), out_dir, mode=_mode(quick, mode), data=data,
                   settings=settings)


def _mode(quick: bool, mode: str | None) -> str:
    if quick and mode not in (None, "quick"):
        raise ConfigError(f"--quick and mode {mode!r} contradict each other: give one")
    return "quick" if quick else mode or "full"
