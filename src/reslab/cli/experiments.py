"""`reslab experiment NAME`: a report folder per experiment."""

from __future__ import annotations

import argparse
from argparse import Namespace
from datetime import datetime
from pathlib import Path

from reslab.errors import ConfigError
from reslab.experiments import NAMES  # the registry's names, torch-free for --help


def register(subcommands) -> dict:
    experiment = subcommands.add_parser(
        "experiment", help="reproduce a claim about residual networks, with a report",
        description="Run an experiment and write its report folder: results.json, figures "
        "and report.md. Without NAME, list the experiments.")
    experiment.add_argument("name", nargs="?", default=None,
                            help=f"{', '.join(NAMES)} (none: list them)")
    experiment.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                            help="small subsets and short runs: minutes on 2 CPU cores (the "
                            "same as --mode quick)")
    experiment.add_argument("--mode", default=None, metavar="MODE",
                            help="a named set of settings: full (the default), quick, or one "
                            "the experiment adds (degradation: long, the paper's 64k "
                            "iterations); `reslab experiment` lists them")
    experiment.add_argument("--out", default=None, metavar="DIR",
                            help="report folder (default: runs/experiment-NAME-TIME)")
    experiment.add_argument("--data-dir", default=None, help="look for Fashion-MNIST here first")
    experiment.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                            help="change a setting, e.g. --set depths=20,56,110 epochs=30 "
                            "(each parsed by the setting's type and checked before any work)")

    return {"experiment": run_experiment}


def parse_settings(items: list[str]) -> dict[str, str]:
    """``["depths=20,56", "epochs=5"]`` -> ``{"depths": "20,56", "epochs": "5"}``: the text of
    each value, which the experiment parses by its setting's type."""
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set epochs=5")
        settings[key.strip().replace("-", "_")] = text
    return settings


def run_experiment(ns: Namespace) -> int:
    from reslab.experiments import EXPERIMENTS, run
    from reslab.paths import expand

    if ns.name is None:
        width = max(map(len, EXPERIMENTS))
        for name, experiment in EXPERIMENTS.items():
            print(f"{name:<{width}}  {experiment.title} (modes: "
                  f"{', '.join(experiment.mode_names())})")
        return 0
    settings = parse_settings(ns.set)
    if ns.data_dir is not None:
        settings["data_dir"] = ns.data_dir
    out = expand(ns.out, "--out") if ns.out else \
        Path("runs") / f"experiment-{ns.name}-{datetime.now():%Y%m%d-%H%M%S}"
    results = run(ns.name, out, quick=ns.quick, mode=ns.mode, **settings)
    print(results["table"])
    print()
    print(" ".join(results["findings"]))
    print(f"\nreport: {out / 'report.md'} ({results['seconds'] / 60:.1f} min)")
    return 0
