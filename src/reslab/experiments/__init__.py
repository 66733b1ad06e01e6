"""Experiments: the seeds' arguments for residual networks, each run with one command.

    reslab.experiments.run("degradation", "reports/degradation", quick=True)

Each experiment trains what it needs through ``reslab.training.fit`` and writes a report
folder (results.json, PNG figures, report.md); each module has
``run(out_dir, quick=False, data=None, **settings) -> dict``.
"""

from __future__ import annotations

import difflib
import os
from types import ModuleType
from typing import Any

from reslab.data import Dataset
from reslab.deploy import grow_checkpoint
from reslab.errors import UnknownNameError
from reslab.experiments import cost, degradation, gradients, nested, orderings
from reslab.models import grow  # where model surgery lives; kept here for older callers

EXPERIMENTS: dict[str, ModuleType] = {
    "degradation": degradation,
    "gradients": gradients,
    "nested": nested,
    "orderings": orderings,
    "cost": cost,
}

__all__ = ["EXPERIMENTS", "get_experiment", "grow", "grow_checkpoint", "run"]


def get_experiment(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UnknownNameError(f"unknown experiment {name!r}{hint}; choose one of "
                               f"{', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def run(name: str, out_dir: str | os.PathLike, quick: bool = False,
        data: Dataset | None = None, **settings: Any) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir``; returns what its results.json holds."""
    return get_experiment(name).run(out_dir, quick=quick, data=data, **settings)
