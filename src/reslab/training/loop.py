"""The training loop: one step, one epoch, and ``fit``, which runs them over a data set and
tells the run's writer and progress display what happened.

``fit(model, data, config)`` trains a model you built; ``reslab.train`` (``run.py``) builds
one from a config, resumes a run, or starts from weights, and then calls ``fit``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.data import BatchLoader, Dataset
from reslab.errors import Interrupted
from reslab.paths import printable
from reslab.runtime.checkpoint import load_checkpoint
from reslab.runtime.checkpoint_meta import run_metadata
from reslab.runtime.device import autocast
from reslab.runtime.evaluate import EvalResult, evaluate
from reslab.training import distributed
from reslab.training.banner import end_line, stopped_line
from reslab.training.config import TrainConfig, checked
from reslab.training.divergence import check_finite, diverged, warn_non_finite_validation
from reslab.training.interrupt import StopRequest
from reslab.training.progress import Progress
from reslab.training.setup import Setup, set_up
from reslab.training.state import TrainState
from reslab.training.writer import RunWriter

EpochHook = Callable[[dict[str, Any], nn.Module], None]
# (state, the step's mean loss, images it classified right, images in it)
StepHook = Callable[[TrainState, float, int, int], None]


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float | None  # None without a validation split
    test: dict[str, Any] = field(default_factory=dict)  # accuracy, loss, per_class
    model: nn.Module | None = None  # the selected (best on validation) model

    def __repr__(self) -> str:  # a notebook shows this: two lines, the rest as attributes
        test = self.test
        tested = (f"test accuracy {test['accuracy']:.4f} on {test['images']:,} images"
                  if "accuracy" in test else "not tested")
        val = f", val {self.best_val_acc:.4f}" if self.best_val_acc is not None else ""
        chosen = f" (model of epoch {test['best_epoch']}{val})" if "best_epoch" in test else ""
        return (f"FitResult: {tested}{chosen}, {len(self.history)} epoch(s)\n"
                f"  run_dir {printable(self.run_dir)}; .test, .history, .model")


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """One optimizer step on a batch: (its mean loss, how many it classified right)."""
    with autocast(state.device, state.precision):
        logits = state.net(x)
        loss = state.criterion(logits, y)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise diverged("loss", loss_value, state.counters.step + 1, state)
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
    else:
        loss.backward()
    if state.config.grad_clip is not None:
        nn.utils.clip_grad_norm_(state.net.parameters(), state.config.grad_clip)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    correct = int((logits.argmax(dim=1) == y).sum())
    counters = state.counters
    counters.step += 1
    counters.batch += 1
    counters.sums = [counters.sums[0] + loss_value * len(y), counters.sums[1] + correct,
                     counters.sums[2] + len(y)]
    if state.warm_up is not None:
        state.warm_up.observe(1 - correct / len(y), counters.step)
    state.after_step()
    return loss_value, correct


def train_epoch(state: TrainState, loader: BatchLoader, progress: Progress, *,
                should_stop: Callable[[], bool], checkpoint: Callable[[], None],
                world_size: int = 1, on_step: StepHook | None = None) -> bool:
    """Steps from where the epoch stands to its end (or the run's last step); False if a stop
    was requested, after the step it came during. ``on_step`` sees each step's outcome."""
    counters = state.counters
    started, seconds_before = time.perf_counter(), counters.seconds
    progress.start_epoch(counters.epoch, counters.batch)
    for x, y in loader.iter_from(counters.batch):
        loss_value, correct = train_step(state, x, y)
        counters.seconds = seconds_before + time.perf_counter() - started
        if on_step is not None:
            hook_started = time.perf_counter()
            on_step(state, loss_value, correct, len(y))
            started += time.perf_counter() - hook_started  # a hook's time is not training time
        loss, correct, seen = counters.sums
        progress.update(counters.batch, loss / seen, correct / seen,
                        seen / counters.seconds * world_size)
        every = state.config.checkpoint_every
        if every and counters.step % every == 0:
            checkpoint()
        if should_stop():
            return False
        if counters.step >= counters.total_steps:
            break
    return True


def fit(model: nn.Module, data: Dataset, config: TrainConfig, *, run_dir: str | Path | None = None,
        resume: bool = False, on_epoch_end: EpochHook | None = None,
        on_step: StepHook | None = None, head: nn.Module | None = None,
        notes: list[str] = ()) -> FitResult:
    """Train ``model`` on ``data`` as ``config`` says, writing the run directory.

    ``on_epoch_end(row, model)``, if given, is called on the main process after each epoch's
    files are written, with the epoch's metrics row and the model validation saw (in eval mode;
    leave it unchanged). Benchmarks use it to follow test accuracy; selection never does.
    ``on_step(state, loss, correct, images)``, if given, is called on the main process after
    each optimizer step (``state.counters.step`` is the step's number), with the model in
    training mode; a hook that evaluates must restore that (``evaluate`` does). Experiments
    log per-iteration curves with it; its time is left out of the run's training time.
    ``head``: the classifier, for ``backbone_lr_scale``. ``notes``: lines for the start of the
    progress output (what was loaded or adapted).
    """
    config = checked(config)
    run = set_up(model, data, config, run_dir=run_dir, resume=resume, head=head, notes=notes)
    state, writer, progress, world = run.state, run.writer, run.progress, run.world
    meta, finished = run_metadata(run.model, config, data, data.input_shape(config.resize)), False
    try:
        with StopRequest() as stop:
            run.start(resume)
            should_stop = functools.partial(_stop_everywhere, stop, world)
            checkpoint = functools.partial(_checkpoint, state, writer, meta)
            for epoch in range(state.counters.epoch, run.epochs):
                run.start_epoch(epoch)
                if not train_epoch(state, run.train_loader, progress, should_stop=should_stop,
                                   checkpoint=checkpoint, world_size=world.world_size,
                                   on_step=on_step if world.is_main else None):
                    checkpoint()
                    progress.close()
                    raise Interrupted(stopped_line(stop.name or "a signal", state, writer.path))
                _end_of_epoch(run, epoch, meta, on_epoch_end)
                if state.counters.step >= run.total_steps:
                    break
            progress.close()
            if stop.requested:  # it came while the last epoch's files were written
                raise Interrupted(end_line(stop.name, "after the last epoch, before the test",
                                           writer.path, "runs the test"))
            distributed.check_replicas(run.model, world, "after training")
            result = FitResult(writer.path, state.counters.history, _best_val(state),
                               model=state.evaluated)
            if world.is_main:
                result.test = _test(run, stop)
            if stop.requested:  # it came while the results were written: they are complete
                raise Interrupted(f"stopped by {stop.name} as the run finished; its results "
                                  f"are complete in {writer.path}")
        finished = True
        return result
    finally:
        progress.close()
        writer.close()
        distributed.teardown(world, finished=finished)


def _stop_everywhere(stop: StopRequest, world: distributed.Dist) -> bool:
    """Whether a stop was requested; across processes, every rank stops after the same step."""
    if world.enabled:
        return distributed.all_sum([float(stop.requested)], world)[0] > 0
    return stop.requested


def _checkpoint(state: TrainState, writer: RunWriter, meta: dict[str, Any]) -> None:
    check_finite(state)
    writer.checkpoint(state, meta)


def _end_of_epoch(run: Setup, epoch: int, meta: dict[str, Any],
                  on_epoch_end: EpochHook | None) -> None:
    """Validate the epoch's model and show its row; the main process then writes the epoch's
    files (the best model so far among them) and calls the hook."""
    state, world, config = run.state, run.world, run.config
    # DDP syncs BN statistics from rank 0 before each forward, so after the last
    # step each rank holds its own: take rank 0's (the ones saved) everywhere
    distributed.broadcast_buffers([run.model, state.evaluated], world)
    val = evaluate(state.evaluated, run.val_loader, len(run.classes), device=run.device,
                   precision=run.precision, tta_flip=config.tta_flip,
                   tta_shift=config.tta_shift)
    row = _end_epoch(state, val, world)
    run.progress.end_epoch(row)
    if not world.is_main:
        return
    warn_non_finite_validation(row, state, run.progress)
    check_finite(state)
    # without a validation split the latest model is the one reported (as D2L)
    best = val.count == 0 or val.accuracy > state.counters.best_val_acc
    if best:
        state.counters.best_val_acc = val.accuracy if val.count else -1.0
        state.counters.best_epoch = epoch + 1
    run.writer.epoch_end(state, meta, best=best, title=f"{config.model} on {run.data.name}")
    if on_epoch_end is not None:
        _call_hook(on_epoch_end, row, state.evaluated)


def _end_epoch(state: TrainState, val: EvalResult, world) -> dict[str, Any]:
    counters = state.counters
    seconds = counters.seconds
    # every rank trained on its own shard: the epoch's figures are over all of them
    loss_sum, correct, n = distributed.all_sum(counters.sums, world)
    row = {
        "epoch": counters.epoch + 1,
        "step": counters.step,
        "train_images": int(n),
        "train_loss": loss_sum / max(n, 1),
        "train_acc": correct / max(n, 1),
        "val_loss": val.loss if val.count else None,  # None: no validation split
        "val_acc": val.accuracy if val.count else None,
        "lr": counters.lr,
        "images_per_s": n / max(seconds, 1e-9),
        "seconds": seconds,
    }
    counters.history.append(row)
    counters.epoch, counters.batch, counters.sums = counters.epoch + 1, 0, [0.0, 0.0, 0.0]
    counters.seconds = 0.0
    return row


def _call_hook(hook: EpochHook, row: dict[str, Any], model: nn.Module) -> None:
    training = model.training
    with torch.no_grad():
        hook(row, model.eval())
    model.train(training)


def _test(run: Setup, stop: StopRequest) -> dict[str, Any]:
    """The test split, once, on the model validation chose. A signal during the evaluation
    stops it at once (training is saved; a resume runs the test); one during the writes of
    the results lets them finish."""
    state, writer, config, classes = run.state, run.writer, run.config, run.classes
    evaluated = state.evaluated
    with stop.at_once(lambda name: end_line(name, "during the test", writer.path,
                                            "runs the test")):
        evaluated.load_state_dict(load_checkpoint(writer.run.best).weights)
        test = evaluate(evaluated, run.test_loader, len(classes), device=run.device,
                        precision=run.precision, tta_flip=config.tta_flip,
                        tta_shift=config.tta_shift)
    counters = state.counters
    results = {
        "accuracy": test.accuracy, "loss": test.loss, "images": test.count,
        "best_epoch": counters.best_epoch, "best_val_acc": _best_val(state),
        "per_class": test.per_class(classes), "confusion": test.confusion.tolist(),
        "epochs": counters.epoch, "steps": counters.step,
        "train_seconds": sum(r["seconds"] for r in counters.history),
    }
    writer.finish(results, test.confusion, classes,
                  f"{config.model}: test accuracy {test.accuracy:.4f}")
    return results


def _best_val(state: TrainState) -> float | None:
    return state.counters.best_val_acc if state.counters.best_val_acc >= 0 else None


