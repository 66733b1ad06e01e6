"""The one executor every experiment runs through: settings checked, report folder prepared,
the planned runs trained through ``reslab.training.fit`` (a run an earlier attempt finished is
read back, a half-done one resumed), then ``measure`` and ``analyse``, and the report written.

report folder/
  experiment.json        the experiment and its settings (a rerun with the same continues)
  runs/KEY/              each planned run's own run directory (metrics, checkpoints...)
  probes/KEY.jsonl       what each run's probe measured, one row per line, with its step
  measured.json          what ``measure`` found, kept so a continued experiment reuses it
  results.json, report.md, *.png
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab import memory
from reslab.data import Dataset
from reslab.errors import ConfigError
from reslab.experiments.common import prepare_data, prepare_out
from reslab.experiments.protocol import Experiment, PlannedRun, Probe, RunResult
from reslab.experiments.report import save_figure, write_report
from reslab.io import atomic_write_text
from reslab.paths import read_own_file
from reslab.runtime.checkpoint import load_checkpoint, read_checkpoint_meta
from reslab.runtime.device import resolve_device
from reslab.runtime.run_folder import RunFolder
from reslab.settings import problems
from reslab.tables import count
from reslab.training import FitResult, fit

log = logging.getLogger(__name__)
MEASURED = "measured.json"


def execute(experiment: Experiment, out_dir: str | os.PathLike, *, mode: str = "full",
            data: Dataset | None = None, settings: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Run ``experiment`` into ``out_dir``; returns what its results.json holds."""
    s = experiment.resolve(mode, settings or {})
    started = time.perf_counter()
    prepare_out(out_dir, experiment.name, s, create=False)  # refused before the data's minutes
    data = prepare_data(s, data)
    runs = experiment.plan(s, data)
    _check_plan(runs, data)  # what the engine would refuse, refused before the folder is made
    out = prepare_out(out_dir, experiment.name, s)
    done: dict[str, RunResult] = {}
    for run in runs:
        done[run.key] = train_run(run, data, out, done)
    measured = _measured(experiment, s, data, done, out)
    analysis = experiment.analyse(s, data, done, measured)
    for file, (figure, _) in analysis.figures.items():
        save_figure(figure, out / file)
    summaries = [_summary(r) for r in done.values()]
    return write_report(
        out, name=experiment.name, title=experiment.title, description=analysis.description,
        table=analysis.table, findings=analysis.findings,
        figures={file: caption for file, (_, caption) in analysis.figures.items()},
        shows=analysis.shows, does_not_show=analysis.does_not_show,
        results={"data": data.name, "test_images": len(data.test), "runs": summaries,
                 **({"measured": measured} if measured else {}), **analysis.results},
        settings=s, mode=mode, seconds=time.perf_counter() - started,
        train_seconds=sum(r["seconds"] for r in summaries))


def _check_plan(runs: list[PlannedRun], data: Dataset) -> None:
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"an experiment's plan names a run twice: {sorted(keys)}")
    for run in runs:
        if found := problems(run.config):  # the checks fit makes, before any run trains
            raise ConfigError(found[0])
        if run.config.batch_size > len(data.train):
            raise ConfigError(f"setting batch_size {run.config.batch_size} is larger than the "
                              f"{len(data.train):,} training images: lower it")
    for run in runs:  # each network on the meta device: what training it will allocate
        try:
            with torch.device("meta"):
                model = run.model({})
        except LookupError:  # built from another run's weights: as large as that run's
            continue
        shape = data.input_shape(run.config.resize)
        memory.require(memory.training_bytes(model, shape, run.config.batch_size),
                       f"run {run.key} ({run.label} at {'x'.join(map(str, shape))}, batch "
                       f"{run.config.batch_size})", "lower the depths, widths or batch_size "
                       "settings")


