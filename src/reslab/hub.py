"""Model folders as timm and the Hugging Face hub pass them around: ``config.json`` (timm's
``architecture``, ``num_classes``, ``label_names``, ``model_args`` and a complete
``pretrained_cfg``) beside ``model.safetensors`` in timm's key names, which
``timm.create_model("local-dir:DIR", pretrained=True)`` loads as it is. reslab writes them
for the networks timm has (its ResNet family, torchvision's names included) and reads them,
its own and those timm's ``save_for_hf`` wrote, wherever a checkpoint goes.

A network timm cannot build (a CIFAR net's stride-1 stem and option-A shortcuts, plain nets,
the other BN/ReLU orderings) is refused rather than registered as a timm entrypoint: such a
folder would load only where reslab is imported, which is what a reslab checkpoint already is.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from reslab.errors import ConfigError, WeightsError
from reslab.model_card import model_card
from reslab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_NAMES
from reslab.models.spec import Naming, ResNetSpec
from reslab.models.weights import read_state_dict
from reslab.models.zoo import SPECS, TIMM_FAMILY
from reslab.paths import is_folder, printable

# torchvision's names (timm has them, with the same keys), then timm's own family
TIMM_NAMES = TORCHVISION_NAMES + tuple(n for n in TIMM_FAMILY if n not in TORCHVISION_NAMES)
FORMAT = "reslab-model-folder/1"  # the top-level "reslab" entry, which timm ignores
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
MAX_CONFIG_BYTES = 8 << 20  # label names of 21k classes fit in about 1 MB
# what the spec may differ in from the zoo's and still be the same timm architecture
_FREE = ("num_classes", "in_channels", "input_size", "zero_init_residual", "drop_path_rate")
_MODEL_ARGS = {"layers", "channels", "drop_path_rate", "in_chans", "num_classes"}


def timm_architecture(name: str, spec: ResNetSpec) -> tuple[str, dict[str, Any]]:
    """timm's name for ``spec`` and the ``model_args`` it needs (other depths or widths, a
    stochastic-depth rate); a ConfigError naming what timm lacks when it has none."""
    ordered = ([name] if name in TIMM_NAMES else []) + [n for n in TIMM_NAMES if n != name]
    for exact in (True, False):  # a name that fits as it is before one that needs arguments
        for candidate in ordered:
            args = _model_args(SPECS[candidate], spec, exact)
            if args is not None:
                return candidate, args
    raise ConfigError(f"{printable(name)} cannot travel as a timm folder: timm has no "
                      f"architecture with {_lacks(spec)}; `reslab export RUN --onnx FILE` "
                      "exports any reslab network, and its checkpoint loads in reslab")


def _model_args(base: ResNetSpec, spec: ResNetSpec, exact: bool) -> dict[str, Any] | None:
    free = _FREE if exact else (*_FREE, "depths", "widths")
    try:
        if base.replace(**{f: getattr(spec, f) for f in free}) != spec:
            return None
    except ValueError:  # the zoo's spec with these fields is no valid network
        return None
    if len(spec.depths) != len(base.depths):
        return None
    args: dict[str, Any] = {}
    if spec.depths != base.depths:
        args["layers"] = list(spec.depths)
    if spec.widths != base.widths:
        if spec.naming is not Naming.TORCHVISION:  # ResNetV2's channels are the outputs'
            return None
        args["channels"] = list(spec.widths)
    if spec.drop_path_rate:
        args["drop_path_rate"] = spec.drop_path_rate
    return args


def _lacks(spec: ResNetSpec) -> str:
    reasons = []
    if spec.stem.value == "cifar":
        reasons.append("a stride-1 3x3 stem")
    if spec.shortcut.value == "pad":
        reasons.append("option-A (zero-padding) shortcuts")
    if spec.is_plain:
        reasons.append("no shortcuts (a plain net)")
    if spec.naming is Naming.TORCHVISION and spec.ordering.value != "original":
        reasons.append(f"the {spec.ordering.value} unit ordering")
    if spec.conv_bias:
        reasons.append("convolution biases")
    if spec.unit != "residual":
        reasons.append(f"{spec.unit!r} units")
    return ", ".join(reasons) or "this spec (it matches none of timm's ResNet family)"


def is_model_folder(path: Path) -> bool:
    """A folder holding ``config.json`` and one of the weight files timm looks for."""
    return (is_folder(path) and (path / "config.json").is_file()
            and any((path / name).is_file() for name in WEIGHT_FILES))


def pretrained_cfg(meta: dict[str, Any], first_conv: str, classifier: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a checkpoint: complete, as timm does not fill it in."""
    return {
        "input_size": list(meta["input_size"]),
        "fixed_input_size": False,
        "interpolation": "bilinear",  # reslab resizes bilinearly
        "crop_pct": 1.0,  # the whole image, resized: reslab trains and tests without a crop
        "crop_mode": "center",
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "num_classes": len(meta["classes"]),
        "first_conv": first_conv,
        "classifier": classifier,
    }


