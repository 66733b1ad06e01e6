"""`reslab experiment NAME`: a report folder per experiment."""

from __future__ import annotations

import argparse
import json
from argparse import Namespace
from datetime import datetime
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError

NAMES = "degradation, gradients, nested, orderings, cost"  # torch-free, for --help


def register(subcommands) -> dict:
    experiment = subcommands.add_parser(
        "experiment", help="reproduce a claim about residual networks, with a report",
        description="Run an experiment and write its report folder: results.json, figures "
        "and report.md. Without NAME, list the experiments.")
    experiment.add_argument("name", nargs="?", default=None, help=f"{NAMES} (none: list them)")
    experiment.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                            help="small subsets and short runs: minutes on 2 CPU cores")
    experiment.add_argument("--out", default=None, metavar="DIR",
                            help="report folder (default: runs/experiment-NAME-TIME)")
    experiment.add_argument("--data-dir", default=None, help="look for Fashion-MNIST here first")
    experiment.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                            help="change a setting, e.g. --set depths=[20,56,110] epochs=30 "
                            "(values in JSON)")

    return {"experiment": run_experiment}


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["depths=[20,56]", "epochs=5"]`` -> ``{"depths": (20, 56), "epochs": 5}``."""
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set epochs=5")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string
        settings[key.strip().replace("-", "_")] = tuple(value) if isinstance(value, list) \
            else value
    return settings


def run_experiment(ns: Namespace) -> int:
    from reslab.experiments import EXPERIMENTS, run
    from reslab.paths import expand

    if ns.name is None:
        width = max(map(len, EXPERIMENTS))
        for name, module in EXPERIMENTS.items():
            print(f"{name:<{width}}  {module.TITLE}")
        return 0
    settings = parse_settings(ns.set)
    if ns.data_dir is not None:
        settings["data_dir"] = ns.data_dir
    out = expand(ns.out, "--out") if ns.out else \
        Path("runs") / f"experiment-{ns.name}-{datetime.now():%Y%m%d-%H%M%S}"
    results = run(ns.name, out, quick=ns.quick, **settings)
    print(results["table"])
    print()
    print(" ".join(results["findings"]))
    print(f"\nreport: {out / 'report.md'} ({results['seconds'] / 60:.1f} min)")
    return 0
