"""What every experiment shares: settings with a quick variant, data, networks, the recipe."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from reslab.data import Dataset, load_dataset
from reslab.data.splits import ImageSplit
from reslab.errors import ConfigError, check_fields
from reslab.io import atomic_write_text
from reslab.models import ResNetSpec, get_spec
from reslab.training import FitResult, TrainConfig, fit, preset
from reslab.training.checkpoint import load_checkpoint
from reslab.training.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Fields every experiment has. Sizes cut each split to its first N images (None: all)."""

    data_dir: str | None = None  # where Fashion-MNIST is looked for first
    train_size: int | None = None
    val_size: int | None = None  # of the 5,000 images held out of train for validation
    test_size: int | None = None
    seed: int = 0
    quiet: bool = False  # no per-epoch progress from the training runs


@dataclass
class TrainingSettings(Settings):
    """The recipe knobs of experiments that train through ``reslab.training.fit``."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    # bf16 autocast where the CPU multiplies bf16 fast (1.3-1.8x per step for these nets);
    # "fp32" for the paper's arithmetic
    precision: str = "auto"


S = TypeVar("S", bound=Settings)


def resolve_settings(cls: type[S], quick: bool, quick_values: dict[str, Any],
                     overrides: dict[str, Any]) -> S:
    """The full defaults, or the quick ones, with the caller's overrides on top, each value
    checked against its field's type and range before any work."""
    check_fields(cls, overrides, ConfigError, "unknown experiment setting")
    settings = cls(**((quick_values if quick else {}) | overrides))
    for name, hint in typing.get_type_hints(cls).items():
        _check_setting(name, hint, getattr(settings, name))
    if hasattr(settings, "check"):  # an experiment's own rules (a stage the net has...)
        settings.check()
    return settings


ZERO_ALLOWED = {"seed", "warmup"}  # integer settings that may be 0; every other one is >= 1
PRECISIONS = ("auto", "fp32", "bf16")


def _check_setting(name: str, hint: Any, value: Any) -> None:
    """One line naming the setting and what it takes, for a value of the wrong kind or range."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(hint)
    if optional:
        if value is None:
            return
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    low = 0 if name in ZERO_ALLOWED else 1

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    if hint is int:
        ok, expected = is_int(value), f"an integer >= {low}"
    elif hint is float:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and 0 < value < float("inf"))
        expected = "a positive number"
    elif hint is bool:
        ok, expected = isinstance(value, bool), "true or false"
    elif typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        ok = isinstance(value, tuple) and bool(value) and all(
            is_int(v) if kind is int else isinstance(v, kind) for v in value)
        expected = f"a non-empty list of {'integers >= 1' if kind is int else 'names'}"
    elif name == "precision":
        ok, expected = value in PRECISIONS, f"one of {', '.join(PRECISIONS)}"
    else:
        ok, expected = isinstance(value, str), "a string"
    if not ok:
        raise ConfigError(f"setting {name} must be {expected}, got {value!r:.60}")


PLAN = "experiment.json"  # what a report folder is for: the experiment and its settings


def prepare_out(out_dir: str | os.PathLike, name: str, settings: Settings) -> Path:
    """The report folder: a new one, or the folder of the same experiment with the same
    settings, interrupted or failed, which then continues (finished runs are not trained
    again, see ``train_net``). Anything else already there is refused, never mixed in."""
    out = Path(out_dir)
    plan = {"experiment": name, "settings": _plain(dataclasses.asdict(settings))}
    if out.exists() and any(out.iterdir()):
        try:
            saved = json.loads((out / PLAN).read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{out} is not empty and holds no {name} experiment: choose "
                              "another --out, or delete it first") from None
        if saved != plan:
            changed = sorted(k for k in plan["settings"]
                             if saved.get("settings", {}).get(k) != plan["settings"][k])
            what = (f"experiment {saved.get('experiment')!r}" if saved.get("experiment") != name
                    else f"other settings ({', '.join(changed)})")
            raise ConfigError(f"{out} holds a run of {what}: give the same settings to continue "
                              "it, or choose another --out")
        log.info("continuing %s in %s: finished runs are kept", name, out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PLAN, json.dumps(plan, indent=2) + "\n")
    return out


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=list))


def prepare_data(settings: Settings, data: Dataset | None) -> Dataset:
    """Fashion-MNIST (or the data set given), each split cut to the sizes in ``settings``."""
    if data is None:
        data = load_dataset("fashion-mnist", settings.data_dir)
    return dataclasses.replace(
        data, train=_first(data.train, settings.train_size),
        val=_first(data.val, settings.val_size), test=_first(data.test, settings.test_size))


def _first(split: ImageSplit, n: int | None) -> ImageSplit:
    if n is None or n >= len(split):
        return split
    if n < 1:
        raise ConfigError(f"split sizes must be >= 1, got {n}")
    return split.subset(torch.arange(n))


def cifar_spec(depth: int, data: Dataset, *, plain: bool = False, width: int = 16,
               **changes: Any) -> ResNetSpec:
    """He et al. 2015's CIFAR network of ``depth`` = 6n + 2 layers, sized for ``data``:
    three stages of n units of width w, 2w, 4w; option-A shortcuts, or none when ``plain``."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR-style depths are 6n + 2 (8, 14, 20, 32, 44, 56, 110...), "
                          f"got {depth}")
    n = (depth - 2) // 6
    channels, side, _ = data.image_shape
    return get_spec("resnet20").replace(
        depths=(n, n, n), widths=(width, 2 * width, 4 * width), stem_width=width,
        shortcut="none" if plain else "pad", in_channels=channels,
        num_classes=len(data.classes), input_size=side, **changes)


