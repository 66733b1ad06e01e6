"""Checkpoints: one safetensors file holds the weights (loadable as they are), the training
state needed to resume exactly (optimizer, scheduler, EMA, RNG), and JSON metadata (spec,
classes, normalisation, epoch, metrics). Written atomically: a crash leaves the last good one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from reslab.errors import WeightsError
from reslab.models.weights import (
    TRAIN_STATE_PREFIX,
    read_metadata,
    read_state_dict,
    save_weights,
)

_TENSOR = "__tensor__"


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    train_state: dict[str, Any] | None  # None in a weights-only file


def save_checkpoint(
    path: str | os.PathLike,
    weights: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write weights + metadata (+ the nested ``train_state``, tensors and all) atomically."""
    tensors = dict(weights)
    meta = dict(metadata)
    if train_state is not None:
        meta["train_state"] = _flatten(train_state, TRAIN_STATE_PREFIX, tensors)
    return save_weights(tensors, path, meta)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path} is not a reslab checkpoint (.safetensors expected)")
    metadata = read_metadata(path)
    structure = metadata.pop("train_state", None)
    train_state = None
    if structure is not None:
        tensors = safetensors.torch.load_file(path)
        train_state = _unflatten(structure, tensors)
    return Checkpoint(read_state_dict(path), metadata, train_state)


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-ready copy of ``obj`` whose tensors are moved into ``tensors`` by key."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        # JSON keys are strings: remember int keys (optimizer state is indexed by int)
        return {"__dict__": [[k, _flatten(v, f"{prefix}{k}/", tensors)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_flatten(v, f"{prefix}{i}/", tensors) for i, v in enumerate(obj)]
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and _TENSOR in obj:
        if obj[_TENSOR] not in tensors:
            raise WeightsError(f"checkpoint is missing the tensor {obj[_TENSOR]!r}: it is damaged")
        return tensors[obj[_TENSOR]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def model_from_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    from reslab.models import build
    from reslab.models.spec import ResNetSpec
    from reslab.models.zoo import create_model

    checkpoint = load_checkpoint(path)
    meta = checkpoint.metadata
    if "model" not in meta:
        raise WeightsError(f"{path} has no reslab metadata: load it with load_weights instead")
    if meta.get("spec"):
        model = build(ResNetSpec.from_dict(meta["spec"]))
    else:
        model = create_model(meta["model"], num_classes=meta["num_classes"],
                             in_channels=meta["in_channels"])
    try:
        model.load_state_dict(checkpoint.weights)
    except RuntimeError as error:
        raise WeightsError(f"{path}: weights do not match the model its metadata describes "
                           f"({str(error).splitlines()[0]})") from None
    return model.eval(), meta


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory's best checkpoint."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.safetensors",
                          path / "checkpoints" / "last.safetensors"):
            if candidate.exists():
                return candidate
        raise WeightsError(f"{path} holds no checkpoints/best.safetensors: is it a run directory?")
    if not path.exists():
        raise WeightsError(f"no checkpoint at {path}: give a .safetensors file or a run directory")
    return path
