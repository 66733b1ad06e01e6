"""Using a trained model: evaluate it, predict image files; ONNX export is ``reslab.export``,
deepening a checkpoint (``reslab grow``) is ``reslab.grow``."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reslab import memory
from reslab.data import load_dataset
from reslab.data.folder import decode_image, walk_images
from reslab.data.loader import BatchLoader
from reslab.errors import ConfigError, ReslabError, WeightsError
from reslab.inference import InferenceModel
from reslab.limits import MAX_PREDICT_IMAGES
from reslab.paths import (
    is_folder,
    printable,
    read_own_file,
    regular_file,
)
from reslab.runtime.checkpoint import model_from_checkpoint, resolve_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.evaluate import EvalResult, evaluate, predict_proba
from reslab.runtime.run_folder import RunFolder

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, data: str | None = None, *, split: str = "test",
    data_dir: str | None = None, batch_size: int = 256,
) -> tuple[EvalResult, CheckpointMeta]:
    """Accuracy and confusion matrix of a checkpoint (or run directory) on a data split."""
    model, meta = _inference_model(checkpoint)
    return evaluate_loaded(model, meta, checkpoint, data, split=split, data_dir=data_dir,
                           batch_size=batch_size), meta


def evaluate_loaded(
    model: torch.nn.Module, meta: CheckpointMeta, checkpoint: str | os.PathLike,
    data: str | None = None, *, split: str = "test", data_dir: str | None = None,
    batch_size: int = 256,
) -> EvalResult:
    """``evaluate_checkpoint`` for a model already loaded from ``checkpoint`` (with its
    metadata ``meta``): the data set's classes must be the checkpoint's, and its images are
    resized and normalised as the run's were. Without ``data_dir``, the run's own (its
    config.json's ``data_dir``) where the data is the run's."""
    config = meta.config or {}
    run = _run_config(Path(checkpoint))
    name = data or _trained_on(checkpoint, meta, run)
    if data_dir is None and run.get("data") == name:
        data_dir = run.get("data_dir")
    dataset = load_dataset(name, data_dir,
                           val_size=config.get("val_size"), seed=config.get("seed", 0),
                           image_size=config.get("image_size"), channels=config.get("channels"))
    if tuple(dataset.classes) != meta.classes:
        raise ConfigError(f"the checkpoint was trained on classes {list(meta.classes[:4])}..., "
                          f"but {dataset.name} has {list(dataset.classes)[:4]}...")
    size = meta.input_size[1]
    batch_size = batch_that_fits(model, meta, batch_size, f"eval of {printable(checkpoint)}")
    loader = BatchLoader(dataset.split(split), batch_size, train=False, mean=meta.mean,
                         std=meta.std, resize=size if size != dataset.image_shape[1] else None)
    return evaluate(model, loader, len(meta.classes), tta_flip=meta.tta_flip,
                    tta_shift=meta.tta_shift)


def batch_that_fits(model: torch.nn.Module, meta: CheckpointMeta, batch_size: int,
                    what: str) -> int:
    """``batch_size``, lowered (with a note) to what this machine's memory holds at the
    checkpoint's input size: each image's input, its test-time views and the network's largest
    activations; refused when not even one image fits."""
    shape = meta.input_size
    views = (2 if meta.tta_flip else 1) * (3 if meta.tta_shift else 1)
    per_image = (memory.inference_per_image(getattr(model, "net", model), shape)
                 + (2 * views + 1) * 4 * math.prod(shape))
    fits = memory.fitting_batch(per_image, 0, batch_size, f"{what} at {'x'.join(map(str, shape))}",
                                "use a machine with more memory")
    if fits < batch_size:
        log.warning("batch lowered from %d to %d: %s images of %s each need ~%s", batch_size,
                    fits, batch_size, "x".join(map(str, shape)),
                    memory.format_bytes(per_image * batch_size))
    return fits


def _trained_on(checkpoint: str | os.PathLike, meta: CheckpointMeta,
                run: dict[str, Any]) -> str:
    """The data set a checkpoint was trained on: a built-in one, or the folder its run's own
    config (``run``) names. A checkpoint alone never chooses a folder for reslab to read."""
    from reslab.data import dataset_names

    if meta.source == "model-folder" and not meta.data:
        raise ConfigError(f"{printable(checkpoint)} is a model folder that names no data set it "
                          "was trained on: give the data with --data")
    name = meta.data or "fashion-mnist"
    if name not in dataset_names() and name != run.get("data"):
        raise ConfigError(f"{printable(checkpoint)} was trained on {printable(name)!r}, not a "
                          "built-in data set; a checkpoint does not choose what reslab reads: "
                          "give the data with --data")
    return name


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """The training config of the run whose checkpoints/ folder holds ``checkpoint`` (or of
    the run directory ``checkpoint``), from its config.json; {} where there is none."""
    run = RunFolder(checkpoint)
    if not run.checkpoints.is_dir():
        run = RunFolder.holding(checkpoint)
        if run is None:
            return {}
    try:  # a config.json is a few kB; anything else put in its place is not read
        found = json.loads(read_own_file(run.config, run.CONFIG, 1 << 20))["config"]
    except (OSError, ValueError, LookupError, TypeError, ConfigError):
        return {}
    return found if isinstance(found, dict) else {}


def _inference_model(checkpoint: str | os.PathLike) -> tuple[InferenceModel, CheckpointMeta]:
    """A checkpoint's model made fast, in the precision its run validated in, so that eval
    reproduces the run's own accuracy."""
    model, meta = model_from_checkpoint(resolve_checkpoint(checkpoint))
    return inference_model(model, meta), meta


def inference_model(model: torch.nn.Module, meta: CheckpointMeta) -> InferenceModel:
    """``model`` made fast, in the precision its run (metadata ``meta``) validated in."""
    return InferenceModel(model, precision=(meta.config or {}).get("precision", "auto"))


def probabilities(model: torch.nn.Module, meta: CheckpointMeta,
                  pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities of uint8 images ``(N, C, H, W)`` already at the checkpoint's input
    size: normalised with its mean/std, averaged over the views its run evaluated (TTA)."""
    mean = torch.tensor(meta.mean).view(-1, 1, 1)
    std = torch.tensor(meta.std).view(-1, 1, 1)
    x = (pixels.float() / 255 - mean) / std
    return predict_proba(model, x, meta.tta_flip, meta.tta_shift)


def top_classes(probs: torch.Tensor, classes: Sequence[str], top_k: int) -> list[tuple[str, float]]:
    """(class, probability) of one image's ``top_k`` most likely classes, most likely first."""
    values, indices = probs.topk(min(top_k, len(classes)))
    return [(classes[i], float(v)) for v, i in zip(values, indices, strict=True)]


def check_top_k(top_k: object) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be an integer >= 1, got {top_k!r}")


@dataclass
class Prediction:
    path: str | None  # None for an image given in memory (reslab.load(...).predict)
    top: list[tuple[str, float]]  # (class, probability), most likely first
    error: str | None = None  # why the image could not be read

    @property
    def label(self) -> str | None:
        """The most likely class."""
        return self.top[0][0] if self.top else None

    @property
    def probability(self) -> float | None:
        return self.top[0][1] if self.top else None

    def __repr__(self) -> str:  # one line: the classes, and the file where there is one
        where = f"{printable(self.path)}: " if self.path is not None else ""
        what = self.error or ", ".join(f"{printable(c)} {p:.3f}" for c, p in self.top)
        return f"<Prediction {where}{what}>"


def predict_files(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], *, top_k: int = 3
) -> list[Prediction]:
    """Top-k classes for each image; an unreadable image gets an error, the rest still run."""
    return list(iter_predictions(checkpoint, images, top_k=top_k))


def iter_predictions(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], *, top_k: int = 3
) -> Iterator[Prediction]:
    """``predict_files`` one image at a time, each result as soon as it is made; a folder
    stands for the images under it, sorted (class subfolders included). The checkpoint is
    loaded and the folders listed before the first result."""
    check_top_k(top_k)
    model, meta = _inference_model(checkpoint)
    channels, size, _ = meta.input_size
    batch_that_fits(model, meta, 1, f"predict with {printable(checkpoint)}")
    for path, missing in image_paths(images):
        if missing:
            yield Prediction(str(path), [], missing)
            continue
        try:
            pixels = decode_image(regular_file(path, "image"), size, channels)
        except ReslabError as error:
            yield Prediction(str(path), [], str(error))
            continue
        probs = probabilities(model, meta, pixels.unsqueeze(0))[0]
        if not bool(probs.isfinite().all()):  # JSON has no NaN; a ranking of NaN means nothing
            raise WeightsError(f"{printable(checkpoint)}: the model's output for "
                               f"{printable(path)} is not a number (NaN or infinite weights: "
                               "the file is damaged or its run diverged); use another checkpoint")
        yield Prediction(str(path), top_classes(probs, meta.classes, top_k))


def image_paths(images: list[str | os.PathLike]) -> list[tuple[Path, str | None]]:
    """Each path given, or for a folder the image files under it, class subfolders and all
    (see ``folder_images``); with an error for a folder that holds none. Listed whole before
    the first prediction: a folder past the bound is refused before any output."""
    found: list[tuple[Path, str | None]] = []
    for given in images:
        path = Path(given)
        if not is_folder(path):
            found.append((path, None))
            continue
        inside = folder_images(path, MAX_PREDICT_IMAGES - len(found))
        found += [(p, None) for p in inside] or [(path, f"{path}: no image files in this folder "
                                                 "or its subfolders (such as .png or .jpg)")]
    return found


def folder_images(folder: Path, limit: int) -> list[Path]:
    """The image files under ``folder`` as the image-folder reader lists them
    (``walk_images``: links to folders not followed, links to files only inside ``folder``);
    more than ``limit`` is refused (ConfigError)."""
    return walk_images(folder, limit, too_many=f"more than {MAX_PREDICT_IMAGES:,} images to "
                       "predict with the ones before it, more than one predict takes; give a "
                       "smaller folder, or its subfolders in turn")
