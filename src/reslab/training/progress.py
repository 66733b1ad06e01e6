"""Progress of a run: a live bar on a terminal, one log line per epoch otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("reslab.training")


class Progress:
    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int):
        self.enabled, self.epochs, self.steps = enabled, epochs, steps_per_epoch
        self.live = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.live = RichProgress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} "
                           "{task.fields[rate]:.0f} img/s"),
                TimeRemainingColumn(), transient=True,
            )
            self.live.start()
            self.task = None

    def start_epoch(self, epoch: int, completed: int) -> None:
        if self.live is not None:
            if self.task is not None:
                self.live.remove_task(self.task)
            self.task = self.live.add_task("train", total=self.steps, completed=completed,
                                           epoch=epoch + 1, epochs=self.epochs, loss=0.0,
                                           acc=0.0, rate=0.0)

    def update(self, batch: int, loss: float, acc: float, rate: float) -> None:
        if self.live is not None:
            self.live.update(self.task, completed=batch, loss=loss, acc=acc, rate=rate)

    def end_epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        val = "-" if row["val_acc"] is None else f"{row['val_acc']:.4f}"
        line = (f"epoch {row['epoch']}/{self.epochs}  loss {row['train_loss']:.4f}  "
                f"train acc {row['train_acc']:.4f}  val acc {val}  "
                f"lr {row['lr']:.4g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")
        if self.live is not None:
            self.live.console.print(line)
        else:
            log.info("%s", line)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
