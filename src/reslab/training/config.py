"""One typed config drives training, from the CLI, a config file or Python; presets are
named sets of its fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from reslab.errors import ConfigError, UnknownNameError, check_fields
from reslab.limits import MAX_IMAGE_SIDE


def option(default: Any, help: str, group: str, metavar: str | None = None) -> Any:
    """A config field with its one-line description (``reslab train --help`` shows it), the
    group of options it belongs to, and what its value is called there."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group,
                                                        "metavar": metavar or "TEXT"})


GROUPS = ("data", "model", "optimisation", "augmentation", "speed", "run")


@dataclass
class TrainConfig:
    """Everything a run depends on. The defaults are a plain recipe with every fast-training
    lever off, which trains every zoo network; the ``fast`` preset (what ``reslab train`` and
    ``reslab.train`` start from) is these defaults and the levers it turns on (``PRESETS``,
    and ``TUNED`` for fast_resnet10 only)."""

    # data
    data: str = option("fashion-mnist", "data set: fashion-mnist, mnist, cifar10, cifar100, or "
                       "an image folder (a path or folder:PATH)", "data", "NAME")
    data_dir: str | None = option(None, "folder to look in first for a built-in data set's "
                                  "files", "data", "DIR")
    val_size: int | None = option(None, "images held out of training for model selection "
                                  "(default: 5000, a tenth of an image folder)", "data")
    train_subset: int | None = option(None, "train on the first N training images only "
                                      "(quick trials)", "data")
    resize: int | None = option(None, "resize every batch to this side on the fly, any data "
                                "set (the d2l recipe: 96)", "data")
    image_size: int | None = option(None, "image folders: decode images to this side once, "
                                    "when loading (default 32)", "data")
    channels: int | None = option(None, "image folders: 1 (grey) or 3 (RGB, the default)",
                                  "data")
    progressive_resize: int | None = option(
        None, "progressive resizing: train the first epochs at this image side, growing "
        "linearly to the full size by half-way through the run", "data", "SIDE")
    # model
    model: str = option("fast_resnet10", "a zoo model (`reslab models`)", "model", "NAME")
    init: Literal["default", "xavier"] = option(
        "default", "initial weights: the model's own, or xavier (D2L's train_ch6)", "model")
    init_from: str | None = option(
        None, "start from a weights file: a reslab checkpoint or run folder (brings its model) "
        "or a torchvision/timm state dict (.pth, .safetensors; give --model)", "model", "FILE")
    normalize: Literal["auto", "data", "imagenet"] = option(
        "auto", "input normalisation: the data's own mean/std, ImageNet's, or auto (the "
        "weights' own when starting from a file whose normalisation is known)", "model")
    freeze: tuple[str, ...] = option(
        (), "keep these parts unchanged, weights and BN statistics (e.g. stem,layer1; the "
        "parts as `reslab summary` names them)", "model")
    freeze_until: str | None = option(
        None, "freeze every part before this one (e.g. layer3: stem, layer1, layer2)", "model",
        "PART")
    whiten_stem: bool = option(
        False, "set the first convolution to whiten the training images' patches (their "
        "principal directions, +/-) and freeze it", "model")
    # optimisation
    epochs: int = option(8, "epochs to train (more on --resume extends a run)", "optimisation")
    max_steps: int | None = option(None, "stop after this many optimizer steps (the paper: 64k)",
                                   "optimisation")
    batch_size: int = option(256, "images per optimizer step, over all processes",
                             "optimisation")
    optimizer: Literal["sgd", "adamw"] = option("sgd", "sgd or adamw", "optimisation")
    lr: float = option(0.2, "peak learning rate", "optimisation")
    backbone_lr_scale: float = option(
        1.0, "learning rate of everything but the classifier, as a fraction of --lr "
        "(fine-tuning: e.g. 0.1)", "optimisation")
    norm_bias_lr_scale: float = option(
        1.0, "learning rate of the batch-norm biases, as a multiple of their part's (airbench: "
        "64, with --freeze-norm-scales)", "optimisation")
    freeze_norm_scales: bool = option(False, "keep every batch-norm weight (scale) at its "
                                      "initial value", "optimisation")
    momentum: float = option(0.9, "SGD momentum (one-cycle: the upper bound)", "optimisation")
    nesterov: bool = option(True, "Nesterov momentum (SGD)", "optimisation")
    weight_decay: float = option(5e-4, "L2 weight decay", "optimisation")
    decay_bn_and_bias: bool = option(False, "apply weight decay to BN and bias parameters too",
                                     "optimisation")
    schedule: Literal["constant", "onecycle", "cosine", "multistep"] = option(
        "onecycle", "learning-rate schedule over the run", "optimisation")
    warmup_epochs: float = option(1.0, "epochs of linear warm-up (cosine, multistep); "
                                  "one-cycle's rising phase", "optimisation")
    milestones: tuple[int, ...] = option((), "multistep: steps at which lr is multiplied by "
                                         "gamma", "optimisation")
    gamma: float = option(0.1, "multistep: the factor at each milestone", "optimisation")
    warmup_lr: float | None = option(
        None, "a constant low lr until the training error falls below --warmup-until-error "
        "(He et al.'s ResNet-110)", "optimisation")
    warmup_until_error: float = option(0.8, "training error that ends --warmup-lr",
                                       "optimisation")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy loss",
                                    "optimisation")
    grad_clip: float | None = option(None, "clip the gradient norm to this", "optimisation")
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights "
                                     "with this decay, and evaluate it", "optimisation")
    lookahead_steps: int = option(
        0, "Lookahead: every N steps move slow weights --lookahead-alpha of the way to the "
        "trained ones and go on from them (0: off)", "optimisation")
    lookahead_alpha: float = option(0.5, "Lookahead's step toward the trained weights",
                                    "optimisation")
    # augmentation (on whole batches)
    crop_padding: int = option(0, "random translation by up to this many pixels",
                               "augmentation")
    flip: bool = option(True, "random horizontal flips", "augmentation")
    alternate_flips: bool = option(
        False, "with --flip: mirror each image in exactly every other epoch, not at random",
        "augmentation")
    erase: float = option(0.0, "probability of random erasing (cutout) per image",
                          "augmentation")
    tta_flip: bool = option(True, "at evaluation, average the predictions for each image and "
                            "its mirror", "augmentation")
    tta_shift: int = option(0, "at evaluation, also average over each image shifted by this "
                            "many pixels down-right and up-left (edges reflected)",
                            "augmentation")
    # speed
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "autocast precision; auto: bf16 where the hardware has fast bf16 kernels",
        "speed")
    channels_last: bool = option(True, "NHWC memory layout (faster convolutions)", "speed")
    compile: bool = option(False, "torch.compile the model (pays off on long runs)", "speed")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N", "speed",
                         "DEVICE")
    threads: int | None = option(None, "CPU threads (default: torch's choice)", "speed")
    # the run
    seed: int = option(0, "seed of the weights, the split and the augmentation", "run")
    deterministic: bool = option(False, "bitwise-reproducible runs (slower kernels)", "run")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at epoch ends)", "run")
    out: str | None = option(None, "run directory (default: runs/MODEL-TIME)", "run", "DIR")
    quiet: bool = option(False, "no progress output", "run")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_types(self)
        _positive_int(self, "epochs", "batch_size")
        _positive_int(self, "max_steps", "train_subset", "resize", "threads", "image_size",
                      "progressive_resize", optional=True)
        for name in ("resize", "image_size", "progressive_resize"):
            if (side := getattr(self, name)) is not None and side > MAX_IMAGE_SIDE:
                raise ConfigError(f"{name} must be at most {MAX_IMAGE_SIDE} pixels, got {side}")
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
        _in_range(self, "lookahead_alpha", 0, 1, closed_low=False)
        if not _is_int(self.lookahead_steps) or self.lookahead_steps < 0:
            raise ConfigError(f"lookahead_steps must be an integer >= 0, got "
                              f"{self.lookahead_steps!r}")
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
        if not _is_int(self.crop_padding) or not 0 <= self.crop_padding <= MAX_IMAGE_SIDE:
            raise ConfigError(f"crop_padding must be an integer from 0 to {MAX_IMAGE_SIDE} "
                              f"pixels, got {self.crop_padding!r}")
        if self.alternate_flips and not self.flip:
            raise ConfigError("alternate_flips needs flip: drop --no-flip or --alternate-flips")
        if not _is_int(self.tta_shift) or not 0 <= self.tta_shift <= 4:
            raise ConfigError(f"tta_shift must be an integer in 0...4 pixels, got "
                              f"{self.tta_shift!r}")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be an integer >= 0 (0: once per epoch)")
        _choice(self, "optimizer", ("sgd", "adamw"))
        _choice(self, "schedule", ("constant", "onecycle", "cosine", "multistep"))
        _choice(self, "init", ("default", "xavier"))
        _choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))
        _choice(self, "normalize", ("auto", "data", "imagenet"))
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        limit = 4 * (os.cpu_count() or 1)
        if self.threads is not None and self.threads > limit:
            raise ConfigError(f"threads must be at most {limit} (4x this machine's "
                              f"{os.cpu_count()} cores), got {self.threads}")
        if not (_is_num(self.norm_bias_lr_scale) and 0 < self.norm_bias_lr_scale <= 1024):
            raise ConfigError("norm_bias_lr_scale must be in (0, 1024], got "
                              f"{self.norm_bias_lr_scale!r}")
        if not (_is_num(self.backbone_lr_scale) and 0 < self.backbone_lr_scale <= 1):
            raise ConfigError("backbone_lr_scale must be in (0, 1], got "
                              f"{self.backbone_lr_scale!r}")
        if isinstance(self.freeze, str):  # "stem,layer1" from a config file
            self.freeze = tuple(p for p in self.freeze.split(",") if p)
        self.freeze = tuple(self.freeze)
        if any(not isinstance(p, str) or not p for p in self.freeze):
            raise ConfigError(f"freeze must name model parts, e.g. stem,layer1; got {self.freeze}")
        for name in ("init_from", "freeze_until", "out", "data_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        _check_out(self)
        self.milestones = tuple(self.milestones)
        steps = self.milestones
        if any(not _is_int(m) or m <= 0 for m in steps) or list(steps) != sorted(steps):
            raise ConfigError(f"milestones must be increasing positive steps, got {steps}")
        if self.schedule == "multistep" and not steps:
            raise ConfigError("schedule multistep needs milestones, e.g. --milestones [32000]")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov needs SGD with momentum > 0; add --no-nesterov")
        for name, value in dataclasses.asdict(self).items():  # what no check above bounds
            for v in value if isinstance(value, tuple | list) else (value,):
                if _is_int(v) and not -MAX_INT <= v <= MAX_INT:
                    raise ConfigError(f"{name} must be below 2**63, got {_shown(v)}")

    def replace(self, **changes: Any) -> TrainConfig:
        check_fields(TrainConfig, changes, ConfigError, "unknown training option")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# Named recipes: the fields they set on top of the defaults, for any model.
PRESETS: dict[str, dict[str, Any]] = {
    # the default: the shortest time to 93% test accuracy on a 2-core CPU, each choice made
    # on the validation split (docs/benchmarks.md, "Time to accuracy"): fast_resnet10 with
    # its levers (TUNED), one-cycle over 3 epochs, flips, flip TTA
    "fast": dict(epochs=3),
    # the same recipe trained longer: 94% test accuracy within 600 s on 2 cores (chosen on the
    # validation split: 14 epochs reached 0.9420 there)
    "accurate": dict(epochs=14),
    # the most accuracy for about an hour of 2 CPU cores: the same network over 45 epochs,
    # now with translations of up to 2 pixels and random erasing (Zhong et al. 2017: p = 0.5
    # on Fashion-MNIST) so the long run does not overfit, and shifted views at evaluation
    "best": dict(epochs=45, crop_padding=2, erase=0.5, tta_shift=1),
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

# Levers tuned on one network, which a preset sets only when it trains that network: a frozen
# whitening stem and lr 0.6 make fast_resnet10 fast, and resnet20 train at chance or
# d2l_resnet18 diverge. Any other --model trains on the plain recipe (TrainConfig's
# defaults: SGD + Nesterov, one-cycle, no whitening) at PLAIN_LR.
FAST_RESNET10_LEVERS = ("fast_resnet10", dict(whiten_stem=True, lr=0.6))
TUNED: dict[str, tuple[str, dict[str, Any]]] = {
    name: FAST_RESNET10_LEVERS for name in ("fast", "accurate", "best")}
# The peak rate that trained every zoo network tried, measured on Fashion-MNIST (2 epochs of
# 5,000 images, batch 256; test accuracy at lr 0.2 / 0.1 / 0.05): resnet18 0.43 / 0.67 /
# 0.79, d2l_resnet18 0.64 / 0.75 / 0.80, resnet50 0.16 / 0.14 / 0.35, resnet20 0.68 / 0.69 /
# 0.68. The ImageNet-stem nets want the lower rate at 28x28.
PLAIN_LR = 0.05


def recipe(name: str, model: str | None = None) -> dict[str, Any]:
    """The fields preset ``name`` sets when it trains ``model`` (default: its own)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name.lower(), list(PRESETS), n=3, cutoff=0.3)
        raise UnknownNameError(
            f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}"
            + (f" (closest: {', '.join(close)})" if close else "")
        )
    values = dict(PRESETS[name])
    tuned_model, levers = TUNED.get(name, (None, {}))
    if model in (None, tuned_model):
        values |= levers
    elif tuned_model is not None:
        values["lr"] = PLAIN_LR
    return values


def preset_notes(name: str, config: TrainConfig, given: Iterable[str] = ()) -> list[str]:
    """What a run from preset ``name`` is told about how the options ``given`` changed its
    recipe into ``config``: levers left off for its model, a learning rate scaled to another
    batch size."""
    notes, given = [], set(given)
    tuned_model, levers = TUNED.get(name, (None, {}))
    shown = ", ".join(f"{k} {v}" for k, v in levers.items() if k not in given)
    if tuned_model is not None and config.model != tuned_model and shown:
        notes.append(f"preset {name}: its levers ({shown}) are tuned for {tuned_model}, so "
                     f"{config.model} trains on the plain recipe (SGD + Nesterov, one-cycle to "
                     f"lr {config.lr:g}); give them as options to try them")
    base = recipe(name, config.model)
    lr, batch = base.get("lr", TrainConfig.lr), base.get("batch_size", TrainConfig.batch_size)
    if "lr" not in given and config.batch_size != batch:
        notes.append(f"lr {config.lr:g}: the recipe's {lr:g} at batch {batch}, scaled to batch "
                     f"{config.batch_size} (the linear scaling rule); --lr sets it")
    return notes


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset's config with some fields changed: ``preset("d2l", epochs=2)``. A preset's
    levers tuned for one network (``TUNED``) apply only when it trains that network; another
    batch size without a learning rate scales the recipe's rate with it (Goyal et al. 2017's
    linear scaling rule: the same step per image, so that small batches do not diverge)."""
    model = overrides.get("model", PRESETS.get(name, {}).get("model", TrainConfig.model))
    base = recipe(name, model)
    values = base | overrides
    batch = overrides.get("batch_size")
    if "lr" not in overrides and _is_int(batch) and batch > 0:
        values["lr"] = (base.get("lr", TrainConfig.lr) * batch
                        / base.get("batch_size", TrainConfig.batch_size))
    if name == "paper-cifar" and values.get("model") == "resnet110" and "warmup_lr" not in values:
        values["warmup_lr"] = 0.01  # the paper's warm-up for ResNet-110 only
    return TrainConfig().replace(**values)


CONFIG_FILE_LIMIT = 1 << 20  # bytes: a config is a page of options, never megabytes


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The options of a YAML or JSON config file (a mapping of TrainConfig fields, and
    optionally ``preset``). YAML aliases are refused: a few hundred bytes of them can expand to
    gigabytes, and a config has no need of them."""
    import yaml

    from reslab.paths import regular_file

    path = regular_file(path, "--config")  # checked before open: a FIFO would block it
    try:
        with open(path, "rb") as file:
            text = file.read(CONFIG_FILE_LIMIT + 1)
    except OSError as error:
        raise ConfigError(f"cannot read --config {path}: {error.strerror}") from None
    if len(text) > CONFIG_FILE_LIMIT:
        raise ConfigError(f"--config {path} is over {CONFIG_FILE_LIMIT >> 20} MiB: not a config")

    class NoAliases(yaml.SafeLoader):
        depth = 0  # the composer recurses once per level: bounded before Python's own limit

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ConfigError(f"--config {path}: YAML aliases (*name) are not allowed")
            if self.depth >= MAX_CONFIG_DEPTH:
                raise ConfigError(f"--config {path}: lists or mappings nested more than "
                                  f"{MAX_CONFIG_DEPTH} deep; a config is a flat mapping of "
                                  "options, like `epochs: 5`")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        values = yaml.load(text, Loader=NoAliases)  # noqa: S506 (a SafeLoader)
    except ConfigError:  # an alias or too deep: said above (a ConfigError is a ValueError)
        raise
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"--config {path} is not valid YAML or JSON{at}") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ConfigError(f"--config {path} must be a mapping of options, like `epochs: 5`")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    check_fields(TrainConfig, [k for k in values if k != "preset"], ConfigError,
                 f"--config {path}: unknown option")
    if "preset" in values and not isinstance(values["preset"], str):
        raise ConfigError(f"--config {path}: preset must be a preset's name ("
                          f"{', '.join(PRESETS)}), got {_shown(values['preset'])}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


MAX_INT = 2**63 - 1  # what torch and numpy hold in an int64; beyond, their maths overflows
MAX_CONFIG_DEPTH = 8  # nesting of a config file's lists and mappings (a config needs 2)


def _check_types(cfg: TrainConfig) -> None:
    """Each field's value is of the type its annotation names, before any check reads it:
    ``data: 5`` or ``epochs: [1]`` from a file would otherwise fail later as an
    AttributeError. Numbers are finite and fit an int64 (``warmup_epochs: .inf`` passes every
    comparison with a bound and overflows in the schedule); integers fit an int64, checked
    last in ``validate``, after the checks that name a field's own range."""
    import typing

    for name, hint in typing.get_type_hints(TrainConfig).items():
        value = getattr(cfg, name)
        if not _fits(value, hint):
            raise ConfigError(f"{name} must be {_describe(hint)}, got "
                              f"{_shown(value)}")


def _fits(value: Any, hint: Any) -> bool:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is tuple:  # a file's list arrives as a tuple; freeze may be "stem,layer1"
        element = args[0]
        return (isinstance(value, tuple | list) and all(_fits(v, element) for v in value)
                or element is str and isinstance(value, str))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_num(value) and abs(value) < float("inf")
    if hint is str:
        return isinstance(value, str) and "\0" not in value
    return True


def _describe(hint: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {type(None): "none", bool: "true or false", int: "an integer",
            float: "a finite number", str: "a string"}.get(hint, str(hint))


def _shown(value: Any) -> str:
    from reslab.paths import printable

    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def _check_out(cfg: TrainConfig) -> None:
    """The run's folder is none of its inputs, nor inside one."""
    from reslab.runtime.run_folder import check_run_folder

    if cfg.out is not None:
        inputs = [str(cfg.data).removeprefix("folder:"), cfg.data_dir, *_weights_inputs(cfg)]
        check_run_folder(cfg.out, "--out", [i for i in inputs if i])


def _weights_inputs(cfg: TrainConfig) -> list[str]:
    """What --init-from reads: the file or run folder given and, for a checkpoint in a run's
    checkpoints/ folder, that run (a new run there would replace the file being read)."""
    if cfg.init_from is None:
        return []
    from pathlib import Path

    given = Path(os.path.expanduser(cfg.init_from))  # an unknown ~user is refused when read
    run = given.parent.parent
    in_run = given.parent.name == "checkpoints" and (run / "config.json").is_file()
    return [cfg.init_from, *([str(run)] if in_run else [])]


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
