"""Using a trained model: evaluate it, predict image files (ONNX export: ``reslab.export``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reslab.data import load_dataset
from reslab.data.folder import decode_image
from reslab.data.loader import BatchLoader
from reslab.errors import ConfigError, ReslabError
from reslab.inference import InferenceModel
from reslab.training.checkpoint import model_from_checkpoint, resolve_checkpoint
from reslab.training.evaluate import EvalResult, evaluate, predict_proba

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, data: str | None = None, *, split: str = "test",
    data_dir: str | None = None, batch_size: int = 256,
) -> tuple[EvalResult, dict[str, Any]]:
    """Accuracy and confusion matrix of a checkpoint (or run directory) on a data split."""
    model, meta = _inference_model(checkpoint)
    config = meta.get("config", {})
    dataset = load_dataset(data or meta.get("data") or "fashion-mnist", data_dir,
                           val_size=config.get("val_size"), seed=config.get("seed", 0),
                           image_size=config.get("image_size"), channels=config.get("channels"))
    if list(dataset.classes) != meta["classes"]:
        raise ConfigError(f"the checkpoint was trained on classes {meta['classes'][:4]}..., "
                          f"but {dataset.name} has {list(dataset.classes)[:4]}...")
    size = meta["input_size"][1]
    loader = BatchLoader(dataset.split(split), batch_size, train=False, mean=meta["mean"],
                         std=meta["std"], resize=size if size != dataset.image_shape[1] else None)
    result = evaluate(model, loader, len(meta["classes"]), tta_flip=meta.get("tta_flip", False))
    return result, meta


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
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    model, meta = _inference_model(checkpoint)
    channels, size, _ = meta["input_size"]
    mean = torch.tensor(meta["mean"]).view(-1, 1, 1)
    std = torch.tensor(meta["std"]).view(-1, 1, 1)
    classes = meta["classes"]
    results = []
    for path in images:
        try:
            pixels = decode_image(Path(path), size, channels)
        except ReslabError as error:
            results.append(Prediction(str(path), [], str(error)))
            continue
        x = ((pixels.float() / 255 - mean) / std).unsqueeze(0)
        probs = predict_proba(model, x, meta.get("tta_flip", False))[0]
        values, indices = probs.topk(min(top_k, len(classes)))
        results.append(Prediction(str(path), [(classes[i], float(v))
                                              for v, i in zip(values, indices, strict=True)]))
    return results
