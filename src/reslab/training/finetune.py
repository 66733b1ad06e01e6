"""Starting a run from weights: the model a weights file calls for, its normalisation, which
parts stay frozen, and which layer is the head (for a lower backbone learning rate)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from reslab.data import Dataset
from reslab.errors import ConfigError
from reslab.models import create_model, load_weights, pretrained_cfg
from reslab.models.weights import read_safetensors, weights_of
from reslab.paths import expand, is_folder, printable
from reslab.runtime.checkpoint import blueprint, resolve_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.model_folder import is_model_folder, read_model_folder
from reslab.training.config import TrainConfig

log = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Start:
    """A model ready to train, and what to tell the user about how it was made."""

    model: nn.Module
    data: Dataset  # with the normalisation the model is trained under
    config: TrainConfig  # with the model name a checkpoint brought
    notes: list[str] = field(default_factory=list)
    frozen: tuple[str, ...] = ()


def reslab_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta] | None:
    """The weights and checked metadata of a reslab checkpoint, from one reading of the file
    (its training state, not needed to start from its weights, left unread); None for a plain
    state-dict file."""
    if Path(path).suffix != ".safetensors":
        return None
    tensors, header = read_safetensors(path)
    if "model" not in header:
        return None
    header.pop("train_state", None)
    return weights_of(tensors, path), CheckpointMeta.from_dict(header, path)


def start_from_weights(config: TrainConfig, data: Dataset, model_given: bool) -> Start:
    """The model of a run with ``init_from``: a reslab checkpoint brings its spec (a grown
    depth, its channels) and normalisation; a torchvision/timm state dict needs ``--model``.
    A different class count swaps the head, a different channel count adapts the first conv."""
    path = expand(config.init_from, "--init-from")
    folder = is_model_folder(path)
    if is_folder(path) and not folder:  # a run folder: its best checkpoint, as eval takes it
        path = resolve_checkpoint(path)
    if not path.is_file() and not folder:
        raise ConfigError(f"--init-from {printable(path)}: no such file or model folder; give "
                          "a weights file (.pth, .safetensors), a reslab checkpoint, a run "
                          "folder or a folder of config.json and model.safetensors")
    if folder:
        weights, header = read_model_folder(path)
        meta = CheckpointMeta.from_dict(header, path)
    else:
        weights, meta = reslab_checkpoint(path) or (None, None)
    channels, classes = data.image_shape[0], len(data.classes)
    notes = []
    if meta is not None:
        kind = "model folder" if folder else "checkpoint"
        if model_given and config.model != meta.model:
            raise ConfigError(f"--model {config.model} disagrees with --init-from "
                              f"{printable(path)}, a {kind} of {meta.model}: leave --model "
                              "out")
        config = config.replace(model=meta.model)
        model = _from_spec(meta, path, weights, classes, channels)
        source = (f"timm model folder of {meta.model}" if folder
                  else f"reslab checkpoint of {meta.model}")
        if meta.spec is not None and "depths" in meta.spec:
            source += f", depths {meta.spec['depths']}"
        own = meta.mean, meta.std
    else:
        if not model_given:
            raise ConfigError(f"--init-from {path} is a plain state dict: give --model NAME, "
                              "the architecture it was saved from")
        model = create_model(config.model, num_classes=classes, in_channels=channels)
        source = f"state dict for {config.model}"
        own = _pretrained_normalisation(config.model)
    report = load_weights(model, weights if meta is not None else path)
    notes.append(f"init: weights from {path} ({source})")
    if report.dropped:
        notes.append(f"head: replaced for {classes} classes ({', '.join(report.dropped)} "
                     "dropped, freshly initialised)")
    if report.adapted:
        notes.append(f"first conv: adapted to {channels} input channel(s) "
                     f"({', '.join(report.adapted)})")
    data, note = _normalisation(config.normalize, own, data)
    notes.append(note)
    return Start(model, data, config, notes)


def _from_spec(meta: CheckpointMeta, path: Path, weights: dict, classes: int,
               channels: int) -> nn.Module:
    """The checkpoint's network (checked and bounded by ``blueprint``) with the run's head
    and input channels."""
    return blueprint(path, meta, weights).build(num_classes=classes, in_channels=channels)


def _pretrained_normalisation(name: str) -> tuple[tuple, tuple] | None:
    """The mean/std a zoo model's published weights were trained with, where known."""
    cfg = pretrained_cfg(name)
    return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None


def _normalisation(choice: str, own: tuple[tuple, tuple] | None,
                   data: Dataset) -> tuple[Dataset, str]:
    """``data`` with the mean/std the run normalises with, and a line that says which."""
    if choice == "data" or (choice == "auto" and own is None):
        why = "asked for" if choice == "data" else "the weights' own is not known"
        return data, f"normalisation: the data's own mean/std ({why})"
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if choice == "imagenet" else own
    name = "ImageNet's" if choice == "imagenet" else "the weights' own"
    channels = data.image_shape[0]
    if len(mean) != channels:  # grey data on RGB weights: one value, the channels' average
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    rounded = ", ".join(f"{m:.3f}/{s:.3f}" for m, s in zip(mean, std, strict=True))
    return (dataclasses.replace(data, mean=tuple(mean), std=tuple(std)),
            f"normalisation: {name} mean/std ({rounded})")


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The parts ``--freeze`` names, in order, as ``reslab summary`` names its rows: stem,
    each stage, then each piece of the head (norm, final_act, avgpool, the classifier: fc)."""
    stages = list(getattr(model, "stage_names", []))
    if not stages:
        raise ConfigError(f"{type(model).__name__} has no stages to freeze")
    top = stages[0].split(".")[0]
    children = list(model.named_children())
    names = [n for n, _ in children]
    first = names.index(top)
    last = names.index(stages[-1].split(".")[0])
    parts = {"stem": [m for _, m in children[:first]]}
    parts |= {s: [model.get_submodule(s)] for s in stages}
    parts |= {n: [m] for n, m in children[last + 1:] if not isinstance(m, nn.Identity)}
    return parts


def _resolve_part(name: str, parts: dict[str, list[nn.Module]], stages: int) -> list[str]:
    """The parts a name stands for: itself, or for ``head`` (the name before parts were
    named as summary names them) every piece after the last stage."""
    if name in parts:
        return [name]
    if name == "head":
        return list(parts)[1 + stages:]
    raise ConfigError(f"cannot freeze {name!r}: the model has the parts {', '.join(parts)} "
                      "(as `reslab summary` names them)")


def freeze(model: nn.Module, names: tuple[str, ...], until: str | None) -> tuple[str, ...]:
    """Stop the named parts learning: no gradients, no optimizer step, and (in the loop) no
    change to their BN statistics. Returns the parts frozen, in order."""
    if not names and until is None:
        return ()
    parts = model_parts(model)
    order = list(parts)
    stages = len(model.stage_names)
    chosen = {p for name in names for p in _resolve_part(name, parts, stages)}
    if until is not None:
        chosen |= set(order[:order.index(_resolve_part(until, parts, stages)[0])])
    for name in chosen:
        for module in parts[name]:
            for p in module.parameters():
                p.requires_grad_(False)
            for m in module.modules():
                m.reslab_frozen = True  # read by train_mode: BN statistics stay as they are
    return tuple(n for n in order if n in chosen)


def classifier(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)
    return get() if get is not None else None


def train_mode(model: nn.Module) -> None:
    """``model.train()`` for an epoch, but frozen parts (``freeze``) keep their BN statistics:
    they stay in eval mode."""
    model.train()
    for module in model.modules():
        if getattr(module, "reslab_frozen", False):
            module.eval()