def train_run(run: PlannedRun, data: Dataset, out: Path, done: dict[str, RunResult]
              ) -> RunResult:
    """Train one planned run through the normal engine into ``out/runs/KEY``. A run an earlier
    attempt finished is read back (its model gets the chosen weights), one it left half done is
    resumed from its last checkpoint with its probe's rows up to that checkpoint."""
    run_dir = RunFolder(out / "runs" / run.key)
    config = run.config.replace(model=run.label, out=str(run_dir.path))
    probes = ProbeLog(out / "probes" / f"{run.key}.jsonl", run.probe)
    model = run.model(done)
    if run_dir.results.is_file() and run_dir.best.is_file():
        log.info("%s: finished before, kept", run.key)
        return RunResult(run, _read_back(model, run_dir), probes.read())
    resume = run_dir.last.is_file()
    log.info("%s %s (%s: %s of %d images)", "resuming" if resume else "training",
             run.key, run.label, count(config.epochs, "epoch"), len(data.train))
    if resume:
        probes.keep_until(read_checkpoint_meta(run_dir.last).step or 0)
    else:
        probes.start(model.to(resolve_device(config.device)), config)
    try:
        result = fit(model, data, config, run_dir=run_dir.path, resume=resume,
                     on_step=probes.on_step if probes.steps else None,
                     on_epoch_end=probes.on_epoch_end if run.probe else None)
    finally:  # an interrupted run keeps the rows up to where it stopped, as its checkpoint
        probes.flush()
    return RunResult(run, result, probes.rows)


def _read_back(model: nn.Module, run: RunFolder) -> FitResult:
    model.load_state_dict(load_checkpoint(run.best).weights)
    history = [json.loads(line) for line in read_own_file(run.metrics, "a run's metrics")
               .splitlines()]
    test = json.loads(read_own_file(run.results, "a run's results"))
    return FitResult(run.path, history, test.get("best_val_acc"), test, model.eval())


class ProbeLog:
    """A run's probe rows, each stamped with its step, kept in a JSON Lines file."""

    def __init__(self, path: Path, probe: Probe | None):
        self.path, self.probe, self.rows = path, probe, []
        # the per-step hook is a call per step: passed to the engine only where a probe has one
        self.steps = probe is not None and type(probe).on_step is not Probe.on_step

    def read(self) -> list[dict[str, Any]]:
        if self.probe is None or not self.path.is_file():
            return []
        return [json.loads(line) for line in read_own_file(self.path, "a run's probe rows")
                .splitlines()]

    def keep_until(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint, and measures them again."""
        self.rows = [r for r in self.read() if r["step"] <= step]

    def start(self, model: nn.Module, config) -> None:
        self.rows = []
        if self.probe is not None:
            self._add(0, self.probe.start(model, config))
            self.flush()

    def on_step(self, state, loss: float, correct: int, images: int) -> None:
        self._add(state.counters.step, self.probe.on_step(state, loss, correct, images))

    def on_epoch_end(self, row: dict[str, Any], model: nn.Module) -> None:
        self._add(row["step"], self.probe.on_epoch_end(row, model))
        self.flush()  # the epoch's checkpoint has just been written: the rows go with it

    def _add(self, step: int, row: dict[str, Any] | None) -> None:
        if row is not None:
            self.rows.append({"step": step, **row})

    def flush(self) -> None:
        if self.probe is not None:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def _measured(experiment: Experiment, s: Any, data: Dataset, runs: dict[str, RunResult],
              out: Path) -> dict[str, Any]:
    path = out / MEASURED
    if path.is_file():
        return json.loads(read_own_file(path, "the experiment's measurements"))
    measured = experiment.measure(s, data, runs)
    if measured:
        atomic_write_text(path, json.dumps(measured, indent=2) + "\n")
    return measured


def _summary(result: RunResult) -> dict[str, Any]:
    """A run's line in results.json: what it is and how it ended."""
    last = result.last
    return {"key": result.run.key, "label": result.run.label, **result.info,
            "params": sum(p.numel() for p in result.fit.model.parameters()),
            "steps": last["step"], "train_error": 1 - last["train_acc"],
            "train_loss": last["train_loss"],
            "val_error": None if last["val_acc"] is None else 1 - last["val_acc"],
            "test_error": result.test_error,
            "seconds": result.fit.test.get("train_seconds", 0.0)}
