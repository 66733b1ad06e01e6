"""`reslab runs`: the runs in a folder, one line each, and their learning curves side by side
(`--compare`)."""

from __future__ import annotations

import argparse
import json
from argparse import Namespace
from pathlib import Path

from reslab.errors import ConfigError
from reslab.paths import printable
from reslab.tables import count

MAX_COMPARED = 20  # one colour each (tab20)


def register(subcommands) -> dict:
    runs = subcommands.add_parser(
        "runs", help="list training runs; compare their curves",
        description="The reslab runs in a folder (default: runs), oldest first: model, data, "
        "epochs done/planned, best validation and test accuracy, training time and state "
        "(finished, interrupted, running, damaged). Only their small files are read.")
    runs.add_argument("folder", nargs="?", default="runs", metavar="DIR",
                      help="the folder of runs (default: runs), or one run")
    runs.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                      help="print JSON instead of a table")
    runs.add_argument("--limit", type=int, default=None, metavar="N",
                      help="open at most N folders, the most recently changed (default: 500)")
    runs.add_argument("--compare", nargs="+", default=None, metavar="RUN",
                      help="draw these runs' training loss and validation accuracy per epoch "
                      "on one figure (run folders, or names of runs in DIR); needs --out")
    runs.add_argument("--out", default=None, metavar="PNG",
                      help="the figure --compare writes (.png)")
    return {"runs": run_runs}


def run_runs(ns: Namespace) -> int:
    if ns.out and not ns.compare:
        raise ConfigError("--out is the figure of --compare: give the runs to compare "
                          "(--compare RUN RUN ...)")
    if ns.compare:
        if not ns.out:
            raise ConfigError("--compare draws a figure: give the file to write (--out "
                              "curves.png)")
        return _compare(ns)
    from reslab.training.listing import MAX_RUNS, list_runs

    if ns.limit is not None and ns.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {ns.limit}")
    listing = list_runs(ns.folder, ns.limit or MAX_RUNS)
    if ns.json:
        print(json.dumps(listing.to_dict(), indent=2))
        return 0
    _print_listing(listing, ns.limit or MAX_RUNS)
    return 0


def _print_listing(listing, limit: int) -> None:
    from reslab.tables import text_table

    folder = printable(listing.folder)
    if listing.runs:
        body = [[printable(r.name), r.state, printable(r.model or "?"), printable(r.data or "?"),
                 _when(r.started), _epochs(r.epochs_done, r.epochs_planned),
                 _acc(r.best_val_acc), _acc(r.test_acc), _duration(r.train_seconds)]
                for r in listing.runs]
        print(text_table(["run", "state", "model", "data", "started", "epochs", "best val",
                          "test", "time"], body, left=4))
    else:
        print(f"no reslab runs in {folder}")
    for run in listing.runs:
        if run.problem:
            print(f"damaged: {printable(run.name)}: {printable(run.problem)}")
    if listing.skipped:
        names = ", ".join(printable(n) for n in listing.skipped[:5])
        more = f", ... {len(listing.skipped) - 5} more" if len(listing.skipped) > 5 else ""
        print(f"skipped {count(len(listing.skipped), 'folder')} that hold no reslab run: "
              f"{names}{more}")
    if listing.not_read:
        print(f"not read: {count(listing.not_read, 'older folder')} of {folder} (only the "
              f"{limit:,} most recently changed are opened; --limit N opens more)")


def _compare(ns: Namespace) -> int:
    from reslab.paths import check_output
    from reslab.runtime.run_folder import RunFolder
    from reslab.training.listing import Damaged, read_history
    from reslab.training.plots import plot_comparison

    folders = list(dict.fromkeys(_run_folder(name, ns.folder) for name in ns.compare))
    if len(folders) > MAX_COMPARED:
        raise ConfigError(f"--compare takes at most {MAX_COMPARED} runs (one colour each), got "
                          f"{len(folders)}")
    out = check_output(ns.out, "--out", suffix=".png", inputs=folders)  # before any work
    names = [f.name for f in folders]
    histories = {}
    for folder in folders:
        try:
            history = read_history(RunFolder(folder))
        except Damaged as problem:
            raise ConfigError(f"run {printable(folder)} is damaged: {printable(problem)}; "
                              "leave it out of --compare") from None
        if not history:
            raise ConfigError(f"run {printable(folder)} has no finished epoch yet "
                              "(no metrics.jsonl rows): nothing to draw")
        label = folder.name if names.count(folder.name) == 1 else str(folder)
        histories[printable(label)] = history
    plot_comparison(histories, out)
    if ns.json:
        print(json.dumps({"path": str(out), "runs": [str(f) for f in folders]}))
    else:
        print(f"wrote {printable(out)}: training loss and validation accuracy of "
              f"{count(len(folders), 'run')} ({', '.join(histories)})")
    return 0


def _run_folder(name: str, folder: str) -> Path:
    """A run given by its folder, or by its name in DIR."""
    from reslab.paths import expand, is_folder
    from reslab.training.listing import is_run

    for path in (expand(name, "--compare"), expand(folder, "runs") / name):
        if is_folder(path):
            if not is_run(path):
                raise ConfigError(f"--compare {printable(name)}: {printable(path)} is no "
                                  "reslab run (no config.json or checkpoints/ of reslab's)")
            return path
    raise ConfigError(f"--compare {printable(name)}: no such run folder, here or in "
                      f"{printable(folder)}; `reslab runs {printable(folder)}` lists them")


def _when(started: str | None) -> str:
    """The local start time to the minute: 2024-12-04 22:05."""
    return started[:16].replace("T", " ") if started else "?"


def _epochs(done: int | None, planned: int | None) -> str:
    return f"{'?' if done is None else done}/{'?' if planned is None else planned}"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
