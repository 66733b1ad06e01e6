"""The optimizer and the learning-rate schedule of a run, from its config.

Schedules are torch's (``torch.optim.lr_scheduler``), stepped once per optimizer step. Two
pieces are reslab's own, each a scheduler with the usual ``step``/``state_dict`` interface:
``ErrorGatedWarmup`` (He et al.'s low rate until the training error is low enough) and
``Continuation`` (what the rate does over epochs added to a run on ``--resume``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from reslab.errors import ConfigError
from reslab.training.config import TrainConfig

log = logging.getLogger(__name__)

# where one-cycle ends, as a fraction of its peak (torch's default div factors: 25 and 1e4)
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4


def make_optimizer(model: nn.Module, config: TrainConfig,
                   head: nn.Module | None = None) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters. BN weights and biases are not decayed by
    default (decay would only fight the scale BN sets). With ``head`` given and a
    ``backbone_lr_scale`` below 1, every other parameter learns at that fraction of the rate;
    batch-norm biases learn at ``norm_bias_lr_scale`` times their part's rate, and
    ``freeze_norm_scales`` leaves BN weights at their initial values. Each group's
    ``lr_scale`` records its multiple of the run's rate."""
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    norm_biases = {id(m.bias) for m in norms if m.bias is not None}
    if config.freeze_norm_scales:
        if any(m.weight is not None and not m.weight.any() for m in norms):
            raise ConfigError("freeze_norm_scales would keep the zero-initialised batch norms "
                              "at zero, and their residual branches dead: build the model "
                              "without zero_init_residual, or drop --freeze-norm-scales")
        for m in norms:
            if m.weight is not None:
                m.weight.requires_grad_(False)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:  # frozen: no step, no decay
            continue
        decay = p.ndim > 1 or config.decay_bn_and_bias
        scale = 1.0 if id(p) in head_ids or head is None else config.backbone_lr_scale
        if id(p) in norm_biases:
            scale *= config.norm_bias_lr_scale
        groups.setdefault((decay, scale), []).append(p)
    param_groups = [{"params": params, "lr": config.lr * scale, "lr_scale": scale,
                     "weight_decay": config.weight_decay if decay else 0.0}
                    for (decay, scale), params in groups.items()]
    # one fused kernel per step instead of several passes per parameter tensor: on CPU the
    # update of d2l_resnet18's 11 M weights takes 5 ms, not 32 (SGD with Nesterov momentum)
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=config.lr, fused=fused)
    return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, fused=fused)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int, steps_per_epoch: int):
    """The run's per-step schedule over ``total_steps``, with the warm-up gate if asked."""
    schedule = _main_schedule(optimizer, config, total_steps, steps_per_epoch)
    if config.warmup_lr is not None:
        return ErrorGatedWarmup(schedule, config.warmup_lr, config.warmup_until_error)
    return schedule


def _rise(config: TrainConfig, total_steps: int, steps_per_epoch: int) -> int:
    """Steps of linear warm-up, or of one-cycle's rising phase."""
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    if config.schedule == "onecycle" and total_steps >= 4:  # both phases need 2+ steps
        return min(max(warmup, 2), total_steps - 2)
    return max(warmup, 0)


def peak_step(config: TrainConfig, total_steps: int, steps_per_epoch: int) -> int:
    """The step (from 0) that takes the peak rate: one-cycle's rise ends on it, a warm-up
    ramp just before it."""
    rise = _rise(config, total_steps, steps_per_epoch)
    return rise - 1 if config.schedule == "onecycle" and total_steps >= 4 else rise


def _main_schedule(optimizer, config: TrainConfig, total_steps: int, steps_per_epoch: int):
    rise = _rise(config, total_steps, steps_per_epoch)
    if config.schedule == "onecycle" and total_steps >= 4:
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=[config.lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups],
            total_steps=total_steps, pct_start=rise / total_steps, anneal_strategy="linear",
            div_factor=ONECYCLE_DIV, final_div_factor=_final_div(config),
            cycle_momentum=config.optimizer == "sgd" and config.momentum > 0,
            base_momentum=min(0.85, config.momentum), max_momentum=config.momentum,
        )
    if config.schedule in ("constant", "onecycle"):  # a one-cycle of under 4 steps: constant
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif config.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - rise, 1))
    else:
        main = lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    if rise == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / rise, total_iters=rise)
    if config.schedule == "cosine":
        return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[rise])
    return lr_scheduler.ChainedScheduler([ramp, main], optimizer)  # milestones stay absolute


