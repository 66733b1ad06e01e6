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
from reslab.runtime.precision import Precision
from reslab.settings import is_int, normalised, problems, setting
from reslab.settings import shown as _shown

GROUPS = ("data", "model", "optimisation", "augmentation", "speed", "run")


@dataclass
class TrainConfig:
    """Everything a run depends on. The defaults are a plain recipe with every fast-training
    lever off, which trains every zoo network; the ``fast`` preset (what ``reslab train`` and
    ``reslab.train`` start from) is these defaults and the levers it turns on (``PRESETS``,
    and ``TUNED`` for fast_resnet10 only)."""

    # data
    data: str = setting("fashion-mnist", "data set: fashion-mnist, mnist, cifar10, cifar100, or "
                        "an image folder (a path or folder:PATH)", "data", "NAME")
    data_dir: str | None = setting(None, "folder to look in first for a built-in data set's "
                                   "files", "data", "DIR")
    val_size: int | None = setting(None, "images held out of training for model selection "
                                   "(default: 5000, a tenth of an image folder)", "data", low=0)
    train_subset: int | None = setting(None, "train on the first N training images only "
                                       "(quick trials)", "data")
    resize: int | None = setting(None, "resize every batch to this side on the fly, any data "
                                 "set (the d2l recipe: 96)", "data", high=MAX_IMAGE_SIDE)
    image_size: int | None = setting(None, "image folders: decode images to this side once, "
                                     "when loading (default 32)", "data", high=MAX_IMAGE_SIDE)
    channels: int | None = setting(None, "image folders: 1 (grey) or 3 (RGB, the default)",
                                   "data", choices=(1, 3))
    progressive_resize: int | None = setting(
        None, "progressive resizing: train the first epochs at this image side, growing "
        "linearly to the full size by half-way through the run", "data", "SIDE",
        high=MAX_IMAGE_SIDE)
    # model
    model: str = setting("fast_resnet10", "a zoo model (`reslab models`)", "model", "NAME")
    init: Literal["default", "xavier", "dirac"] = setting(
        "default", "initial weights: the model's own, xavier (D2L's train_ch6), or dirac "
        "(the model's own with each convolution's first filters passing their input "
        "through, airbench's identity init)", "model")
    init_from: str | None = setting(
        None, "start from a weights file: a reslab checkpoint or run folder (brings its model) "
        "or a torchvision/timm state dict (.pth, .safetensors; give --model)", "model", "FILE")
    normalize: Literal["auto", "data", "imagenet"] = setting(
        "auto", "input normalisation: the data's own mean/std, ImageNet's, or auto (the "
        "weights' own when starting from a file whose normalisation is known)", "model")
    freeze: tuple[str, ...] = setting(
        (), "keep these parts unchanged, weights and BN statistics (e.g. stem,layer1; the "
        "parts as `reslab summary` names them)", "model")
    freeze_until: str | None = setting(
        None, "freeze every part before this one (e.g. layer3: stem, layer1, layer2)", "model",
        "PART")
    whiten_stem: bool = setting(
        False, "set the first convolution to whiten the training images' patches (their "
        "principal directions, +/-) and freeze it", "model")
    # optimisation
    epochs: int = setting(8, "epochs to train (more on --resume extends a run)", "optimisation")
    max_steps: int | None = setting(None, "stop after this many optimizer steps (the paper: 64k)",
                                    "optimisation")
    batch_size: int = setting(256, "images per optimizer step, over all processes",
                              "optimisation")
    optimizer: Literal["sgd", "adamw"] = setting("sgd", "sgd or adamw", "optimisation")
    lr: float = setting(0.2, "peak learning rate", "optimisation")
    backbone_lr_scale: float = setting(
        1.0, "learning rate of everything but the classifier, as a fraction of --lr "
        "(fine-tuning: e.g. 0.1)", "optimisation", high=1)
    norm_bias_lr_scale: float = setting(
        1.0, "learning rate of the batch-norm biases, as a multiple of their part's (airbench: "
        "64, with --freeze-norm-scales)", "optimisation", high=1024)
    freeze_norm_scales: bool = setting(False, "keep every batch-norm weight (scale) at its "
                                       "initial value", "optimisation")
    momentum: float = setting(0.9, "SGD momentum (one-cycle: the upper bound)", "optimisation",
                              low=0, high=1, open_high=True)
    nesterov: bool = setting(True, "Nesterov momentum (SGD)", "optimisation")
    weight_decay: float = setting(5e-4, "L2 weight decay", "optimisation", low=0)
    decay_bn_and_bias: bool = setting(False, "apply weight decay to BN and bias parameters too",
                                      "optimisation")
    schedule: Literal["constant", "onecycle", "cosine", "multistep"] = setting(
        "onecycle", "learning-rate schedule over the run", "optimisation")
    end_lr_fraction: float | None = setting(
        None, "one-cycle: the rate it ends at, as a fraction of --lr (default: 1/250,000, "
        "torch's; e.g. 0.07 ends a triangle above zero)", "optimisation", low=0, high=1,
        open_low=True)
    warmup_epochs: float = setting(1.0, "epochs of linear warm-up (cosine, multistep); "
                                   "one-cycle's rising phase", "optimisation", low=0)
    milestones: tuple[int, ...] = setting((), "multistep: steps at which lr is multiplied by "
                                          "gamma", "optimisation")
    gamma: float = setting(0.1, "multistep: the factor at each milestone", "optimisation",
                           high=1)
    warmup_lr: float | None = setting(
        None, "a constant low lr until the training error falls below --warmup-until-error "
        "(He et al.'s ResNet-110)", "optimisation")
    warmup_until_error: float = setting(0.8, "training error that ends --warmup-lr",
                                        "optimisation", low=0, high=1)
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss",
                                     "optimisation", low=0, high=1, open_high=True)
    grad_clip: float | None = setting(None, "clip the gradient norm to this", "optimisation")
    ema_decay: float | None = setting(None, "keep an exponential moving average of the weights "
                                      "with this decay, and evaluate it", "optimisation", high=1,
                                      open_high=True)
    lookahead_steps: int = setting(
        0, "Lookahead: every N steps move slow weights --lookahead-alpha of the way to the "
        "trained ones and go on from them (0: off)", "optimisation", low=0)
    lookahead_alpha: float = setting(0.5, "Lookahead's step toward the trained weights",
                                     "optimisation", high=1)
    # augmentation (on whole batches)
    crop_padding: int = setting(0, "random translation by up to this many pixels",
                                "augmentation", low=0, high=MAX_IMAGE_SIDE)
    flip: bool = setting(True, "random horizontal flips", "augmentation")
    alternate_flips: bool = setting(
        False, "with --flip: mirror each image in exactly every other epoch, not at random",
        "augmentation")
    erase: float = setting(0.0, "probability of random erasing (cutout) per image",
                           "augmentation", low=0, high=1)
    tta_flip: bool = setting(True, "at evaluation, average the predictions for each image and "
                             "its mirror", "augmentation")
    tta_shift: int = setting(0, "at evaluation, also average over each image shifted by this "
                             "many pixels down-right and up-left (edges reflected)",
                             "augmentation", low=0, high=4)
    # speed
    precision: Precision = setting(
        "auto", "autocast precision; auto: bf16 where the hardware has fast bf16 kernels",
        "speed")
    channels_last: bool = setting(True, "NHWC memory layout (faster convolutions)", "speed")
    compile: bool = setting(False, "torch.compile the model (pays off on long runs)", "speed")
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N", "speed",
                          "DEVICE")
    threads: int | None = setting(None, "CPU threads (default: torch's choice)", "speed")
    # the run
    seed: int = setting(0, "seed of the weights, the split and the augmentation", "run", low=0,
                        high=2**63, open_high=True)
    deterministic: bool = setting(False, "bitwise-reproducible runs (slower kernels)", "run")
    checkpoint_every: int = setting(0, "also checkpoint every N steps (0: at epoch ends)", "run",
                                    low=0)
    out: str | None = setting(None, "run directory (default: runs/MODEL-TIME)", "run", "DIR")
    quiet: bool = setting(False, "no progress output", "run")

    def rules(self) -> list[str]:
        """What is wrong across fields, once each field is right (``settings.problems``)."""
        found = []
        if self.alternate_flips and not self.flip:
            found.append("alternate_flips needs flip: drop --no-flip or --alternate-flips")
        limit = 4 * (os.cpu_count() or 1)
        if self.threads is not None and self.threads > limit:
            found.append(f"threads must be at most {limit} (4x this machine's "
                         f"{os.cpu_count()} cores), got {self.threads}")
        if not all(self.freeze):
            found.append(f"freeze must name model parts, e.g. stem,layer1; got {self.freeze}")
        if list(self.milestones) != sorted(self.milestones):
            found.append(f"milestones must be increasing positive steps, got {self.milestones}")
        if self.schedule == "multistep" and not self.milestones:
            found.append("schedule multistep needs milestones, e.g. --milestones [32000]")
        if self.end_lr_fraction is not None and self.schedule != "onecycle":
            found.append(f"end_lr_fraction sets where one-cycle ends; schedule {self.schedule} "
                         "has none: drop --end-lr-fraction or use --schedule onecycle")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            found.append("nesterov needs SGD with momentum > 0; add --no-nesterov")
        return found

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; an unknown field is refused, the values are checked where
        the config is run (``checked``)."""
        check_fields(TrainConfig, changes, ConfigError, "unknown training option")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# Named recipes: the fields they set on top of the defaults, for any model.
PRESETS: dict[str, dict[str, Any]] = {
    # the default: 93% test accuracy on every seed in the least compute measured on a 2-core
    # CPU, each choice made on the validation split (docs/benchmarks.md, "Time to accuracy"):
    # fast_resnet10 with its levers (TUNED), one-cycle over 4 epochs, flips, flip TTA. Three
    # epochs reached 93% on the median seed of one machine only (0.928-0.930 on others)
    "fast": dict(epochs=4),
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
    if "lr" not in overrides and is_int(batch) and batch > 0:
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


MAX_CONFIG_DEPTH = 8  # nesting of a config file's lists and mappings (a config needs 2)


def checked(config: TrainConfig) -> TrainConfig:
    """``config`` as an entry point runs it (``reslab train``, ``reslab.train``, ``fit``): its
    lists as tuples, refused with its first problem (``settings.problems``, one line), and its
    run folder, the one check that reads the file system, none of its inputs."""
    config = normalised(config)
    if found := problems(config):
        raise ConfigError(found[0])
    _check_out(config)
    return config


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
    from reslab.runtime.run_folder import RunFolder

    # an unknown ~user is refused when read
    run = RunFolder.holding(os.path.expanduser(cfg.init_from))
    in_run = run is not None and run.config.is_file()
    return [cfg.init_from, *([str(run.path)] if in_run else [])]
