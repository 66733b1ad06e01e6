"""Experiments: the seeds' arguments for residual networks, each run with one command.

    reslab.experiments.run("degradation", "reports/degradation", quick=True)
    reslab.experiments.run("nested", "reports/nested", mode="long", seeds=(0, 1))

An experiment is declared, not scripted: a subclass of ``protocol.Experiment`` names itself,
types its settings (with ranges, checked before any work) and modes, ``plan``s the training
runs it needs and ``analyse``s their results; ``executor.execute`` trains the runs through
``reslab.training.fit`` (a finished run is read back, a half-done one resumed, so an
interrupted experiment continues) and writes the report folder: results.json, PNG figures and
report.md. Adding one is a module and a line in ``EXPERIMENTS`` below.
"""

from __future__ import annotations

import os
from typing import Any

from reslab.data import Dataset
from reslab.errors import ConfigError, UnknownNameError, close_matches
from reslab.experiments import cost, degradation, gradients, nested, orderings
from reslab.experiments.executor import execute
from reslab.experiments.protocol import Experiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    degradation.EXPERIMENT, gradients.EXPERIMENT, nested.EXPERIMENT, orderings.EXPERIMENT,
    cost.EXPERIMENT)}

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment", "run"]


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        close = close_matches(name, list(EXPERIMENTS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UnknownNameError(f"unknown experiment {name!r}{hint}; choose one of "
                               f"{', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def run(name: str, out_dir: str | os.PathLike, quick: bool = False,
        data: Dataset | None = None, mode: str | None = None, **settings: Any
        ) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir`` in ``mode`` (full, quick, or one the
    experiment adds; ``quick=True`` is mode quick), ``settings`` on top; values may be text,
    parsed by each setting's type. Returns what its results.json holds."""
    return execute(get_experiment(name), out_dir, mode=_mode(quick, mode), data=data,
                   settings=settings)


def _mode(quick: bool, mode: str | None) -> str:
    if quick and mode not in (None, "quick"):
        raise ConfigError(f"--quick and mode {mode!r} contradict each other: give one")
    return "quick" if quick else mode or "full"
