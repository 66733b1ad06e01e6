"""The training loop, in one place: data, model, optimiser, schedule, checkpoints, resume.

``train(config)`` builds everything from a TrainConfig; ``fit(model, data, config)`` trains a
model you built. Both write a run directory (see ``rundir``) and return a ``FitResult``.
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
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from reslab.data import AugmentConfig, BatchLoader, Dataset, load_dataset
from reslab.errors import ConfigError, TrainingError
from reslab.models import create_model
from reslab.training import distributed
from reslab.training.checkpoint import load_checkpoint, save_checkpoint
from reslab.training.config import TrainConfig, preset
from reslab.training.evaluate import EvalResult, autocast, evaluate
from reslab.training.progress import Progress
from reslab.training.rundir import RunDir, plot_confusion, plot_curves

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "reslab-checkpoint/1"


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float | None  # None without a validation split
    test: dict[str, Any] = field(default_factory=dict)  # accuracy, loss, per_class
    model: nn.Module | None = None  # the selected (best on validation) model


EpochHook = Callable[[dict[str, Any], nn.Module], None]


@dataclass
class _State:
    """Counters that a resumed run restores, with everything else in the checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimizer steps in all
    best_val_acc: float = -1.0
    best_epoch: int = 0
    warming_up: bool = False  # He et al.'s low-lr warm-up, until training error is low enough
    train_error_ema: float = 1.0
    lr: float = 0.0  # the learning rate of the last step taken
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss, correct, images
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    config: TrainConfig | None = None,
    *,
    preset_name: str | None = None,
    resume: str | Path | None = None,
    on_epoch_end: EpochHook | None = None,
    **overrides: Any,
) -> FitResult:
    """Train a zoo model on a data set: ``reslab.train(preset_name="d2l", epochs=2)``.

    ``resume``: a run directory to continue from its last checkpoint, with its own config.
    ``on_epoch_end(row, model)``: called after each epoch (see ``fit``).
    """
    if resume is not None:
        run = RunDir(resume)
        if not run.last.exists():
            raise ConfigError(f"nothing to resume in {run.path}: it has no {run.last.name}")
        saved = load_checkpoint(run.last).metadata["config"]
        config = TrainConfig(**(saved | {"milestones": tuple(saved["milestones"])})).replace(
            **overrides)
    elif config is None:
        config = preset(preset_name or "fast", **overrides)
    elif overrides:
        config = config.replace(**overrides)
    data = load_dataset(config.data, config.data_dir, val_size=config.val_size, seed=config.seed,
                        image_size=config.image_size, channels=config.channels)
    torch.manual_seed(config.seed)  # the initial weights follow the seed (torch's own is random)
    model = create_model(config.model, num_classes=len(data.classes),
                         in_channels=data.image_shape[0])
    if config.init == "xavier":
        log.info("init: Xavier-uniform conv and linear weights (D2L's train_ch6)")
        xavier_init(model)
    return fit(model, data, config, run_dir=resume, resume=resume is not None,
               on_epoch_end=on_epoch_end)


