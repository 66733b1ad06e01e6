"""Checkpoints: one safetensors file holds the weights (loadable as they are), the training
state needed to resume exactly (optimizer, scheduler, EMA, RNG), and JSON metadata (spec,
classes, normalisation, epoch, metrics: a ``CheckpointMeta``, see ``checkpoint_meta.py``).
Written atomically: a crash leaves the last good one. ``save_checkpoint`` writes one,
``load_checkpoint`` reads one (opening the file once), ``blueprint`` is the one way from a
checkpoint to a network.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reslab import memory
from reslab.errors import ReslabError, WeightsError
from reslab.limits import MAX_IMAGE_SIDE, MAX_UNITS
from reslab.models.weights import (
    TRAIN_STATE_PREFIX,
    read_metadata,
    read_safetensors,
    save_weights,
    state_dict_mismatch,
    weights_of,
)
from reslab.paths import expand, is_folder, printable, regular_file
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.run_folder import RunFolder

_TENSOR = "__tensor__"


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    meta: CheckpointMeta
    train_state: dict[str, Any] | None  # None in a weights-only file


def save_checkpoint(
    path: str | os.PathLike,
    weights: dict[str, torch.Tensor],
    meta: CheckpointMeta | dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write weights + metadata (+ the nested ``train_state``, tensors and all) atomically.
    ``meta`` is a CheckpointMeta; a plain dict is written as it is (tests craft damaged
    files so)."""
    tensors = dict(weights)
    header = meta.to_dict() if isinstance(meta, CheckpointMeta) else dict(meta)
    if train_state is not None:
        header["train_state"] = _flatten(train_state, TRAIN_STATE_PREFIX, tensors)
    return save_weights(tensors, path, header)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """A checkpoint's weights, checked metadata and training state, from one reading of the
    file (header first, bounded; then the tensors it lists)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path} is not a reslab checkpoint (.safetensors expected)")
    tensors, header = read_safetensors(path)
    structure = header.pop("train_state", None)
    meta = CheckpointMeta.from_dict(header, path)
    train_state = None
    if structure is not None:
        try:
            train_state = _unflatten(structure, tensors)
        except (TypeError, ValueError, LookupError, RecursionError) as error:  # damaged, edited
            raise WeightsError(f"{path}: its training state is damaged ({type(error).__name__}: "
                               f"{error}); it cannot be resumed: start from its weights") from None
    return Checkpoint(weights_of(tensors, path), meta, train_state)


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
            raise LookupError(f"no tensor {obj[_TENSOR]!r}")
        return tensors[obj[_TENSOR]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def read_checkpoint_meta(path: str | os.PathLike) -> CheckpointMeta:
    """A checkpoint's checked metadata from its header alone, no tensor read."""
    header = read_metadata(path)
    header.pop("train_state", None)
    return CheckpointMeta.from_dict(header, path)


