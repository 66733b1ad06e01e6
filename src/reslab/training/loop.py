"""The training loop: one step, one epoch, and ``fit``, which runs them over a data set and
tells the run's writer and progress display what happened.

``fit(model, data, config)`` trains a model you built; ``reslab.train`` (``run.py``) builds
one from a config, resumes a run, or starts from weights, and then calls ``fit``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab import memory
from reslab.data import AugmentConfig, BatchLoader, Dataset
from reslab.errors import ConfigError, Interrupted, TrainingError
from reslab.paths import printable
from reslab.runtime.checkpoint import load_checkpoint
from reslab.runtime.device import autocast, configure, resolve_device, resolve_precision
from reslab.runtime.evaluate import EvalResult, evaluate
from reslab.training import distributed
from reslab.training.config import TrainConfig, checked
from reslab.training.interrupt import StopRequest
from reslab.training.progress import Progress
from reslab.training.state import TrainState
from reslab.training.whitening import setup_whitening
from reslab.training.writer import RunWriter

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "reslab-checkpoint/1"
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
        raise _diverged("loss", loss_value, state.counters.step + 1, state)
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


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: EpochHook | None = None,
    on_step: StepHook | None = None,
    head: nn.Module | None = None,
    notes: list[str] = (),
) -> FitResult:
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
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    configure(config.threads, config.deterministic)
    world = distributed.setup(device)
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    torch.manual_seed(config.seed)
    train_loader, val_loader, test_loader = _loaders(data, config, device, world)
    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)

    full_side = input_shape(data, config)[1]
    if config.progressive_resize is not None and config.progressive_resize >= full_side:
        raise ConfigError(f"progressive_resize {config.progressive_resize} must be below the "
                          f"side the run trains at ({full_side})")
    memory.check_training(model, input_shape(data, config), config.batch_size,
                          f"training {config.model}")
    if config.whiten_stem:
        notes = [*notes, *setup_whitening(model, data, config.resize, resume)]
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    state = TrainState(model, config, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                       precision=precision, head=head)
    writer = RunWriter(run_dir or default_run_dir(config), active=world.is_main)
    progress = Progress(enabled=world.is_main and not config.quiet, epochs=epochs,
                        steps_per_epoch=steps_per_epoch)
    classes, meta = list(data.classes), run_metadata(model, config, data)
    title = f"{config.model} on {data.name}"
    finished = False
    try:
        with StopRequest() as stop:
            writer.open(config.to_dict(), resume=resume)
            if resume:
                _resume(state, writer, world, total_steps)
                writer.record(config.to_dict())  # an extended run's new length
            state.net = _wrap(model, config, world, device)
            for note in [*notes, *state.notes]:
                progress.line(note)
            progress.line(start_line(state, data, config, writer.path, epochs))

            def should_stop() -> bool:
                if world.enabled:  # every rank stops after the same step
                    return distributed.all_sum([float(stop.requested)], world)[0] > 0
                return stop.requested

            def checkpoint() -> None:
                _check_finite(state)
                writer.checkpoint(state, meta)

            for epoch in range(state.counters.epoch, epochs):
                train_loader.set_epoch(epoch)
                if config.progressive_resize:
                    train_loader.transform.resize = progressive_side(
                        config.progressive_resize, full_side, epoch, epochs)
                model.train()
                _freeze_statistics(model)
                if not train_epoch(state, train_loader, progress, should_stop=should_stop,
                                   checkpoint=checkpoint, world_size=world.world_size,
                                   on_step=on_step if world.is_main else None):
                    checkpoint()
                    progress.close()
                    raise Interrupted(_stopped_line(stop.name or "a signal", state, writer.path,
                                                    steps_per_epoch))
                # DDP syncs BN statistics from rank 0 before each forward, so after the last
                # step each rank holds its own: take rank 0's (the ones saved) everywhere
                distributed.broadcast_buffers([model, state.evaluated], world)
                val = evaluate(state.evaluated, val_loader, len(classes), device=device,
                               precision=precision, tta_flip=config.tta_flip,
                               tta_shift=config.tta_shift)
                row = _end_epoch(state, val, world)
                progress.end_epoch(row)
                if world.is_main:
                    _warn_non_finite_validation(row, state, progress)
                    _check_finite(state)
                    # without a validation split the latest model is the one reported (as D2L)
                    best = val.count == 0 or val.accuracy > state.counters.best_val_acc
                    if best:
                        state.counters.best_val_acc = val.accuracy if val.count else -1.0
                        state.counters.best_epoch = epoch + 1
                    writer.epoch_end(state, meta, best=best, title=title)
                    if on_epoch_end is not None:
                        _call_hook(on_epoch_end, row, state.evaluated)
                if state.counters.step >= total_steps:
                    break
            progress.close()
            if stop.requested:  # it came while the last epoch's files were written
                raise Interrupted(_end_line(stop.name, "after the last epoch, before the test",
                                            writer.path, "runs the test"))
            _check_replicas(model, world, "after training")
            result = FitResult(writer.path, state.counters.history, _best_val(state),
                               model=state.evaluated)
            if world.is_main:
                result.test = _test(state, writer, test_loader, classes, device, precision,
                                    config, stop)
            if stop.requested:  # it came while the results were written: they are complete
                raise Interrupted(f"stopped by {stop.name} as the run finished; its results "
                                  f"are complete in {writer.path}")
        finished = True
        return result
    finally:
        progress.close()
        writer.close()
        distributed.teardown(world, finished=finished)


def _loaders(data: Dataset, config: TrainConfig, device, world) -> tuple[BatchLoader, ...]:
    train_split = data.train
    if config.train_subset is not None:
        if config.train_subset > len(train_split):
            raise ConfigError(f"train_subset {config.train_subset} is more than the "
                              f"{len(train_split)} training images")
        train_split = train_split.subset(torch.arange(config.train_subset))
    if config.batch_size > len(train_split):
        raise ConfigError(f"batch_size {config.batch_size} is larger than the "
                          f"{len(train_split)} training images: lower --batch-size")
    augment = AugmentConfig(crop_padding=config.crop_padding, flip=config.flip,
                            alternate_flips=config.alternate_flips, erase_prob=config.erase)
    common = dict(mean=data.mean, std=data.std, resize=config.resize, device=device,
                  channels_last=config.channels_last)
    train_loader = BatchLoader(
        train_split, distributed.global_batch_to_local(config.batch_size, world), train=True,
        augment=augment, seed=config.seed, rank=world.rank, world_size=world.world_size, **common)
    eval_batch = max(config.batch_size, 256)
    return (train_loader, BatchLoader(data.val, eval_batch, train=False, **common),
            BatchLoader(data.test, eval_batch, train=False, **common))


def _resume(state: TrainState, writer: RunWriter, world, total_steps: int) -> None:
    last = writer.run.last
    checkpoint = load_checkpoint(last)
    if checkpoint.train_state is None:
        raise ConfigError(f"{last} holds weights only; it cannot be resumed")
    state.load(checkpoint.weights, checkpoint.train_state, str(last), total_steps)
    if not world.is_main:  # the checkpoint holds rank 0's partial epoch sums only
        state.counters.sums = [0.0, 0.0, 0.0]
    log.info("resumed %s at epoch %d, step %d", writer.path, state.counters.epoch,
             state.counters.step)
    writer.metrics(state)  # a crash after the checkpoint may have left the metrics behind


def _wrap(model: nn.Module, config: TrainConfig, world, device) -> nn.Module:
    """What the step calls: the model, in DDP across processes, compiled if asked."""
    net = model
    if world.enabled:
        net = nn.parallel.DistributedDataParallel(  # broadcasts rank 0's weights
            model, device_ids=[device.index] if device.type == "cuda" else None)
        _check_replicas(model, world, "at the start")
    return torch.compile(net) if config.compile else net


def _freeze_statistics(model: nn.Module) -> None:
    """Frozen parts (``finetune.freeze``) keep their BN statistics: they stay in eval mode."""
    for module in model.modules():
        if getattr(module, "reslab_frozen", False):
            module.eval()


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


def _test(state: TrainState, writer: RunWriter, loader, classes, device, precision,
          config: TrainConfig, stop: StopRequest) -> dict[str, Any]:
    """The test split, once, on the model validation chose. A signal during the evaluation
    stops it at once (training is saved; a resume runs the test); one during the writes of
    the results lets them finish."""
    evaluated = state.evaluated
    with stop.at_once(lambda name: _end_line(name, "during the test", writer.path,
                                             "runs the test")):
        evaluated.load_state_dict(load_checkpoint(writer.run.best).weights)
        test = evaluate(evaluated, loader, len(classes), device=device, precision=precision,
                        tta_flip=config.tta_flip, tta_shift=config.tta_shift)
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


def default_run_dir(config: TrainConfig) -> Path:
    if config.out:
        return Path(config.out).expanduser()
    return Path("runs") / f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}"


def run_metadata(model: nn.Module, config: TrainConfig, data: Dataset) -> dict[str, Any]:
    """What every checkpoint of the run says about its model and data."""
    spec = getattr(model, "spec", None)
    channels = data.image_shape[0]
    return {
        "format": CHECKPOINT_FORMAT,
        "model": config.model,
        "spec": spec.to_dict() if spec is not None else None,
        "num_classes": len(data.classes),
        "in_channels": channels,
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "input_size": list(input_shape(data, config)),
        "data": data.name,
        "data_identity": data.identity,
        "tta_flip": config.tta_flip,
        "tta_shift": config.tta_shift,
        "config": config.to_dict(),
    }


def start_line(state: TrainState, data: Dataset, config: TrainConfig, path: Path,
               epochs: int) -> str:
    from reslab.inspect import format_count, summary
    from reslab.tables import count

    model = state.model
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = input_shape(data, config)
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


def progressive_side(start: int, full: int, epoch: int, epochs: int) -> int:
    """The side epoch ``epoch`` (from 0) of ``epochs`` trains at: ``start`` first, growing
    linearly to ``full`` by half-way, in steps of 2 pixels (even sides keep the maps of
    stride-2 stages aligned)."""
    halfway = epochs / 2
    if epoch >= halfway:
        return full
    side = start + (full - start) * epoch / halfway
    return min(full, 2 * round(side / 2))


def input_shape(data: Dataset, config: TrainConfig) -> tuple[int, int, int]:
    """(C, H, W) of what the model sees: the data's images, resized if the run resizes."""
    channels, height, width = data.image_shape
    return (channels, config.resize, config.resize) if config.resize else (channels, height,
                                                                             width)


