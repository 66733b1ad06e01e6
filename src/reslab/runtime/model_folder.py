"""timm / Hugging Face model folders read as checkpoints: ``config.json`` (timm's
``architecture``, ``num_classes``, ``label_names``, ``model_args``, ``pretrained_cfg``) beside
the weights, as reslab's ``export --folder`` and timm's ``save_for_hf`` write them, turned
into the weights and metadata a reslab checkpoint holds. Writing them is ``reslab.hub``'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from reslab.errors import WeightsError
from reslab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_NAMES
from reslab.models.weights import read_state_dict
from reslab.models.zoo import SPECS, TIMM_FAMILY
from reslab.paths import is_folder, printable

# torchvision's names (timm has them, with the same keys), then timm's own family
TIMM_NAMES = TORCHVISION_NAMES + tuple(n for n in TIMM_FAMILY if n not in TORCHVISION_NAMES)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
MAX_CONFIG_BYTES = 8 << 20  # label names of 21k classes fit in about 1 MB
_MODEL_ARGS = {"layers", "channels", "drop_path_rate", "in_chans", "num_classes"}


def is_model_folder(path: Path) -> bool:
    """A folder holding ``config.json`` and one of the weight files timm looks for."""
    return (is_folder(path) and (path / "config.json").is_file()
            and any((path / name).is_file() for name in WEIGHT_FILES))


def read_model_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and reslab metadata (model, spec, classes, input size, mean/std) of a
    timm/Hugging Face model folder; a WeightsError naming the field when it cannot be used."""
    config = _read_config(folder / "config.json")
    if "pretrained_cfg" not in config:  # timm's older single-dict layout
        config = {"architecture": config.get("architecture"), "pretrained_cfg": config}
    cfg = config["pretrained_cfg"]
    if not isinstance(cfg, dict):
        raise _bad(folder, "pretrained_cfg", cfg, "a JSON object")
    arch = config.get("architecture")
    if arch not in TIMM_NAMES:
        raise WeightsError(f"{printable(folder)}: architecture {printable(repr(arch))[:60]} is "
                           f"not one reslab builds (timm's ResNet family: "
                           f"{', '.join(TIMM_NAMES[:6])}, ... `reslab models` lists them)")
    args = config.get("model_args") or {}
    if not isinstance(args, dict) or set(args) - _MODEL_ARGS:
        unknown = sorted(set(args) - _MODEL_ARGS) if isinstance(args, dict) else args
        raise WeightsError(f"{printable(folder)}: model_args {printable(repr(unknown))[:80]} "
                           f"are not ones reslab can build (it reads {sorted(_MODEL_ARGS)})")
    classes = _positive_int(folder, "num_classes", config.get(
        "num_classes", args.get("num_classes", cfg.get("num_classes", 1000))))
    size = cfg.get("input_size", [3, 224, 224])
    if not (isinstance(size, list) and len(size) == 3
            and all(type(v) is int and v > 0 for v in size)):
        raise _bad(folder, "pretrained_cfg.input_size", size, "[channels, height, width]")
    weights = read_state_dict(next(folder / n for n in WEIGHT_FILES if (folder / n).is_file()))
    channels = _positive_int(folder, "model_args.in_chans",
                             args.get("in_chans", _conv_channels(weights, cfg, size[0])))
    fields = {"num_classes": classes, "in_channels": channels, "input_size": size[1]}
    for key, field in (("layers", "depths"), ("channels", "widths")):
        if key in args:
            fields[field] = args[key]
    if "drop_path_rate" in args:
        fields["drop_path_rate"] = args["drop_path_rate"]
    try:
        spec = SPECS[arch].replace(**fields)
    except (ValueError, TypeError) as error:  # SpecError is a ValueError
        raise WeightsError(f"{printable(folder)}: its model_args describe no network reslab "
                           f"can build ({printable(error)})") from None
    own = config.get("reslab") if isinstance(config.get("reslab"), dict) else {}
    meta = {key: own[key] for key in ("data", "config", "tta_flip", "tta_shift") if key in own}
    meta |= {"model": arch, "spec": spec.to_dict(), "source": "model-folder",
             "classes": _labels(folder, config, cfg, classes),
             "input_size": [channels, *size[1:]],
             "mean": _per_channel(folder, "mean", cfg.get("mean", IMAGENET_MEAN), channels),
             "std": _per_channel(folder, "std", cfg.get("std", IMAGENET_STD), channels)}
    return weights, meta


def _conv_channels(weights: dict[str, torch.Tensor], cfg: dict, default: int) -> int:
    """The input channels of the first convolution's weights: timm's save_for_hf keeps the
    architecture's 3-channel input_size for a model built with another in_chans."""
    first = cfg.get("first_conv")
    weight = weights.get(f"{first}.weight") if isinstance(first, str) else None
    return weight.shape[1] if weight is not None and weight.dim() == 4 else default


def _read_config(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise WeightsError(f"{printable(path)} is over {MAX_CONFIG_BYTES >> 20} MB: not a "
                               "model folder's config")
        config = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise WeightsError(f"{printable(path)} is not readable JSON "
                           f"({printable(type(error).__name__)}); write it again") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{printable(path)} holds no JSON object: not a model folder's config")
    return config


def _bad(folder: Path, name: str, value: Any, expected: str) -> WeightsError:
    return WeightsError(f"{printable(folder)}: config.json field {name} is "
                        f"{printable(repr(value))[:60]}, expected {expected}")


def _positive_int(folder: Path, name: str, value: Any) -> int:
    if type(value) is not int or value < 1:
        raise _bad(folder, name, value, "a positive integer")
    return value


def _labels(folder: Path, config: dict, cfg: dict, count: int) -> list[str]:
    """``label_names`` (a list, or a dict from index to name), else the indices as names."""
    names = config.get("label_names", cfg.get("label_names"))
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i)) for i in range(count)]
    if names is None:
        return [str(i) for i in range(count)]
    if not (isinstance(names, list) and len(names) == count
            and all(isinstance(n, str) for n in names)):
        raise _bad(folder, "label_names", names, f"{count} class names")
    return names


def _per_channel(folder: Path, name: str, values: Any, channels: int) -> list[float]:
    """Per-channel values; RGB statistics for a grey model become their average."""
    if not (isinstance(values, list | tuple) and values and all(
            type(v) in (int, float) and math.isfinite(v) for v in values)):
        raise _bad(folder, f"pretrained_cfg.{name}", values, "a list of numbers")
    if len(values) == channels:
        return [float(v) for v in values]
    if channels == 1 or len(values) == 1:
        return [sum(values) / len(values)] * channels
    raise _bad(folder, f"pretrained_cfg.{name}", values, f"{channels} numbers")
