"""What ``fit`` trains with, set up in one place before the first step: the device and
processes, the loaders and the run's length, the model on its device, its training state, the
run folder's writer and the progress display; then, once the folder is held, a resumed run's
state and the model as the step calls it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reslab import memory
from reslab.data import AugmentConfig, BatchLoader, Dataset
from reslab.data.augment import progressive_side
from reslab.errors import ConfigError
from reslab.runtime.checkpoint import load_checkpoint
from reslab.runtime.device import configure, resolve_device, resolve_precision
from reslab.runtime.run_folder import run_path
from reslab.training import distributed
from reslab.training.banner import start_line
from reslab.training.config import TrainConfig
from reslab.training.finetune import train_mode
from reslab.training.progress import Progress
from reslab.training.state import TrainState
from reslab.training.whitening import setup_whitening
from reslab.training.writer import RunWriter

log = logging.getLogger(__name__)


@dataclass
class Setup:
    config: TrainConfig
    data: Dataset
    model: nn.Module  # on its device; ``state.net`` is what the step calls
    device: torch.device
    precision: str
    world: distributed.Dist
    train_loader: BatchLoader
    val_loader: BatchLoader
    test_loader: BatchLoader
    total_steps: int
    epochs: int
    full_side: int  # the side the run trains at once progressive resizing is done
    state: TrainState
    writer: RunWriter
    progress: Progress
    notes: list[str]  # lines for the start of the progress output

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes)

    def start(self, resume: bool) -> None:
        """Hold the run folder (a resumed run: restore its state from its last checkpoint),
        wrap the model for the step, and print the notes and the start line."""
        config, state, writer = self.config, self.state, self.writer
        writer.open(config.to_dict(), resume=resume)
        if resume:
            _resume(state, writer, self.world, self.total_steps)
            writer.record(config.to_dict())  # an extended run's new length
        state.net = _wrap(self.model, config, self.world, self.device)
        for note in [*self.notes, *state.notes]:
            self.progress.line(note)
        self.progress.line(start_line(state, self.data, config, writer.path, self.epochs))

    def start_epoch(self, epoch: int) -> None:
        """The loader's order (and side, when resizing progressively) for ``epoch``, and the
        model in training mode."""
        self.train_loader.set_epoch(epoch)
        if self.config.progressive_resize:
            self.train_loader.transform.resize = progressive_side(
                self.config.progressive_resize, self.full_side, epoch, self.epochs)
        train_mode(self.model)


def set_up(model: nn.Module, data: Dataset, config: TrainConfig, *,
           run_dir: str | Path | None, resume: bool, head: nn.Module | None,
           notes: list[str]) -> Setup:
    """Everything ``fit`` trains with, checked before any file is written: data too small
    for the batch, a progressive resize that does not grow, a model too large for memory."""
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

    shape = data.input_shape(config.resize)
    if config.progressive_resize is not None and config.progressive_resize >= shape[1]:
        raise ConfigError(f"progressive_resize {config.progressive_resize} must be below the "
                          f"side the run trains at ({shape[1]})")
    memory.check_training(model, shape, config.batch_size, f"training {config.model}")
    if config.whiten_stem:
        notes = [*notes, *setup_whitening(model, data, config.resize, resume)]
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    state = TrainState(model, config, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                       precision=precision, head=head)
    writer = RunWriter(run_dir or run_path(config.out, config.model), active=world.is_main)
    progress = Progress(enabled=world.is_main and not config.quiet, epochs=epochs,
                        steps_per_epoch=steps_per_epoch)
    return Setup(config, data, model, device, precision, world, train_loader, val_loader,
                 test_loader, total_steps, epochs, shape[1], state, writer, progress,
                 list(notes))


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
    # read again now that the folder is held: reslab.train's read (before the lock, to build
    # the model) may be older than what a run that held the folder meanwhile wrote
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
        distributed.check_replicas(model, world, "at the start")
    return torch.compile(net) if config.compile else net