def _final_div(config: TrainConfig) -> float:
    """OneCycleLR's final_div_factor: its end rate is the start rate (lr / 25) over it."""
    if config.end_lr_fraction is None:
        return ONECYCLE_FINAL_DIV
    return 1 / (ONECYCLE_DIV * config.end_lr_fraction)


def final_lr_fraction(config: TrainConfig) -> float:
    """Where a schedule that ends with the run leaves the rate, as a fraction of ``lr``."""
    if config.schedule == "onecycle":
        return 1 / (ONECYCLE_DIV * _final_div(config))
    return 0.0  # cosine anneals to 0


class ErrorGatedWarmup:
    """He et al. 2015 (ResNet-110): train at ``warmup_lr`` until a running average of the
    training error falls below ``until_error``, then follow ``schedule``, which keeps
    counting steps underneath (so its milestones stay where they were planned)."""

    def __init__(self, schedule, warmup_lr: float, until_error: float):
        self.schedule, self.warmup_lr, self.until_error = schedule, warmup_lr, until_error
        self.optimizer = schedule.optimizer
        self.warming_up, self.error_ema = True, 1.0
        self.scheduled = [g["lr"] for g in self.optimizer.param_groups]
        self._apply()

    def observe(self, error: float, step: int) -> None:
        """The training error of the step just taken (called before ``step()``)."""
        if not self.warming_up:
            return
        self.error_ema = 0.9 * self.error_ema + 0.1 * error
        if self.error_ema < self.until_error:
            self.warming_up = False
            log.info("warm-up over at step %d: training error below %.0f%%", step,
                     100 * self.until_error)

    def step(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.scheduled, strict=True):
            group["lr"] = lr  # the schedule computes from its own rates, not the warm-up's
        self.schedule.step()
        self.scheduled = [g["lr"] for g in self.optimizer.param_groups]
        self._apply()

    def _apply(self) -> None:
        if self.warming_up:
            for group in self.optimizer.param_groups:
                group["lr"] = self.warmup_lr * group.get("lr_scale", 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "warming_up": self.warming_up,
                "error_ema": self.error_ema, "scheduled": self.scheduled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.warming_up, self.error_ema = bool(state["warming_up"]), float(state["error_ema"])
        self.scheduled = [float(lr) for lr in state["scheduled"]]
        for group, lr in zip(self.optimizer.param_groups, self.scheduled, strict=True):
            group["lr"] = lr
        self._apply()


class Continuation(lr_scheduler.LambdaLR):
    """The rate over the rest of a run whose schedule ends with it (one-cycle, cosine), once
    more steps were added: from the rate the run has where it was extended
    (``start_fraction`` of ``peak_lr``), still rising for ``rise`` steps if it was rising (to
    the peak, where the plan had it), then down to the schedule's own final rate at the last
    of ``steps`` steps, along the schedule's shape (linear for one-cycle, half a cosine for
    cosine). No jump: the first added step takes the rate the run stopped at. Built again
    from ``plan`` when such a run is resumed."""

    def __init__(self, optimizer, peak_lr: float, *, steps: int, start_fraction: float,
                 final_fraction: float, shape: str, rise: int = 0):
        self.plan = dict(steps=steps, start_fraction=start_fraction,
                         final_fraction=final_fraction, shape=shape, rise=rise)
        top = 1.0 if rise else start_fraction

        def fraction(k: int) -> float:  # k: steps taken since the extension
            if k < rise:
                return start_fraction + (1.0 - start_fraction) * k / rise
            t = min((k - rise) / max(steps - rise - 1, 1), 1.0)  # the last step: the final rate
            along = t if shape == "linear" else (1 - math.cos(math.pi * t)) / 2
            return top + (final_fraction - top) * along

        for group in optimizer.param_groups:
            group["initial_lr"] = peak_lr * group.get("lr_scale", 1.0)
        super().__init__(optimizer, fraction)


def continue_schedule(optimizer, config: TrainConfig, steps: int, start_fraction: float,
                      rise: int = 0) -> Continuation:
    """Plan the ``steps`` left of an extended one-cycle or cosine run, from ``start_fraction``
    of the peak rate (held within [the schedule's final fraction, 1]), rising for ``rise``."""
    final = final_lr_fraction(config)
    return Continuation(optimizer, config.lr, steps=steps,
                        start_fraction=min(max(start_fraction, final), 1.0),
                        final_fraction=final, rise=min(rise, max(steps - 2, 0)),
                        shape="linear" if config.schedule == "onecycle" else "cosine")


def ends_with_the_run(config: TrainConfig) -> bool:
    """Whether the schedule is planned over the run's length (so extending re-plans it)."""
    return config.schedule in ("onecycle", "cosine")
