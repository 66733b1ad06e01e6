"""One typed config drives training, from the CLI, a config file or Python; presets are
named sets of its fields.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Literal

from reslab.errors import ConfigError, UnknownNameError, check_fields


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the ``fast`` preset."""

    # what to train, on what
    model: str = "fast_resnet10"  # a zoo name (`reslab models`)
    data: str = "fashion-mnist"  # fashion-mnist, mnist, cifar10, cifar100, or an image folder
    data_dir: str | None = None
    val_size: int | None = None  # images held out of training for model selection
    train_subset: int | None = None  # train on the first N training images (quick trials)
    resize: int | None = None  # resize images to this side (the d2l recipe: 96)
    image_size: int | None = None  # image folders: decode images to this side (default 32)
    channels: int | None = None  # image folders: 1 (grey) or 3 (RGB, the default)
    # how long, how big
    epochs: int = 8
    max_steps: int | None = None  # stop after this many optimizer steps (the paper: 64k)
    batch_size: int = 256
    # optimiser and schedule
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn_and_bias: bool = False  # weight decay on BN and bias parameters too
    schedule: Literal["constant", "onecycle", "cosine", "multistep"] = "onecycle"
    warmup_epochs: float = 1.0  # linear warm-up (cosine, multistep); onecycle's rise
    milestones: tuple[int, ...] = ()  # multistep: steps where lr is multiplied by gamma
    gamma: float = 0.1
    warmup_lr: float | None = None  # constant lr until the training error falls below...
    warmup_until_error: float = 0.8  # ...this (He et al. 2015, ResNet-110)
    label_smoothing: float = 0.1
    grad_clip: float | None = None  # max gradient norm
    ema_decay: float | None = None  # keep an EMA of the weights and evaluate it
    init: Literal["default", "xavier"] = "default"  # xavier: D2L's train_ch6
    # augmentation (on whole batches)
    crop_padding: int = 0  # random translation by up to this many pixels
    flip: bool = True
    erase: float = 0.0  # probability of random erasing (cutout)
    tta_flip: bool = True  # average predictions over the image and its mirror at test time
    # speed
    # autocast dtype; auto: bf16 where the hardware has fast bf16 kernels, else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto: CUDA when present, else CPU
    threads: int | None = None  # CPU threads (default: torch's choice)
    # reproducibility and bookkeeping
    seed: int = 0
    deterministic: bool = False  # bitwise-reproducible (and resumable) runs
    checkpoint_every: int = 0  # also checkpoint every N steps (0: once per epoch)
    out: str | None = None  # run directory (default: runs/<model>-<time>)
    quiet: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _positive_int(self, "epochs", "batch_size")
        _positive_int(self, "max_steps", "train_subset", "resize", "threads", "image_size",
                      optional=True)
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.val_size is not None and (not _is_int(self.val_size) or self.val_size < 0):
            raise ConfigError(f"val_size must be an integer >= 0, got {self.val_size!r}")
        for name in ("lr", "warmup_lr"):
            value = getattr(self, name)
            if value is not None and not (_is_num(value) and value > 0 and value < float("inf")):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        _in_range(self, "momentum", 0, 1, closed_high=False)
        _in_range(self, "label_smoothing", 0, 1, closed_high=False)
        _in_range(self, "erase", 0, 1)
        _in_range(self, "gamma", 0, 1, closed_low=False)
        _in_range(self, "warmup_until_error", 0, 1)
        if self.ema_decay is not None:
            _in_range(self, "ema_decay", 0, 1, closed_low=False, closed_high=False)
        if not _is_num(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not _is_num(self.warmup_epochs) or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.grad_clip is not None and (not _is_num(self.grad_clip) or self.grad_clip <= 0):
            raise ConfigError(f"grad_clip must be a positive number, got {self.grad_clip!r}")
        if not _is_int(self.crop_padding) or self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be an integer >= 0, got {self.crop_padding!r}")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be an integer >= 0 (0: once per epoch)")
        _choice(self, "optimizer", ("sgd", "adamw"))
        _choice(self, "schedule", ("constant", "onecycle", "cosine", "multistep"))
        _choice(self, "init", ("default", "xavier"))
        _choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))
        self.milestones = tuple(self.milestones)
        steps = self.milestones
        if any(not _is_int(m) or m <= 0 for m in steps) or list(steps) != sorted(steps):
            raise ConfigError(f"milestones must be increasing positive steps, got {steps}")
        if self.schedule == "multistep" and not steps:
            raise ConfigError("schedule multistep needs milestones, e.g. --milestones [32000]")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov needs SGD with momentum > 0; add --nesterov false")

    def replace(self, **changes: Any) -> TrainConfig:
        check_fields(TrainConfig, changes, ConfigError, "unknown training option")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# Named recipes: the fields they set on top of the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # the default: best time-to-accuracy on a 2-core CPU, chosen on the validation split
    # (docs/benchmarks.md): fast_resnet10, 8 one-cycle epochs, flips but no translation
    "fast": {},
    # seed 003 / D2L train_ch6 exactly: ResNet-18 at 96x96, plain SGD 0.05, 10 epochs,
    # Xavier init, no augmentation, no tricks
    "d2l": dict(
        model="d2l_resnet18", resize=96, epochs=10, batch_size=256, optimizer="sgd", lr=0.05,
        val_size=0,  # D2L trains on all 60,000 images and reports the last epoch's test accuracy
        momentum=0.0, nesterov=False, weight_decay=0.0, schedule="constant", warmup_epochs=0.0,
        label_smoothing=0.0, init="xavier", crop_padding=0, flip=False, erase=0.0,
        tta_flip=False, precision="fp32", channels_last=False,
    ),
    # He et al. 2015 section 4.2 (CIFAR-10): 64k iterations at batch 128, lr 0.1 divided by
    # 10 at 32k and 48k, weight decay 1e-4 (on every weight), momentum 0.9, 4-pixel pad+crop+flip
    "paper-cifar": dict(
        model="resnet20", data="cifar10", epochs=10_000, max_steps=64_000, batch_size=128,
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
        decay_bn_and_bias=True, schedule="multistep", milestones=(32_000, 48_000), gamma=0.1,
        warmup_epochs=0.0, label_smoothing=0.0, crop_padding=4, flip=True, erase=0.0,
        tta_flip=False, precision="fp32", val_size=5_000,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset's config with some fields changed: ``preset("d2l", epochs=2)``."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.3)
        raise UnknownNameError(
            f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}"
            + (f" (closest: {', '.join(close)})" if close else "")
        )
    values = PRESETS[name] | overrides
    if name == "paper-cifar" and values.get("model") == "resnet110" and "warmup_lr" not in values:
        values["warmup_lr"] = 0.01  # the paper's warm-up for ResNet-110 only
    return TrainConfig().replace(**values)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def _positive_int(cfg: TrainConfig, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(cfg, name)
        if optional and value is None:
            continue
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _in_range(cfg, name, low, high, closed_low=True, closed_high=True) -> None:
    value = getattr(cfg, name)
    ok = _is_num(value) and (value >= low if closed_low else value > low) and (
        value <= high if closed_high else value < high
    )
    if not ok:
        interval = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")


def _choice(cfg, name, choices) -> None:
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