def folder_config(model: torch.nn.Module, meta: dict[str, Any],
                  extra: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint's model (a ``ResNet``), as timm's save_for_hf
    writes it, with reslab's own metadata (``extra``) under the key ``reslab``."""
    arch, args = timm_architecture(meta["model"], model.spec)
    convs = (n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    head = next(n for n, m in model.named_modules() if m is model.get_classifier())
    config = {"architecture": arch, "num_classes": len(meta["classes"]),
              "num_features": model.spec.num_features, "global_pool": "avg",
              "label_names": list(meta["classes"])}
    if args:
        config["model_args"] = args
    config["pretrained_cfg"] = pretrained_cfg(meta, next(convs), head)
    config["reslab"] = {"format": FORMAT, **extra}
    return config


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


def folder_files(folder: str | os.PathLike) -> list[Path]:
    """The files of a model folder an output must not replace."""
    return [Path(folder), *(Path(folder) / n for n in ("config.json", "README.md",
                                                       *WEIGHT_FILES))]


def export_folder(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write ``out`` (a new or empty folder, or one this wrote before): ``config.json``,
    ``model.safetensors`` and a ``README.md`` model card, for a checkpoint, run directory or
    model folder whose network timm has. Returns what was written."""
    import safetensors.torch

    from reslab import __version__
    from reslab.io import atomic_folder
    from reslab.paths import check_output, expand, run_files
    from reslab.training.checkpoint import model_from_checkpoint, resolve_checkpoint

    source = resolve_checkpoint(checkpoint)
    out = expand(out, "--folder")
    inputs = folder_files(source) if is_folder(source) else run_files(source)
    check_output(out / "config.json", "--folder", inputs=inputs)
    if os.path.lexists(out) and not is_folder(out):
        raise ConfigError(f"--folder {printable(out)} is a file: give a folder to write")
    if is_folder(out) and (left := sorted({p.name for p in out.iterdir()} - set(OUR_FILES))):
        raise ConfigError(f"--folder {printable(out)} holds other files "
                          f"({printable(', '.join(left[:3]))}): give a new or empty folder")
    model, meta = model_from_checkpoint(source)
    if not hasattr(model, "spec"):
        raise ConfigError(f"{printable(meta['model'])} is no ResNet: timm has no architecture "
                          "for it; `reslab export RUN --onnx FILE` exports it")
    test = _test_result(source, meta)
    extra = {"version": __version__, "model": meta["model"], "spec": model.spec.to_dict(),
             "spec_summary": f"depths {list(model.spec.depths)}, {model.spec.block.value} "
                             f"units, {sum(p.numel() for p in model.parameters()):,} parameters",
             **{k: meta[k] for k in ("data", "config", "tta_flip", "tta_shift", "epoch")
                if k in meta}, "test": test}
    config = folder_config(model, meta, extra)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "model.safetensors").write_bytes(
            safetensors.torch.save(weights, metadata={"format": "pt"}))
        (tmp / "README.md").write_text(model_card(config, meta, test, out.name))
    return {"path": out, "architecture": config["architecture"],
            "model_args": config.get("model_args", {}), "classes": len(meta["classes"]),
            "input_size": meta["input_size"], "tensors": len(weights), "test": test}


OUR_FILES = ("config.json", "model.safetensors", "README.md")


def _test_result(source: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's test result when it is of these weights (results.json names their epoch)."""
    results = source.parent.parent / "results.json"
    if source.parent.name != "checkpoints" or not results.is_file() \
            or results.stat().st_size > MAX_CONFIG_BYTES:
        return None
    try:
        found = json.loads(results.read_text())
        if found.get("best_epoch") != meta.get("epoch"):
            return None
        return {k: found[k] for k in ("accuracy", "images", "best_epoch", "best_val_acc")}
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return None