def _end_line(signal_name: str, when: str, path: Path, resume_does: str) -> str:
    """The line of a signal after training: the same form as ``_stopped_line``'s."""
    return (f"stopped by {signal_name} {when}; training is done and saved in {path}; continue "
            f"with: reslab train --resume {path} ({resume_does})")


def _stopped_line(signal_name: str, state: TrainState, path: Path, steps: int) -> str:
    c = state.counters
    return (f"stopped by {signal_name} at epoch {c.epoch + 1}, step {c.step} (batch "
            f"{c.batch}/{steps} of the epoch), saved in {path}; continue with: "
            f"reslab train --resume {path}")


def _check_replicas(model: nn.Module, world: distributed.Dist, when: str) -> None:
    if not world.enabled:
        return
    if not distributed.replicas_agree(model, world):
        raise TrainingError(f"the {world.world_size} processes hold different weights {when}")
    if world.is_main:
        log.info("weights identical on all %d ranks %s", world.world_size, when)


def _what_to_try(state: TrainState) -> str:
    """What makes a run that overflowed finite: half its peak learning rate, and under bf16
    or fp16 also full precision."""
    tries = [f"--lr {state.config.lr / 2:g} (now {state.config.lr:g})"]
    if state.precision in ("bf16", "fp16"):
        tries.append(f"--precision fp32 (now {state.precision})")
    return "try " + " or ".join(tries)


