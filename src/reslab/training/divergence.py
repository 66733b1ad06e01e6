"""A run that diverged: a non-finite loss (checked at every step), weights an optimizer step
made non-finite (checked before each checkpoint, so the one on disk stays the last good one),
a validation that overflows (said at its epoch); each says what to try."""

from __future__ import annotations

import math
from typing import Any

import torch

from reslab.errors import TrainingError
from reslab.training.progress import Progress
from reslab.training.state import TrainState


def what_to_try(state: TrainState) -> str:
    """What makes a run that overflowed finite: half its peak learning rate, and under bf16
    or fp16 also full precision."""
    tries = [f"--lr {state.config.lr / 2:g} (now {state.config.lr:g})"]
    if state.precision in ("bf16", "fp16"):
        tries.append(f"--precision fp32 (now {state.precision})")
    return "try " + " or ".join(tries)


def diverged(what: str, value: float, step: int, state: TrainState) -> TrainingError:
    return TrainingError(
        f"the {what} became {value} at step {step} (epoch {state.counters.epoch + 1}): "
        f"training diverged; {what_to_try(state)}. The last good checkpoint is kept"
    )


def warn_non_finite_validation(row: dict[str, Any], state: TrainState,
                               progress: Progress) -> None:
    """A validation loss or accuracy that is not a number is said at its epoch (the training
    loss, checked at every step, is finite); metrics.jsonl records it as null."""
    bad = [f"{name.replace('_', ' ')} {row[key]}" for key, name in
           (("val_loss", "validation_loss"), ("val_acc", "validation_accuracy"))
           if row[key] is not None and not math.isfinite(row[key])]
    if bad:
        progress.warn(f"warning: epoch {row['epoch']}: {' and '.join(bad)} (training loss "
                      f"{row['train_loss']:.4f}): the model overflows on the validation "
                      f"images; {what_to_try(state)}")


def check_finite(state: TrainState) -> None:
    """Refuse to checkpoint weights an optimizer step has made non-finite: the loss only
    shows it one step later, and the checkpoint on disk must stay the last good one."""
    for tensor in state.model.state_dict().values():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = tensor[~torch.isfinite(tensor)][0].item()
            raise diverged("weights", bad, state.counters.step, state)