def model_from_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint (or model folder) describes and load its weights (eval
    mode)."""
    return open_checkpoint(path).load()


def open_checkpoint(path: str | os.PathLike) -> Blueprint:
    """A checkpoint file or model folder read and checked (``blueprint``), nothing built."""
    if is_folder(Path(path)):  # a timm / Hugging Face model folder
        from reslab.runtime.model_folder import read_model_folder

        weights, header = read_model_folder(Path(path))
        meta = CheckpointMeta.from_dict(header, path)
    else:
        checkpoint = load_checkpoint(path)
        weights, meta = checkpoint.weights, checkpoint.meta
    return blueprint(path, meta, weights)


@dataclass
class Blueprint:
    """The network a checkpoint's metadata describes, checked against its weights on the meta
    device and against this machine's memory: ``skeleton`` (meta tensors, shapes only) answers
    questions about it, ``build`` makes it for real."""

    path: Path
    meta: CheckpointMeta
    weights: dict[str, torch.Tensor]
    spec: Any  # a ResNetSpec, or None for a zoo name
    skeleton: torch.nn.Module

    def build(self, num_classes: int | None = None,
              in_channels: int | None = None) -> torch.nn.Module:
        """The network with fresh weights; another head or input channels when asked (a
        fine-tuning run's), the new network bounded as the checkpoint's was."""
        from reslab.models import build
        from reslab.models.zoo import create_model

        changes = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
                   if v is not None}
        from reslab.memory import MemoryBudgetError

        try:
            if self.spec is not None:
                spec = self.spec.replace(**changes)
                if changes:
                    check_spec_parameters(spec, f"the network of {printable(self.path)}",
                                          "choose a smaller model")
                return build(spec)
            return create_model(self.meta.model, **({"num_classes": self.meta.num_classes,
                                                     "in_channels": self.meta.in_channels}
                                                    | changes))
        except (WeightsError, MemoryBudgetError):
            raise
        except (ReslabError, TypeError, ValueError) as error:
            raise WeightsError(f"{printable(self.path)}: its metadata describes no model reslab "
                               f"can build ({printable(error)})") from None

    def load(self) -> tuple[torch.nn.Module, CheckpointMeta]:
        """The network with the checkpoint's weights, in eval mode, and its metadata."""
        model = self.build()
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as error:
            raise WeightsError(f"{printable(self.path)}: weights do not match the model its "
                               f"metadata describes ({str(error).splitlines()[0]})") from None
        return model.eval(), self.meta


def blueprint(path: str | os.PathLike, meta: CheckpointMeta,
              weights: dict[str, torch.Tensor]) -> Blueprint:
    """The one way from checkpoint metadata to a network (eval, predict, export, summary,
    grow, --init-from and --resume all come here): its fields (checked when the record was
    read, ``CheckpointMeta.from_dict``), its spec's bounds, the parameters it asks for against
    the numbers the file holds and the memory this machine has, then the network on the meta
    device against the file's names, shapes, input size and classes. Anything wrong is a
    WeightsError naming the file before a byte is allocated."""
    from reslab.models import build
    from reslab.models.zoo import create_model

    path = Path(path)
    spec = checked_spec(path, meta, weights)

    # built on the meta device first: a header describing a huge network allocates nothing
    # before its tensors are found not to fit it
    try:
        with torch.device("meta"):
            skeleton = (build(spec) if spec is not None else
                        create_model(meta.model, num_classes=meta.num_classes,
                                     in_channels=meta.in_channels)).eval()
    except (ReslabError, TypeError, ValueError) as error:
        raise WeightsError(f"{printable(path)}: its metadata describes no model reslab can "
                           f"build ({printable(error)})") from None
    if problems := state_dict_mismatch(weights, skeleton.state_dict()):
        raise WeightsError(f"{printable(path)}: weights do not match the model its metadata "
                           f"describes ({printable(problems)}); the file is damaged or was "
                           "edited")
    try:  # shapes only, on the meta device: predict and export feed this size
        outputs = skeleton(torch.empty(1, *meta.input_size, device="meta")).shape
    except RuntimeError as error:
        raise WeightsError(f"{printable(path)}: metadata input_size {list(meta.input_size)} does "
                           f"not fit the model ({str(error).splitlines()[0][:160]}); the file "
                           "is damaged or was edited") from None
    if outputs != (1, len(meta.classes)):
        head = "" if getattr(spec, "num_classes", 1) else " (a feature extractor, no head)"
        raise WeightsError(f"{printable(path)}: metadata names {len(meta.classes)} classes "
                           f"but the model has {math.prod(outputs[1:])} outputs{head}; the file "
                           "is damaged or was edited")
    memory.require(memory.parameter_bytes(skeleton), f"the network of {printable(path)}",
                   "use a machine with more memory")
    return Blueprint(path, meta, weights, spec, skeleton)


def checked_spec(path: str | os.PathLike, meta: CheckpointMeta,
                  weights: dict[str, torch.Tensor]):
    """The metadata's spec (None for a zoo name), refused before anything is built when it
    describes more units or parameters than the limits allow or than the file holds."""
    from reslab.models.spec import ResNetSpec

    if meta.spec is None:
        return None
    try:
        spec = ResNetSpec.from_dict(meta.spec)
    except (ReslabError, TypeError, ValueError) as error:
        raise WeightsError(f"{printable(path)}: its metadata describes no model reslab can build "
                           f"({printable(error)})") from None
    if sum(spec.depths) > MAX_UNITS or spec.input_size > MAX_IMAGE_SIDE:
        raise WeightsError(f"{printable(path)}: its spec asks for {sum(spec.depths):,} units and "
                           f"input side {spec.input_size} (limits {MAX_UNITS:,} and "
                           f"{MAX_IMAGE_SIDE}); the file is damaged or was edited")
    # far more than the file holds is refused unbuilt; a near miss is left to the key-by-key
    # comparison on the meta device, which names the keys
    held = sum(t.numel() for t in weights.values())
    if (needed := fewest_parameters(spec)) > 10 * held:
        raise WeightsError(f"{printable(path)}: its spec describes a network of at least "
                           f"{needed:,} parameters but the file holds {held:,} numbers; the file "
                           "is damaged or was edited")
    return spec


def fewest_parameters(spec) -> int:
    """A lower bound on the parameters of ``build(spec)``, computed without building it: the
    weights of each unit's convolutions and of the classifier (a unit kind registered from
    outside counts one)."""
    from reslab.models.spec import Block

    def unit(c_in: int, width: int) -> int:
        if spec.unit != "residual":
            return 1
        if spec.block is Block.BASIC:
            return 9 * (c_in * width + width * width) // spec.groups
        inner = width * spec.width_per_group // 64 * spec.groups
        return c_in * inner + 9 * inner * inner // spec.groups + inner * width * spec.expansion

    total = spec.num_features * spec.num_classes
    channels = spec.stem_width
    for depth, width in zip(spec.depths, spec.widths, strict=True):
        total += unit(channels, width) + (depth - 1) * unit(width * spec.expansion, width)
        channels = width * spec.expansion
    return total


def check_spec_parameters(spec, what: str, fix: str, copies: int = 1) -> None:
    """Refuse a spec whose parameters alone (a lower bound, computed without building it),
    ``copies`` times over, pass the budget: checked before a network is built at all."""
    memory.require(4 * copies * fewest_parameters(spec), what, fix)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, a run directory's best checkpoint, or a timm / Hugging Face model
    folder (``config.json`` beside ``model.safetensors``), returned as the folder."""
    from reslab.runtime.model_folder import is_model_folder

    path = expand(path, "checkpoint")
    run = RunFolder(path)
    if path.is_dir() and not run.checkpoints.is_dir() and is_model_folder(path):
        return path
    if path.is_dir():
        for candidate in (run.best, run.last):
            if candidate.exists():
                return candidate
        raise WeightsError(f"{printable(path)} holds no checkpoints/best.safetensors and no "
                           "config.json with model.safetensors: is it a run directory or a "
                           "model folder?")
    if not path.exists():
        raise WeightsError(f"no checkpoint at {printable(path)}: give a .safetensors file, a "
                           "run directory or a model folder")
    return regular_file(path, "checkpoint")
