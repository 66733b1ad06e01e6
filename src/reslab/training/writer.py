"""Everything a run writes into its directory, called by the loop at its events: the start
(config.json), a checkpoint, an epoch's end (best/last checkpoints, metrics.jsonl, curves.png,
TensorBoard) and the finish (results.json, confusion.png). Only the main process writes.

A full or read-only disk stops the run with one line and the last good files intact."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError, TrainingError
from reslab.runtime.checkpoint import save_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.run_folder import RunFolder, check_run_folder
from reslab.training.plots import plot_confusion, plot_curves
from reslab.training.state import TrainState

log = logging.getLogger(__name__)


class RunWriter:
    def __init__(self, path: str | Path, *, active: bool = True):
        self.run = RunFolder(path)
        self.active = active
        self._tensorboard_writer = None  # opened at the first epoch's end

    @property
    def path(self) -> Path:
        return self.run.path

    def open(self, config: dict[str, Any], *, resume: bool) -> RunWriter:
        """Hold the directory; a new run also checks it is free and records its config (a
        resumed one records it once its checkpoint is read: see ``record``)."""
        if not self.active:
            return self
        if not resume:
            check_run_folder(self.run.path, "--out", ())  # never over a user's files
        self.run.lock()
        if not resume:
            if self.run.last.exists():
                raise ConfigError(f"{self.path} already holds a run: resume it with --resume "
                                  f"{self.path}, or choose another --out")
            self.record(config)
        return self

    def record(self, config: dict[str, Any]) -> None:
        """The run's config.json (a resumed run's: its new length, once its checkpoint has
        been read, so that a damaged checkpoint leaves the run as it was)."""
        if self.active:
            _write(self.run.config, lambda: self.run.write_config(config))

    def close(self) -> None:
        if self._tensorboard_writer is not None:
            self._tensorboard_writer.close()
            self._tensorboard_writer = None
        self.run.unlock()

    def checkpoint(self, state: TrainState, meta: CheckpointMeta) -> None:
        """The resumable ``last`` checkpoint, with the counters as they stand."""
        if self.active:
            _write(self.run.last, lambda: save_checkpoint(
                self.run.last, state.model.state_dict(), _progress(meta, state),
                state.state_dict()))

    def epoch_end(self, state: TrainState, meta: CheckpointMeta, *, best: bool,
                  title: str) -> None:
        if not self.active:
            return
        history = state.counters.history
        if best:
            _write(self.run.best, lambda: save_checkpoint(
                self.run.best, state.evaluated.state_dict(), _progress(meta, state)))
        self.checkpoint(state, meta)
        _write(self.run.metrics, lambda: self.run.write_metrics(history))
        _write(self.run.curves, lambda: plot_curves(history, self.run.curves, title))
        self._tensorboard(history[-1])

    def metrics(self, state: TrainState) -> None:
        """Rewrite metrics.jsonl from the counters (a crash may have left it behind them)."""
        if self.active:
            _write(self.run.metrics, lambda: self.run.write_metrics(state.counters.history))

    def finish(self, results: dict[str, Any], confusion, classes: list[str], title: str) -> None:
        if self.active:
            _write(self.run.results, lambda: self.run.write_results(results))
            _write(self.run.confusion, lambda: plot_confusion(confusion, classes,
                                                              self.run.confusion, title))

    def _tensorboard(self, row: dict[str, Any]) -> None:
        if self._tensorboard_writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard_writer = SummaryWriter(str(self.run.tensorboard))
            except ImportError:  # tensorboard is optional
                return
        writer = self._tensorboard_writer
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
            if row[key] is not None:
                writer.add_scalar(key, row[key], row["step"])
        writer.flush()


def _progress(meta: CheckpointMeta, state: TrainState) -> CheckpointMeta:
    """The run's metadata with its counters as they stand."""
    history = state.counters.history
    return meta.replace(epoch=state.counters.epoch, step=state.counters.step,
                        metrics=history[-1] if history else {})


def _write(path: Path, write) -> None:
    """Run a write; a full or read-only disk stops the run with the last good files intact."""
    try:
        write()
    except OSError as error:
        raise TrainingError(
            f"cannot write {path}: {error.strerror or error}; the run stops here and its last "
            "good checkpoint is kept (free space or fix permissions, then --resume)"
        ) from None
