"""A run's training state: the model and everything that changes as it trains (optimizer,
schedule, EMA, loss scaler, counters), saved to and restored from a checkpoint as a whole."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from reslab.errors import WeightsError
from reslab.paths import printable
from reslab.runtime.run_folder import RunFolder
from reslab.training.config import TrainConfig
from reslab.training.lookahead import Lookahead
from reslab.training.optim import (
    Continuation,
    ErrorGatedWarmup,
    continue_schedule,
    ends_with_the_run,
    make_optimizer,
    make_scheduler,
    peak_step,
)


@dataclass
class Counters:
    """How far a run is; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimizer steps in all
    best_val_acc: float = -1.0
    best_epoch: int = 0
    lr: float = 0.0  # the (peak group's) learning rate of the last step taken
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss, correct, images
    seconds: float = 0.0  # training time of the current epoch so far (across a resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    total_steps: int = 0  # the length the schedule is planned over
    continuation: dict[str, Any] | None = None  # the plan of an extension's schedule

    @classmethod
    def from_dict(cls, values: Any, source: str) -> Counters:
        """Counters read from a checkpoint, each field checked: an edited or damaged file is
        refused naming the field, never half-restored."""
        if not isinstance(values, dict):
            raise WeightsError(f"{source}: its counters are not a JSON object")
        kinds = {"epoch": int, "batch": int, "step": int, "best_epoch": int, "total_steps": int,
                 "best_val_acc": float, "lr": float, "seconds": float, "sums": list,
                 "history": list,
                 "continuation": (dict, type(None))}
        counters = cls()
        for name, value in values.items():
            if name not in kinds:  # a field a newer reslab writes, or an old one we dropped
                continue
            kind = kinds[name]
            ok = (isinstance(value, kind) and not isinstance(value, bool)) if kind is not float \
                else (type(value) in (int, float) and math.isfinite(value))
            if kind is int and ok:
                ok = value >= 0
            if name == "sums" and ok:
                ok = len(value) == 3 and all(type(v) in (int, float) for v in value)
            if name == "history" and ok:  # read at every epoch's end: checked before training
                ok = all(_is_history_row(row) for row in value)
                value = value if ok else f"[... {_first_bad_row(value)!r:.60}]"
            if not ok:
                raise WeightsError(f"{source}: counter {name!r} is {value!r:.40}, which no run "
                                   "writes; the file is damaged or was edited, so it cannot be "
                                   "resumed (start from its weights with --init-from)")
            setattr(counters, name, value)
        return counters


# a history row's fields, as loop._end_epoch writes them: integers, numbers, or numbers that
# are None when the run has no validation split
_ROW_INTS = ("epoch", "step", "train_images")
_ROW_NUMBERS = ("train_loss", "train_acc", "lr", "images_per_s", "seconds")
_ROW_OPTIONAL = ("val_loss", "val_acc")


def _is_history_row(row: Any) -> bool:
    def number(v: Any) -> bool:
        return type(v) in (int, float) and math.isfinite(v)

    return (isinstance(row, dict)
            and all(type(row.get(k)) is int and row[k] >= 0 for k in _ROW_INTS)
            and all(number(row.get(k)) for k in _ROW_NUMBERS)
            and all(k in row and (row[k] is None or number(row[k])) for k in _ROW_OPTIONAL))


def _first_bad_row(history: list[Any]) -> Any:
    return next(row for row in history if not _is_history_row(row))


