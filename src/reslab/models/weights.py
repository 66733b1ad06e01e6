"""Weights in and out: torchvision/timm state-dict files, read without running their code.

``.pth``/``.pt``/``.bin`` files go through ``torch.load(weights_only=True)``, which refuses
pickled objects that could execute code; ``.safetensors`` files hold tensors only. Weights
are saved as safetensors, atomically, with reslab's metadata as JSON in the header.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from reslab.errors import WeightsError
from reslab.io import atomic_write_bytes
from reslab.paths import printable

log = logging.getLogger(__name__)

# Wrappers that training scripts put around the state dict, and prefixes that
# DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) add to every key.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")
METADATA_KEY = "reslab"
# Training checkpoints keep optimizer, EMA and RNG state beside the weights under this
# prefix ("/" never occurs in module names); loading weights skips them.
TRAIN_STATE_PREFIX = "_train/"


@dataclass
class LoadReport:
    """What ``load_weights`` had to change to make a file fit the model."""

    source: str
    dropped: list[str] = field(default_factory=list)  # file keys left out (an old classifier)
    adapted: list[str] = field(default_factory=list)  # keys converted to fit (input channels)

    def __str__(self) -> str:
        parts = [f"loaded weights from {self.source}"]
        if self.adapted:
            parts.append(f"adapted {', '.join(self.adapted)} to the model's input channels")
        if self.dropped:
            parts.append(f"dropped {', '.join(self.dropped)} (new classifier, freshly initialised)")
        return "; ".join(parts)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped and without ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}: check the path")
    if path.suffix == ".safetensors":
        try:
            state = safetensors.torch.load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(
                f"{path} is not a valid safetensors file ({error}); it may be truncated or "
                "tampered with: save it again"
            ) from None
    else:
        state = _torch_load_tensors_only(path)
    return weights_of(state, path)


def _check_zip_sizes(path: Path) -> None:
    """A zip-format ``.pth`` declares each entry's sizes in its directory: refuse one whose
    entries would inflate past the memory this machine has, or far past the file (torch.save
    stores tensors uncompressed, so a deflated storage of many times its size is a bomb),
    before torch.load inflates a byte of it."""
    import zipfile

    from reslab import memory

    if not zipfile.is_zipfile(path):
        return  # the legacy format: its sizes are the file's own
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({error})") from None
    size = path.stat().st_size
    declared = sum(e.file_size for e in entries)
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED and entry.file_size > 16 * max(
                entry.compress_size, 1 << 16):
            raise WeightsError(
                f"refusing to load {path}: its entry {entry.filename!r} inflates "
                f"{entry.compress_size:,} bytes to {entry.file_size:,} (torch.save never "
                "compresses tensors: a decompression bomb); re-save it with torch.save")
    memory.require(declared, f"loading {path} ({declared:,} bytes declared in a "
                   f"{size:,}-byte file)", "load it on a machine with more memory")


def _torch_load_tensors_only(path: Path) -> Any:
    _check_zip_sizes(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a page of advice; one line of it names the culprit
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
        reason = next((line for line in lines if re.search(r"GLOBAL|operand", line)),
                      lines[0] if lines else "")
        reason = reason.removeprefix("WeightsUnpickler error:").strip().split(". ")[0][:160]
        raise WeightsError(
            f"refusing to load {path}: it holds Python objects besides tensors, and "
            f"unpickling them could run code ({reason}); load only files you trust, "
            "converted to .safetensors"
        ) from None
    except Exception as error:  # a damaged pickle makes torch's unpickler raise almost anything
        raise WeightsError(
            f"{path} is not a readable PyTorch weights file ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:160] if str(error).strip() else 'truncated'})"
        ) from None


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(state, dict) and not _is_tensor_dict(state):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        raise WeightsError(
            f"{path} holds no state dict (a mapping of names to tensors): "
            "save the model's state_dict(), not the model or optimizer"
        )
    return state


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    def strip(key: str) -> str:
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        return key

    return {strip(k): v for k, v in state.items()}


def _module_name(model: nn.Module, target: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is target), None)


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor | None:
    """3 -> 1 channels by summing (a grey image gives what its RGB copy gave); 1 -> k by
    repeating and dividing by k (a k-channel copy of a grey image gives the same output)."""
    if weight.shape[1] == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return None


def load_weights(
    model: nn.Module, source: str | os.PathLike | dict[str, torch.Tensor], *, strict: bool = True
) -> LoadReport:
    """Load a file (or state dict) into ``model``, fitting the classifier and input conv.

    A classifier of another size is dropped, leaving the model's fresh one (fine-tuning);
    a first conv with 1 or 3 input channels is converted to the model's. Everything else
    must match exactly, or a ``WeightsError`` names the keys that do not.
    """
    if isinstance(source, dict):
        report, state = LoadReport("a state dict"), _strip_prefixes(dict(source))
    else:
        report, state = LoadReport(str(source)), read_state_dict(source)
    target = model.state_dict()

    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    conv_key = f"{_module_name(model, first_conv)}.weight" if first_conv is not None else None
    if conv_key in state and conv_key in target and state[conv_key].shape != target[conv_key].shape:
        adapted = _adapt_input_conv(state[conv_key], target[conv_key].shape[1])
        if adapted is not None and adapted.shape == target[conv_key].shape:
            state[conv_key] = adapted
            report.adapted.append(conv_key)

    get_classifier = getattr(model, "get_classifier", None)
    head = _module_name(model, get_classifier()) if get_classifier else None
    if head:
        for key in [k for k in state if k.startswith(head + ".")]:
            if key not in target or state[key].shape != target[key].shape:
                report.dropped.append(key)
                del state[key]

    fresh_head = f"{head}." if report.dropped else None  # the model's own new classifier
    if strict and (problems := state_dict_mismatch(state, target, fresh_head)):
        raise WeightsError(
            f"weights in {report.source} do not fit this model ({problems}); "
            "are they for another architecture?"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    log.debug("%s", report)  # callers say what matters of it (reslab train: one line each)
    return report


def state_dict_mismatch(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], fresh: str | None = None
) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``target`` (keys,
    shapes, integer vs float tensors), in a few words; "" if it fits. Keys under ``fresh``
    may be missing."""
    missing = [k for k in target if k not in state and not (fresh and k.startswith(fresh))]
    unexpected = [k for k in state if k not in target]
    common = [k for k in state if k in target]
    mismatched = [f"{k} (file {list(state[k].shape)}, model {list(target[k].shape)})"
                  for k in common if state[k].shape != target[k].shape]
    # load_state_dict would silently turn integers into floats (a tampered dtype)
    retyped = [f"{k} (file {state[k].dtype}, model {target[k].dtype})" for k in common
               if state[k].is_floating_point() != target[k].is_floating_point()]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("wrong shape", mismatched), ("wrong dtype", retyped)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    return "; ".join(problems)


