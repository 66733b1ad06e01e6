"""``reslab.load``: a trained model, from a checkpoint or a run folder, that takes raw images
(files, Pillow images, uint8 arrays and tensors) and predicts and evaluates them exactly as
``reslab predict`` and ``reslab eval`` do: same decoding, resizing, normalisation and TTA."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from reslab.data.folder import decode_image, image_pixels
from reslab.deploy import (
    Prediction,
    check_top_k,
    evaluate_loaded,
    image_paths,
    inference_model,
    probabilities,
    top_classes,
)
from reslab.errors import ConfigError, CorruptDataError
from reslab.inference import InferenceModel
from reslab.paths import is_folder, printable, regular_file
from reslab.runtime.checkpoint import model_from_checkpoint, resolve_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.evaluate import EvalResult

_BATCH = 256  # images per forward pass in predict()


def load(path: str | os.PathLike) -> TrainedModel:
    """The model in a checkpoint (``.safetensors``) or a run folder (its best checkpoint)."""
    module, meta, source = _read(path)
    return TrainedModel(module, meta, source)


def _read(path: str | os.PathLike) -> tuple[nn.Module, CheckpointMeta, Path]:
    """(network, metadata, file read) for every kind of path ``load`` takes: the one place
    that tells them apart, so that a new kind of folder is added here."""
    checkpoint = resolve_checkpoint(path)
    module, meta = model_from_checkpoint(checkpoint)
    return module, meta, checkpoint


class TrainedModel:
    """A network with what it needs to classify raw images: its classes, normalisation,
    input size and the test-time augmentation its run evaluated with.

    ``predict`` takes raw images (uint8 pixels, or floats scaled to [0, 1]) and normalises them
    itself; ``model(x)`` (``forward``) takes input already normalised, as ``module`` does.
    A float image outside [0, 1] is refused by ``predict`` rather than guessed at.
    """

    def __init__(self, module: nn.Module, meta: CheckpointMeta, source: Path):
        self.module = module  # the torch network (eval mode, fp32): fine-tune or inspect it
        self.meta = meta  # the checkpoint's metadata, as read
        self.source = source
        self.name: str = meta.model
        self.classes: list[str] = list(meta.classes)
        self.mean: tuple[float, ...] = meta.mean
        self.std: tuple[float, ...] = meta.std
        self.input_size: tuple[int, int, int] = meta.input_size  # (C, H, W)
        self.tta_flip: bool = meta.tta_flip
        self.tta_shift: int = meta.tta_shift
        self._fast: tuple[tuple[list, list], InferenceModel] | None = None

    def __repr__(self) -> str:
        tta = [t for t, on in (("flip", self.tta_flip), (f"shift {self.tta_shift}",
                                                         self.tta_shift)) if on]
        return (f"TrainedModel {printable(self.name)}: {len(self.classes)} classes, input "
                f"{'x'.join(map(str, self.input_size))}, TTA {' + '.join(tta) or 'off'}\n"
                f"  from {printable(self.source)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of input already normalised with ``mean``/``std``: ``module(x)``."""
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            raise ConfigError(f"model(x) takes a float tensor already normalised with the "
                              f"model's mean/std, got {_kind(x)}; give raw images to predict()")
        return self.module(x)

    __call__ = forward

    def preprocess(self, images: Any) -> torch.Tensor:
        """Raw images as the normalised float batch ``(N, C, H, W)`` that ``forward`` takes."""
        _, pixels, _ = self._pixels(images)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (pixels.float() / 255 - mean) / std

    def predict(self, images: Any, *, top_k: int = 3) -> Prediction | list[Prediction]:
        """Top-k classes of raw images, as ``reslab predict`` gives them: one image gives one
        Prediction, a list, a folder or a batch (4-D) a list. Images: file paths, Pillow
        images, uint8 arrays ``(H, W)`` / ``(H, W, C)`` / ``(N, H, W, C)``, uint8 tensors
        ``(C, H, W)`` / ``(N, C, H, W)`` (floats in [0, 1] too), or a list of these."""
        check_top_k(top_k)
        items, pixels, single = self._pixels(images)
        model = self._inference_model()
        probs = torch.cat([probabilities(model, self.meta, pixels[i:i + _BATCH])
                           for i in range(0, len(pixels), _BATCH)]) if items else []
        found = [Prediction(str(item) if isinstance(item, str | os.PathLike) else None,
                            top_classes(p, self.classes, top_k))
                 for item, p in zip(items, probs, strict=True)]
        return found[0] if single else found

    def evaluate(self, data: str | None = None, *, split: str = "test",
                 data_dir: str | None = None, batch_size: int = 256) -> EvalResult:
        """Accuracy, loss and confusion matrix on a data set's split, as ``reslab eval``:
        by default the data set the run trained on (``result.per_class(model.classes)``)."""
        return evaluate_loaded(self._inference_model(), self.meta, self.source, data,
                               split=split, data_dir=data_dir, batch_size=batch_size)

    def _inference_model(self) -> InferenceModel:
        """The fast copy predict and eval use, made again when ``module``'s weights change
        (fine-tuned, loaded into): an in-place change bumps a tensor's version, a new tensor
        moves its storage, and an edit through ``.data`` (which does neither) its sum."""
        tensors = list(self.module.state_dict(keep_vars=True).values())
        key = [(t.data_ptr(), t._version) for t in tensors]
        sums = torch.stack([t.detach().double().sum() for t in tensors]).tolist()
        if self._fast is None or self._fast[0] != (key, sums):
            self._fast = ((key, sums), inference_model(self.module, self.meta))
        return self._fast[1]

    def _pixels(self, images: Any) -> tuple[list[Any], torch.Tensor, bool]:
        """The images one by one, as uint8 ``(N, C, H, W)`` at the input size, and whether
        one image was given (not a list, a folder or a batch)."""
        channels, size, _ = self.input_size
        single = not isinstance(images, list | tuple) and not _is_batch(images)
        items = _items(images)
        pixels = [self._one(item, i, channels, size) for i, item in enumerate(items)]
        if not pixels:
            return [], torch.empty((0, *self.input_size), dtype=torch.uint8), False
        return items, torch.stack(pixels), single

    @staticmethod
    def _one(item: Any, index: int, channels: int, size: int) -> torch.Tensor:
        if isinstance(item, str | os.PathLike):
            return decode_image(regular_file(item, "image"), size, channels)
        what = f"image {index} ({_kind(item)})"
        if not isinstance(item, Image.Image):
            item = Image.fromarray(_uint8_hwc(item, what))
        try:
            return image_pixels(item, size, channels)
        except (OSError, ValueError) as error:
            raise CorruptDataError(f"{what}: unreadable image ({error})") from None