class TrainState:
    """Model, optimizer, schedule, EMA, scaler and counters of one run."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, total_steps: int,
                 steps_per_epoch: int, precision: str = "fp32", head: nn.Module | None = None):
        self.model, self.config = model, config
        self.net = model  # what a step calls: the model, or its DDP / compiled wrapper
        self.device = next(model.parameters()).device
        self.precision = precision
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = make_optimizer(model, config, head)
        self.scheduler = make_scheduler(self.optimizer, config, total_steps, steps_per_epoch)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                  use_buffers=True) if config.ema_decay else None)
        self.lookahead = (Lookahead(model, config.lookahead_steps, config.lookahead_alpha)
                          if config.lookahead_steps else None)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.counters = Counters(total_steps=total_steps)
        self.notes: list[str] = []  # what loading a checkpoint has to tell the user

    @property
    def evaluated(self) -> nn.Module:
        """The model validation and the best checkpoint see: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def warm_up(self) -> ErrorGatedWarmup | None:
        return self.scheduler if isinstance(self.scheduler, ErrorGatedWarmup) else None

    def after_step(self) -> None:
        """Bookkeeping of every optimizer step: the schedule, lookahead and the EMA move on."""
        group = self.optimizer.param_groups[0]  # the run's rate: any group's over its multiple
        self.counters.lr = group["lr"] / group.get("lr_scale", 1.0)
        self.scheduler.step()
        if self.lookahead is not None:
            self.lookahead.step(self.counters.step)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights, as a checkpoint's ``train_state``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": torch.get_rng_state(),
            "state": dataclasses.asdict(self.counters),
        }

    def load(self, weights: dict[str, torch.Tensor], saved: dict[str, Any], source: str,
             total_steps: int) -> None:
        """Restore a checkpoint's state; a longer ``total_steps`` than the run was planned
        over extends it (see ``optim.Continuation`` for what the rate does then)."""
        counters = Counters.from_dict(saved.get("state"), source)
        try:
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(saved["optimizer"])
            _match_parameter_layouts(self.optimizer)
            rates = [g["lr"] for g in self.optimizer.param_groups]
            if counters.continuation is not None:  # a run extended before
                self._set_main(Continuation(self.optimizer, self.config.lr,
                                            **counters.continuation))
            self.scheduler.load_state_dict(saved["scheduler"])
            for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
                group["lr"] = lr  # building a schedule resets the rate; the saved one holds
            if self.ema is not None and saved.get("ema") is not None:
                self.ema.load_state_dict(saved["ema"])
            if self.lookahead is not None:
                self.lookahead.load_state_dict(saved["lookahead"])
            if self.scaler is not None and saved.get("scaler") is not None:
                self.scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            what = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            raise WeightsError(f"{source}: its training state does not fit this run "
                               f"({type(error).__name__}: {what}); the file is damaged or was "
                               "edited, so it cannot be resumed") from None
        self.counters = counters
        if total_steps > counters.total_steps:
            if ends_with_the_run(self.config):
                finished = counters.step >= counters.total_steps
                continuation = continue_schedule(self.optimizer, self.config,
                                                 total_steps - counters.step,
                                                 self._rate_to_continue_from(),
                                                 rise=max(self._peak_step() - counters.step, 0))
                self._set_main(continuation)
                counters.continuation = continuation.plan
                if finished:
                    self.notes.append(self._extension_note(continuation.plan, source))
            counters.total_steps = total_steps

    def _extension_note(self, plan: dict[str, Any], source: str) -> str:
        """A finished run's schedule ended near zero, and its extension goes on from there
        (no jump, so a resumed run stays bitwise the run it was): said out loud, with the way
        to a fresh cycle, as the added steps will hardly move the weights."""
        lr = self.config.lr
        held = RunFolder.holding(source)
        run = held.path if held is not None else source
        return (f"extension: the {self.config.schedule} schedule ended with the run, so the "
                f"added steps train at lr {lr * plan['start_fraction']:.2g} falling to "
                f"{lr * plan['final_fraction']:.2g}; for a fresh cycle start a new run from "
                f"this one: reslab train --init-from {printable(run)} --lr X")

    def _peak_step(self) -> int:
        """The step at which the schedule in place reaches its peak rate."""
        main = self.warm_up.schedule if self.warm_up is not None else self.scheduler
        if isinstance(main, Continuation):  # extended before: its own rise, from its start
            return self.counters.step - main.last_epoch + main.plan["rise"]
        return peak_step(self.config, self.counters.total_steps, self.steps_per_epoch)

    def _rate_to_continue_from(self) -> float:
        """Where an extension starts, as a fraction of the peak rate: the rate of the next step
        of an unfinished run; the rate of the last step of a finished one (a schedule stepped
        past its end computes rates it never meant to use: one-cycle's go below zero)."""
        counters, group = self.counters, self.optimizer.param_groups[0]
        if counters.step >= counters.total_steps:
            return counters.lr / self.config.lr  # counters.lr: the run's rate, unscaled
        scheduled = self.warm_up.scheduled[0] if self.warm_up is not None else group["lr"]
        return scheduled / (self.config.lr * group.get("lr_scale", 1.0))

    def _set_main(self, schedule) -> None:
        """Put ``schedule`` in place of the main one (a warm-up gate stays around it)."""
        if self.warm_up is not None:
            self.warm_up.schedule = schedule
        else:
            self.scheduler = schedule


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor (momentum, Adam's moments) its parameter's memory
    layout. Checkpoints store them contiguous; torch's fused CPU optimizers pair elements by
    memory offset, so a contiguous buffer on a channels_last weight would update the wrong
    elements, silently (torch 2.13)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
