"""What experiments share: the report folder's claim, data cut to size, He et al.'s CIFAR
networks and their training recipe."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reslab.data import Dataset, load_dataset
from reslab.data.splits import ImageSplit
from reslab.errors import ConfigError
from reslab.experiments.protocol import Settings, TrainingSettings
from reslab.io import atomic_write_text
from reslab.models import ResNetSpec, build, get_spec
from reslab.paths import is_folder, printable, read_own_file
from reslab.training import FitResult, TrainConfig, preset

log = logging.getLogger(__name__)

PLAN = "experiment.json"  # what a report folder is for: the experiment and its settings


def prepare_out(out_dir: str | os.PathLike, name: str, settings: Settings, *,
                create: bool = True) -> Path:
    """The report folder: a new one, or the folder of the same experiment with the same
    settings, interrupted or failed, which then continues (finished runs are not trained
    again, see ``executor.train_run``). Anything else already there is refused, never mixed in.
    ``create=False`` only checks, making nothing."""
    out = Path(out_dir)
    plan = {"experiment": name, "settings": _plain(dataclasses.asdict(settings))}
    if os.path.lexists(out) and not is_folder(out):
        raise ConfigError(f"--out {printable(out)} is a file, not a folder: choose another "
                          "--out")
    if out.exists() and any(out.iterdir()):
        try:
            saved = json.loads(read_own_file(out / PLAN, "the experiment's plan", 1 << 20))
        except (OSError, ValueError, RecursionError):  # ConfigError (not regular) too
            raise ConfigError(f"{printable(out)} is not empty and holds no {name} experiment "
                              "(or its experiment.json is not one reslab wrote): choose another "
                              "--out, or delete it first") from None
        if not isinstance(saved, dict):
            saved = {}
        if saved != plan:
            changed = sorted(k for k in plan["settings"]
                             if saved.get("settings", {}).get(k) != plan["settings"][k])
            what = (f"experiment {saved.get('experiment')!r}" if saved.get("experiment") != name
                    else f"other settings ({', '.join(changed)})")
            raise ConfigError(f"{out} holds a run of {what}: give the same settings to continue "
                              "it, or choose another --out")
        if create:
            log.info("continuing %s in %s: finished runs are kept", name, out)
        return out
    if not create:
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
               side: int | None = None, **changes: Any) -> ResNetSpec:
    """He et al. 2015's CIFAR network of ``depth`` = 6n + 2 layers, sized for ``data`` (its
    images resized to ``side``, if given): three stages of n units of width w, 2w, 4w; option-A
    shortcuts, or none when ``plain``."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR-style depths are 6n + 2 (8, 14, 20, 32, 44, 56, 110...), "
                          f"got {depth}")
    n = (depth - 2) // 6
    channels, native, _ = data.image_shape
    side = side or native
    return get_spec("resnet20").replace(
        depths=(n, n, n), widths=(width, 2 * width, 4 * width), stem_width=width,
        shortcut="none" if plain else "pad", in_channels=channels,
        num_classes=len(data.classes), input_size=side, **changes)


def seeded(spec: ResNetSpec, seed: int) -> Callable[[dict], torch.nn.Module]:
    """A planned run's model builder: ``spec`` built with weights drawn from ``seed``."""
    def model(done: dict) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build(spec)
    return model


def net_name(depth: int, plain: bool) -> str:
    return f"{'plain' if plain else 'resnet'}{depth}"


def paper_recipe(settings: TrainingSettings, data: Dataset, seed: int = 0,
                 **changes: Any) -> TrainConfig:
    """He et al. 2015's CIFAR recipe (the ``paper-cifar`` preset: SGD 0.1, momentum 0.9,
    weight decay 1e-4, pad-crop-flip) shortened to ``settings.epochs``, the learning rate
    divided by 10 at 50% and 75% of the steps as the paper does at 32k and 48k of 64k, after
    ``settings.warmup_epochs`` of linear warm-up.
    ``seed``: of the data order and augmentation (the weights are seeded where built)."""
    values = dict(data=data.name, epochs=settings.epochs, max_steps=None,
                  batch_size=settings.batch_size, lr=settings.lr,
                  warmup_epochs=settings.warmup_epochs, val_size=None,
                  precision=settings.precision,
                  crop_padding=min(2, data.image_shape[1] // 8), seed=seed,
                  quiet=settings.quiet) | changes
    if values.get("schedule", "multistep") != "multistep":
        values.setdefault("milestones", ())  # steps belong to the paper's schedule only
    elif "milestones" not in values:
        steps = values["epochs"] * max(len(data.train) // values["batch_size"], 1)
        values["milestones"] = tuple(sorted({max(steps // 2, 1), max(steps * 3 // 4, 2)}))
    return preset("paper-cifar", **values)


def throughput(result: FitResult) -> float:
    """Training images per second, over the whole run."""
    seconds = sum(row["seconds"] for row in result.history)
    images = sum(row["images_per_s"] * row["seconds"] for row in result.history)
    return images / max(seconds, 1e-9)