def _diverged(what: str, value: float, step: int, state: TrainState) -> TrainingError:
    return TrainingError(
        f"the {what} became {value} at step {step} (epoch {state.counters.epoch + 1}): "
        f"training diverged; {_what_to_try(state)}. The last good checkpoint is kept"
    )


def _warn_non_finite_validation(row: dict[str, Any], state: TrainState,
                                progress: Progress) -> None:
    """A validation loss or accuracy that is not a number is said at its epoch (the training
    loss, checked at every step, is finite); metrics.jsonl records it as null."""
    bad = [f"{name.replace('_', ' ')} {row[key]}" for key, name in
           (("val_loss", "validation_loss"), ("val_acc", "validation_accuracy"))
           if row[key] is not None and not math.isfinite(row[key])]
    if bad:
        progress.warn(f"warning: epoch {row['epoch']}: {' and '.join(bad)} (training loss "
                      f"{row['train_loss']:.4f}): the model overflows on the validation "
                      f"images; {_what_to_try(state)}")


def _check_finite(state: TrainState) -> None:
    """Refuse to checkpoint weights an optimizer step has made non-finite: the loss only
    shows it one step later, and the checkpoint on disk must stay the last good one."""
    for tensor in state.model.state_dict().values():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = tensor[~torch.isfinite(tensor)][0].item()
            raise _diverged("weights", bad, state.counters.step, state)
