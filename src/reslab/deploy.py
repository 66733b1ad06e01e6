"""Using a trained model: evaluate it, predict image files, deepen it (``reslab grow``);
ONNX export is ``reslab.export``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reslab.data import load_dataset
from reslab.data.folder import decode_image, image_suffixes
from reslab.data.loader import BatchLoader
from reslab.errors import ConfigError, ReslabError
from reslab.inference import InferenceModel
from reslab.models import ResNet, grow
from reslab.paths import check_output, is_folder, printable, regular_file, run_files
from reslab.training.checkpoint import (
    model_from_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from reslab.training.evaluate import EvalResult, evaluate, predict_proba

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, data: str | None = None, *, split: str = "test",
    data_dir: str | None = None, batch_size: int = 256,
) -> tuple[EvalResult, dict[str, Any]]:
    """Accuracy and confusion matrix of a checkpoint (or run directory) on a data split."""
    model, meta = _inference_model(checkpoint)
    config = meta.get("config", {})
    dataset = load_dataset(data or _trained_on(checkpoint, meta), data_dir,
                           val_size=config.get("val_size"), seed=config.get("seed", 0),
                           image_size=config.get("image_size"), channels=config.get("channels"))
    if list(dataset.classes) != meta["classes"]:
        raise ConfigError(f"the checkpoint was trained on classes {meta['classes'][:4]}..., "
                          f"but {dataset.name} has {list(dataset.classes)[:4]}...")
    size = meta["input_size"][1]
    loader = BatchLoader(dataset.split(split), batch_size, train=False, mean=meta["mean"],
                         std=meta["std"], resize=size if size != dataset.image_shape[1] else None)
    result = evaluate(model, loader, len(meta["classes"]), tta_flip=meta.get("tta_flip", False),
                      tta_shift=meta.get("tta_shift", 0))
    return result, meta


def _trained_on(checkpoint: str | os.PathLike, meta: dict[str, Any]) -> str:
    """The data set a checkpoint was trained on: a built-in one, or the folder its run's own
    config.json names. A checkpoint alone never chooses a folder for reslab to read."""
    from reslab.data import dataset_names

    if meta.get("source") == "model-folder" and not meta.get("data"):
        raise ConfigError(f"{printable(checkpoint)} is a model folder that names no data set it "
                          "was trained on: give the data with --data")
    name = meta.get("data") or "fashion-mnist"
    if name not in dataset_names() and name != _run_data(Path(checkpoint)):
        raise ConfigError(f"{printable(checkpoint)} was trained on {printable(name)!r}, not a "
                          "built-in data set; a checkpoint does not choose what reslab reads: "
                          "give the data with --data")
    return name


def _run_data(checkpoint: Path) -> str | None:
    """The data of the run whose checkpoints/ folder holds ``checkpoint``, from its config.json."""
    config = checkpoint.parent.parent / "config.json"
    if checkpoint.parent.name != "checkpoints" or not config.is_file() \
            or config.stat().st_size > 1 << 20:  # a config.json is a few kB
        return None
    try:
        return json.loads(config.read_text())["config"]["data"]
    except (OSError, ValueError, LookupError, TypeError):
        return None


def _inference_model(checkpoint: str | os.PathLike) -> tuple[InferenceModel, dict[str, Any]]:
    """A checkpoint's model made fast, in the precision its run validated in, so that eval
    reproduces the run's own accuracy."""
    model, meta = model_from_checkpoint(resolve_checkpoint(checkpoint))
    precision = meta.get("config", {}).get("precision", "auto")
    return InferenceModel(model, precision=precision), meta


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), most likely first
    error: str | None = None  # why the image could not be read


def predict_files(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], *, top_k: int = 3
) -> list[Prediction]:
    """Top-k classes for each image; an unreadable image gets an error, the rest still run."""
    return list(iter_predictions(checkpoint, images, top_k=top_k))


def iter_predictions(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], *, top_k: int = 3
) -> Iterator[Prediction]:
    """``predict_files`` one image at a time, each result as soon as it is made; a folder
    stands for the images in it, sorted. The checkpoint is loaded before the first result."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be an integer >= 1, got {top_k!r}")
    model, meta = _inference_model(checkpoint)
    channels, size, _ = meta["input_size"]
    mean = torch.tensor(meta["mean"]).view(-1, 1, 1)
    std = torch.tensor(meta["std"]).view(-1, 1, 1)
    classes = meta["classes"]
    for path in _image_paths(images):
        try:
            pixels = decode_image(regular_file(path, "image"), size, channels)
        except ReslabError as error:
            yield Prediction(str(path), [], str(error))
            continue
        x = ((pixels.float() / 255 - mean) / std).unsqueeze(0)
        probs = predict_proba(model, x, meta.get("tta_flip", False),
                              meta.get("tta_shift", 0))[0]
        values, indices = probs.topk(min(top_k, len(classes)))
        yield Prediction(str(path), [(classes[i], float(v))
                                     for v, i in zip(values, indices, strict=True)])


def _image_paths(images: list[str | os.PathLike]) -> Iterator[Path]:
    """Each path given; a folder's own image files (sorted, hidden ones left out) instead of it."""
    suffixes = image_suffixes()
    for given in images:
        path = Path(given)
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes
                       and not p.name.startswith(".")) if is_folder(path) else []
        yield from found or [path]  # a folder without images is refused as not a file


def grow_checkpoint(checkpoint: str | os.PathLike, stage: int, blocks: int,
                    out: str | os.PathLike, shortcut: bool = True) -> tuple[Path, ResNet]:
    """``grow`` a checkpoint's network and write the result as a weights-only checkpoint
    whose metadata is the old one with the new spec (``reslab grow``)."""
    source = resolve_checkpoint(checkpoint)
    out = check_output(out, "--out", suffix=".safetensors", inputs=run_files(source))
    model, meta = model_from_checkpoint(source)
    if not isinstance(model, ResNet):
        raise ConfigError(f"{checkpoint} holds a {type(model).__name__}, not a ResNet")
    if shortcut == model.spec.is_plain:
        kind = "residual" if shortcut else "plain"
        other = "plain" if shortcut else "residual"
        raise ConfigError(
            f"cannot add {kind} units to a {other} network in a checkpoint: the result is no "
            f"ResNetSpec, so it could not be rebuilt from the file; use "
            f"reslab.models.grow(model, ..., shortcut={shortcut}) in Python")
    grown = grow(model, stage, blocks, shortcut)
    save_checkpoint(out, grown.state_dict(), meta | {"spec": grown.spec.to_dict()})
    return out, grown