def save_weights(
    model_or_state: nn.Module | dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a safetensors file atomically; ``metadata`` travels as JSON in its header."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    header = {METADATA_KEY: json.dumps(metadata or {}, sort_keys=True)}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """reslab's metadata from a safetensors file's header, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as error:  # RuntimeError: truncated file
        raise WeightsError(f"{path} is not a readable safetensors file ({error})") from None
    return _parse_metadata(header, path)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every tensor of a safetensors file (training state included) and its reslab metadata,
    from one opening of the file: the header is read and bounded first (as ``read_metadata``
    does), then the tensors it lists (as ``read_state_dict`` does)."""
    try:
        opened = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, RuntimeError) as error:  # RuntimeError: truncated file
        raise WeightsError(f"{path} is not a readable safetensors file ({error})") from None
    with opened as f:
        metadata = _parse_metadata(f.metadata() or {}, path)
        try:
            tensors = {key: f.get_tensor(key) for key in f.offset_keys()}
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(
                f"{path} is not a valid safetensors file ({error}); it may be truncated or "
                "tampered with: save it again"
            ) from None
    return tensors, metadata


def weights_of(tensors: dict[str, torch.Tensor], path: str | os.PathLike
               ) -> dict[str, torch.Tensor]:
    """The model's weights among a file's tensors (``read_state_dict``'s answer): the training
    state left out, ``module.`` prefixes removed."""
    state = _unwrap(tensors, Path(path))
    return _strip_prefixes({k: v for k, v in state.items() if not k.startswith(TRAIN_STATE_PREFIX)})


def _parse_metadata(header: dict[str, str], path: str | os.PathLike) -> dict[str, Any]:
    try:
        metadata = json.loads(header.get(METADATA_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
        metadata = None
    if not isinstance(metadata, dict):
        raise WeightsError(f"{path} has a corrupt reslab metadata header (not a JSON object); "
                           "save the file again")
    if isinstance(metadata.get("model"), str):  # printed, and copied into configs and ONNX
        metadata["model"] = printable(metadata["model"])  # files: no forged lines or colours
    return metadata