def xavier_init(model: nn.Module) -> None:
    """D2L's ``init_weights``: Xavier-uniform weights of every Linear and Conv2d."""
    torch.manual_seed(0)  # the init is part of the recipe, so make it the same every run
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: EpochHook | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` as ``config`` says, writing the run directory.

    ``on_epoch_end(row, model)``, if given, is called on the main process after each epoch's
    files are written, with the epoch's metrics row and the model validation saw (in eval mode;
    leave it unchanged). Benchmarks use it to follow test accuracy; selection never does.
    """
    config.validate()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    world = distributed.setup(device)
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    torch.manual_seed(config.seed)

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
                            erase_prob=config.erase)
    common = dict(mean=data.mean, std=data.std, resize=config.resize, device=device,
                  channels_last=config.channels_last)
    train_loader = BatchLoader(
        train_split, distributed.global_batch_to_local(config.batch_size, world), train=True,
        augment=augment, seed=config.seed, rank=world.rank, world_size=world.world_size, **common)
    eval_batch = max(config.batch_size, 256)
    val_loader = BatchLoader(data.val, eval_batch, train=False, **common)
    test_loader = BatchLoader(data.test, eval_batch, train=False, **common)

    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)

    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps, steps_per_epoch)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                         use_buffers=True) if config.ema_decay else None)
    state = _State(warming_up=config.warmup_lr is not None)

    run = RunDir(run_dir or default_run_dir(config))
    if world.is_main:
        run.lock()
    finished = False
    try:
        if resume:
            _restore(run, model, optimizer, scheduler, ema, state)
            if not world.is_main:  # the checkpoint holds rank 0's partial epoch sums only
                state.sums = [0.0, 0.0, 0.0]
            log.info("resumed %s at epoch %d, step %d", run.path, state.epoch, state.step)
            if world.is_main:  # a crash after the checkpoint may have left the metrics behind
                _write(run.metrics, lambda: run.write_metrics(state.history))
        elif world.is_main:
            if run.last.exists():
                raise ConfigError(f"{run.path} already holds a run: resume it with --resume "
                                  f"{run.path}, or choose another --out")
            run.write_config(config.to_dict())

        net: nn.Module = model
        if world.enabled:
            net = nn.parallel.DistributedDataParallel(  # broadcasts rank 0's weights
                model, device_ids=[device.index] if device.type == "cuda" else None)
            _check_replicas(model, world, "at the start")
        if config.compile:
            net = torch.compile(net)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        classes = list(data.classes)
        meta = _model_metadata(model, config, data)

        def checkpoint_last(weights_checked: bool = False) -> None:
            if world.is_main:
                if not weights_checked:
                    _check_finite(model, state, config)
                _write(run.last, lambda: save_checkpoint(
                    run.last, model.state_dict(), meta | _progress_meta(state, config),
                    _train_state(optimizer, scheduler, ema, state)))

        evaluated = ema.module if ema is not None else model  # what validation sees
        progress = Progress(enabled=world.is_main and not config.quiet, epochs=epochs,
                            steps_per_epoch=steps_per_epoch)
        for epoch in range(state.epoch, epochs):
            train_loader.set_epoch(epoch)
            model.train()
            started = time.perf_counter()
            seen_at_start = state.sums[2]
            progress.start_epoch(epoch, state.batch)
            for x, y in train_loader.iter_from(state.batch):
                loss, correct = _step(net, x, y, criterion, optimizer, scheduler, scaler,
                                      config, state, device, precision)
                if ema is not None:
                    ema.update_parameters(model)
                state.batch += 1
                state.step += 1
                n = len(y)
                state.sums[0] += loss * n
                state.sums[1] += correct
                state.sums[2] += n
                rate = (state.sums[2] - seen_at_start) / (time.perf_counter() - started)
                progress.update(state.batch, loss, correct / n, rate * world.world_size)
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    checkpoint_last()
                if state.step >= total_steps:
                    break
            # DDP syncs BN statistics from rank 0 before each forward, so after the last step
            # each rank holds its own: take rank 0's (the ones saved) everywhere
            distributed.broadcast_buffers([model, evaluated], world)
            elapsed = time.perf_counter() - started
            val = evaluate(evaluated, val_loader, len(classes), device=device,
                           precision=precision, tta_flip=config.tta_flip)
            # every rank trained on its own shard: the epoch's figures are over all of them
            sums = distributed.all_sum(state.sums, world)
            row = _epoch_row(epoch, state, sums, val, elapsed)
            state.history.append(row)
            state.epoch, state.batch, state.sums = epoch + 1, 0, [0.0, 0.0, 0.0]
            progress.end_epoch(row)
            if world.is_main:
                _check_finite(model, state, config)
                # without a validation split the latest model is the one reported (as D2L does)
                if val.count == 0 or val.accuracy > state.best_val_acc:
                    state.best_val_acc = val.accuracy if val.count else -1.0
                    state.best_epoch = epoch + 1
                    _write(run.best, lambda: save_checkpoint(
                        run.best, evaluated.state_dict(), meta | _progress_meta(state, config)))
                checkpoint_last(weights_checked=True)  # checked above, before the best one
                _write(run.metrics, lambda: run.write_metrics(state.history))
                _write(run.curves, lambda: plot_curves(state.history, run.curves,
                                                       f"{config.model} on {data.name}"))
                _log_tensorboard(run, row)
                if on_epoch_end is not None:
                    training = evaluated.training
                    with torch.no_grad():
                        on_epoch_end(row, evaluated.eval())
                    evaluated.train(training)
            if state.step >= total_steps:
                break
        progress.close()
        _check_replicas(model, world, "after training")

        best_val = state.best_val_acc if state.best_val_acc >= 0 else None
        result = FitResult(run.path, state.history, best_val, model=evaluated)
        if world.is_main:
            best = load_checkpoint(run.best)
            evaluated.load_state_dict(best.weights)
            test = evaluate(evaluated, test_loader, len(classes), device=device,
                            precision=precision, tta_flip=config.tta_flip)
            result.test = {
                "accuracy": test.accuracy, "loss": test.loss, "images": test.count,
                "best_epoch": state.best_epoch, "best_val_acc": best_val,
                "per_class": test.per_class(classes), "confusion": test.confusion.tolist(),
                "epochs": state.epoch, "steps": state.step,
                "train_seconds": sum(r["seconds"] for r in state.history),
            }
            _write(run.results, lambda: run.write_results(result.test))
            _write(run.confusion, lambda: plot_confusion(
                test.confusion, classes, run.confusion,
                f"{config.model}: test accuracy {test.accuracy:.4f}"))
            log.info("test accuracy %.4f (model of epoch %d)", test.accuracy, state.best_epoch)
        finished = True
        return result
    finally:
        run.unlock()
        distributed.teardown(world, finished=finished)


def _step(net, x, y, criterion, optimizer, scheduler, scaler, config, state, device, precision):
    with autocast(device, precision):
        logits = net(x)
        loss = criterion(logits, y)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise _diverged("loss", loss_value, state.step + 1, state, config)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    scheduled = [group["lr"] for group in optimizer.param_groups]
    state.lr = config.warmup_lr if state.warming_up else scheduled[0]
    if state.warming_up:
        for group in optimizer.param_groups:
            group["lr"] = config.warmup_lr
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
        group["lr"] = lr
    scheduler.step()
    correct = int((logits.argmax(dim=1) == y).sum())
    if state.warming_up:
        state.train_error_ema = 0.9 * state.train_error_ema + 0.1 * (1 - correct / len(y))
        if state.train_error_ema < config.warmup_until_error:
            state.warming_up = False
            log.info("warm-up over at step %d: training error below %.0f%%", state.step + 1,
                     100 * config.warmup_until_error)
    return loss_value, correct


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # BN weights and biases are not decayed by default: decay would only fight the scale BN sets
    decay = [p for p in model.parameters() if p.ndim > 1 or config.decay_bn_and_bias]
    no_decay = [p for p in model.parameters() if not (p.ndim > 1 or config.decay_bn_and_bias)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    # one fused kernel per step instead of several passes per parameter tensor: on CPU the
    # update of d2l_resnet18's 11 M weights takes 5 ms, not 32 (SGD with Nesterov momentum)
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, fused=fused)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, fused=fused)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int, steps_per_epoch: int):
    """A per-step schedule from torch.optim.lr_scheduler."""
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    if config.schedule == "onecycle" and total_steps >= 4:  # both phases need 2+ steps
        rise = min(max(warmup, 2), total_steps - 2)
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps,
            pct_start=rise / total_steps, anneal_strategy="linear",
            cycle_momentum=config.optimizer == "sgd" and config.momentum > 0,
            base_momentum=min(0.85, config.momentum), max_momentum=config.momentum,
        )
    if config.schedule in ("constant", "onecycle"):  # a one-cycle of under 4 steps: constant
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif config.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup, 1))
    else:
        main = lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup)
    if config.schedule == "cosine":
        return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return lr_scheduler.ChainedScheduler([ramp, main], optimizer)  # milestones stay absolute


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but no CUDA GPU is available: use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """bf16 only where it is fast: CUDA with bf16, or a CPU whose oneDNN has bf16 kernels
    (AVX512-BF16/AMX). Elsewhere bf16 convolutions fall back to slow reference code."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return precision


def default_run_dir(config: TrainConfig) -> Path:
    if config.out:
        return Path(config.out)
    return Path("runs") / f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}"


def _model_metadata(model: nn.Module, config: TrainConfig, data: Dataset) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    channels, height, width = data.image_shape
    if config.resize:
        height = width = config.resize
    return {
        "format": CHECKPOINT_FORMAT,
        "model": config.model,
        "spec": spec.to_dict() if spec is not None else None,
        "num_classes": len(data.classes),
        "in_channels": channels,
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "input_size": [channels, height, width],
        "data": data.name,
        "tta_flip": config.tta_flip,
        "config": config.to_dict(),
    }


def _progress_meta(state: _State, config: TrainConfig) -> dict[str, Any]:
    return {"epoch": state.epoch, "step": state.step,
            "metrics": state.history[-1] if state.history else {}}


def _train_state(optimizer, scheduler, ema, state: _State) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng": torch.get_rng_state(),
        "state": {k: v for k, v in vars(state).items()},
    }


def _restore(run: RunDir, model, optimizer, scheduler, ema, state: _State) -> None:
    checkpoint = load_checkpoint(run.last)
    saved = checkpoint.train_state
    if saved is None:
        raise ConfigError(f"{run.last} holds weights only; it cannot be resumed")
    model.load_state_dict(checkpoint.weights)
    optimizer.load_state_dict(saved["optimizer"])
    _match_parameter_layouts(optimizer)
    scheduler.load_state_dict(saved["scheduler"])
    if ema is not None and saved["ema"] is not None:
        ema.load_state_dict(saved["ema"])
    torch.set_rng_state(saved["rng"])
    for key, value in saved["state"].items():
        setattr(state, key, value)


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor (momentum, Adam's moments) its parameter's memory
    layout. Checkpoints store them contiguous; torch's fused CPU optimizers pair elements by
    memory offset, so a contiguous buffer on a channels_last weight would update the wrong
    elements, silently (torch 2.13)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _epoch_row(epoch, state: _State, sums: list[float], val: EvalResult, seconds) -> dict:
    loss_sum, correct, n = sums
    return {
        "epoch": epoch + 1,
        "step": state.step,
        "train_images": int(n),
        "train_loss": loss_sum / max(n, 1),
        "train_acc": correct / max(n, 1),
        "val_loss": val.loss if val.count else None,  # None: no validation split
        "val_acc": val.accuracy if val.count else None,
        "lr": state.lr,
        "images_per_s": n / max(seconds, 1e-9),
        "seconds": seconds,
    }


def _check_replicas(model: nn.Module, world: distributed.Dist, when: str) -> None:
    if not world.enabled:
        return
    if not distributed.replicas_agree(model, world):
        raise TrainingError(f"the {world.world_size} processes hold different weights {when}")
    if world.is_main:
        log.info("weights identical on all %d ranks %s", world.world_size, when)


def _diverged(what: str, value: float, step: int, state: _State, config) -> TrainingError:
    return TrainingError(
        f"the {what} became {value} at step {step} (epoch {state.epoch + 1}): training "
        f"diverged; lower the learning rate (--lr, now {config.lr}). The last good checkpoint "
        "is kept"
    )


def _check_finite(model: nn.Module, state: _State, config: TrainConfig) -> None:
    """Refuse to checkpoint weights an optimizer step has made non-finite: the loss only
    shows it one step later, and the checkpoint on disk must stay the last good one."""
    for tensor in model.state_dict().values():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = tensor[~torch.isfinite(tensor)][0].item()
            raise _diverged("weights", bad, state.step, state, config)


def _write(path: Path, write) -> None:
    """Run a write; a full or read-only disk stops the run with the last good files intact."""
    try:
        write()
    except OSError as error:
        raise TrainingError(
            f"cannot write {path}: {error.strerror or error}; the run stops here and its last "
            "good checkpoint is kept (free space or fix permissions, then --resume)"
        ) from None


def _log_tensorboard(run: RunDir, row: dict[str, Any]) -> None:
    try:
        writer = run.tensorboard()
    except ImportError:  # tensorboard is optional
        return
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
        if row[key] is not None:
            writer.add_scalar(key, row[key], row["step"])
    writer.flush()
