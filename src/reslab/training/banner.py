"""The lines a run prints at its ends: what it trains on what, and where (the start line);
where it stopped and how to continue (a signal's line)."""

from __future__ import annotations

from pathlib import Path

import torch

from reslab.data import Dataset
from reslab.training.config import TrainConfig
from reslab.training.state import TrainState


def start_line(state: TrainState, data: Dataset, config: TrainConfig, path: Path,
               epochs: int) -> str:
    from reslab.models.summary import format_count, summary
    from reslab.tables import count

    model = state.model
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = data.input_shape(config.resize)
    try:
        macs = f", {format_count(summary(model, shape).macs)} MACs"
    except Exception:  # a model summary cannot take: the line goes without its cost
        macs = ""
    frozen = f" ({trainable:,} trained)" if trainable < params else ""
    where = f"from step {state.counters.step}, " if state.counters.step else ""
    train = f"{len(data.train):,} train"
    if config.train_subset is not None:  # the images it trains on, not the split's
        train = f"{config.train_subset:,} train (subset of {len(data.train):,})"
    test = f"{len(data.test):,} test" + (" (held out)" if data.source.test_origin else "")
    return (f"{config.model}: {params:,} parameters{frozen}{macs} | {data.name}: "
            f"{train} / {len(data.val):,} val / {test} images, "
            f"{'x'.join(map(str, shape))} | {where}{count(epochs, 'epoch')} of "
            f"{count(state.steps_per_epoch, 'step')} | {state.device.type}, {state.precision}, "
            f"{count(torch.get_num_threads(), 'thread')} | run directory {path}")


def end_line(signal_name: str, when: str, path: Path, resume_does: str) -> str:
    """The line of a signal after training: the same form as ``stopped_line``'s."""
    return (f"stopped by {signal_name} {when}; training is done and saved in {path}; continue "
            f"with: reslab train --resume {path} ({resume_does})")


def stopped_line(signal_name: str, state: TrainState, path: Path) -> str:
    """The line of a signal during training: where it stopped, and how to continue."""
    c = state.counters
    return (f"stopped by {signal_name} at epoch {c.epoch + 1}, step {c.step} (batch "
            f"{c.batch}/{state.steps_per_epoch} of the epoch), saved in {path}; continue with: "
            f"reslab train --resume {path}")