def _items(images: Any) -> list[Any]:
    """The images one by one: a list's items, a batch's, a folder's image files."""
    if isinstance(images, list | tuple):
        return [one for item in images for one in _items(item)]
    if isinstance(images, str | os.PathLike):
        return [path for path, _ in image_paths([images])] if is_folder(Path(images)) else [images]
    if _is_batch(images):
        return list(images)
    return [images]


def _is_batch(images: Any) -> bool:
    return (isinstance(images, str | os.PathLike) and is_folder(Path(images))) or (
        isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 4)


def _uint8_hwc(image: Any, what: str) -> np.ndarray:
    """An array or tensor as the uint8 ``(H, W)`` or ``(H, W, C)`` array Pillow reads; floats
    are taken as pixels scaled to [0, 1], and anything else that is not 0...255 is refused."""
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:  # torch's images are (C, H, W)
            if image.shape[0] not in (1, 3, 4):
                raise ConfigError(f"{what}: a 3-D tensor must be (C, H, W) with C = 1, 3 or 4, "
                                  f"got {tuple(image.shape)}")
            image = image.permute(1, 2, 0)
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ConfigError(f"{what}: predict() takes file paths, Pillow images, numpy arrays or "
                          "torch tensors (or a list of them)")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise ConfigError(f"{what}: an array must be (H, W) or (H, W, C) with C = 1, 3 or 4, "
                          f"got {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype.kind not in "fiu":
        raise ConfigError(f"{what}: {image.dtype} pixels; give uint8 (0...255)")
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if image.dtype.kind == "f":
        if not (low >= 0 and high <= 1):  # also NaN
            raise ConfigError(
                f"{what}: float values in [{low:.3g}, {high:.3g}]; predict() takes raw images: "
                "uint8 pixels or floats scaled to [0, 1]; input already normalised with the "
                "model's mean/std goes to model(x)")
        return np.ascontiguousarray((image * 255).round().astype(np.uint8))
    if not (low >= 0 and high <= 255):
        raise ConfigError(f"{what}: integer values in [{low:g}, {high:g}]; predict() takes "
                          "8-bit pixels (0...255): give a 16-bit image as a file or Pillow image")
    return np.ascontiguousarray(image.astype(np.uint8))


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"{type(value).__name__} {str(value.dtype).removeprefix('torch.')} " \
               f"{tuple(value.shape)}"
    return type(value).__name__