def net_name(depth: int, plain: bool) -> str:
    return f"{'plain' if plain else 'resnet'}{depth}"


def paper_recipe(settings: TrainingSettings, data: Dataset, **changes: Any) -> TrainConfig:
    """He et al. 2015's CIFAR recipe (the ``paper-cifar`` preset: SGD 0.1, momentum 0.9,
    weight decay 1e-4, pad-crop-flip) shortened to ``settings.epochs``, the learning rate
    divided by 10 at 50% and 75% of the steps as the paper does at 32k and 48k of 64k."""
    values = dict(data=data.name, epochs=settings.epochs, max_steps=None,
                  batch_size=settings.batch_size, lr=settings.lr, val_size=None,
                  precision=settings.precision,
                  crop_padding=min(2, data.image_shape[1] // 8), seed=settings.seed,
                  quiet=settings.quiet) | changes
    steps = values["epochs"] * max(len(data.train) // values["batch_size"], 1)
    milestones = tuple(sorted({max(steps // 2, 1), max(steps * 3 // 4, 2)}))
    return preset("paper-cifar", milestones=milestones, **values)


def train_net(model: torch.nn.Module, data: Dataset, config: TrainConfig, run_dir: Path,
              label: str) -> FitResult:
    """Train through the normal engine; its run directory lands in the report folder. A run
    an earlier attempt finished is read back (``model`` gets its chosen weights), and one it
    left half done is resumed from its last checkpoint."""
    run = RunDir(run_dir)
    config = config.replace(model=label, out=str(run_dir))
    if run.results.is_file() and run.best.is_file():
        log.info("%s: finished before, kept", label)
        model.load_state_dict(load_checkpoint(run.best).weights)
        history = [json.loads(line) for line in run.metrics.read_text().splitlines()]
        test = json.loads(run.results.read_text())
        return FitResult(run.path, history, test.get("best_val_acc"), test, model.eval())
    resume = run.last.is_file()
    log.info("%s %s (%d epochs of %d images)", "resuming" if resume else "training", label,
             config.epochs, len(data.train))
    return fit(model, data, config, run_dir=run_dir, resume=resume)


def throughput(result: FitResult) -> float:
    """Training images per second, over the whole run."""
    seconds = sum(row["seconds"] for row in result.history)
    images = sum(row["images_per_s"] * row["seconds"] for row in result.history)
    return images / max(seconds, 1e-9)
