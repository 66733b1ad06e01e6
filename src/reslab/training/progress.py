"""What a run shows while it trains, on stderr: a start line, a live bar when stderr is a
terminal, one line per epoch, and a line where it stops early.

This is reslab's progress layer, so it writes to stderr itself, from the command line and
from Python alike. ``quiet`` silences it, and so does a level above INFO set on the
``reslab`` (or ``reslab.progress``) logger: ``logging.getLogger("reslab").setLevel("WARNING")``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def silenced_by_logging() -> bool:
    """Whether the user set a level above INFO on reslab's loggers (root's default does not
    count: a script that never set up logging still sees its progress)."""
    logger: logging.Logger | None = logging.getLogger("reslab.progress")
    while logger is not None and logger is not logging.root:
        if logger.level != logging.NOTSET:
            return logger.level > logging.INFO
        logger = logger.parent
    return False


class Progress:
    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int):
        self.epochs, self.steps = epochs, steps_per_epoch
        self.enabled = enabled and not silenced_by_logging()
        self.live = self.task = None
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.live = RichProgress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[figures]}"),
                TimeRemainingColumn(), transient=True, console=Console(stderr=True),
            )
            self.live.start()

    def line(self, text: str) -> None:
        """One line above the bar (or a log line without one)."""
        if not self.enabled:
            return
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        """A line that ``quiet`` does not silence: above the bar, or a warning on reslab's
        logger (stderr from the command line; Python's default shows warnings too)."""
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            log.warning(text)

    def start_epoch(self, epoch: int, completed: int) -> None:
        if self.live is not None:
            if self.task is not None:
                self.live.remove_task(self.task)
            self.task = self.live.add_task("train", total=self.steps, completed=completed,
                                           epoch=epoch + 1, epochs=self.epochs, figures="")

    def update(self, batch: int, loss: float, acc: float, rate: float) -> None:
        """The epoch's running figures so far, as its closing line will give them."""
        if self.live is not None:
            self.live.update(self.task, completed=batch,
                             figures=f"loss {loss:.4f}  train acc {acc:.4f}  {rate:.0f} img/s")

    def end_epoch(self, row: dict[str, Any]) -> None:
        val = "-" if row["val_acc"] is None else f"{row['val_acc']:.4f}"
        self.line(f"epoch {row['epoch']}/{self.epochs}  loss {row['train_loss']:.4f}  "
                  f"train acc {row['train_acc']:.4f}  val acc {val}  lr {row['lr']:.4g}  "
                  f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")

    def close(self) -> None:
        """Take the bar off the terminal (also on an interrupt or an error)."""
        if self.live is not None:
            self.live.stop()
            self.live = None
