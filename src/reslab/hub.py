"""Model folders as timm and the Hugging Face hub pass them around: ``config.json`` (timm's
``architecture``, ``num_classes``, ``label_names``, ``model_args`` and a complete
``pretrained_cfg``) beside ``model.safetensors`` in timm's key names, which
``timm.create_model("local-dir:DIR", pretrained=True)`` loads as it is. reslab writes them
for the networks timm has (its ResNet family, torchvision's names included); reading them,
its own and those timm's ``save_for_hf`` wrote, wherever a checkpoint goes, is
``reslab.runtime.model_folder``'s.

A network timm cannot build (a CIFAR net's stride-1 stem and option-A shortcuts, plain nets,
the other BN/ReLU orderings) is refused rather than registered as a timm entrypoint: such a
folder would load only where reslab is imported, which is what a reslab checkpoint already is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from reslab.errors import ConfigError
from reslab.model_card import model_card
from reslab.models.spec import Naming, ResNetSpec
from reslab.models.zoo import SPECS
from reslab.paths import is_folder, printable
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.model_folder import MAX_CONFIG_BYTES, TIMM_NAMES, WEIGHT_FILES
from reslab.runtime.run_folder import RunFolder, run_files

FORMAT = "reslab-model-folder/1"  # the top-level "reslab" entry, which timm ignores
# what the spec may differ in from the zoo's and still be the same timm architecture
_FREE = ("num_classes", "in_channels", "input_size", "zero_init_residual", "drop_path_rate")


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


def pretrained_cfg(meta: CheckpointMeta, first_conv: str, classifier: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a checkpoint: complete, as timm does not fill it in."""
    return {
        "input_size": list(meta.input_size),
        "fixed_input_size": False,
        "interpolation": "bilinear",  # reslab resizes bilinearly
        "crop_pct": 1.0,  # the whole image, resized: reslab trains and tests without a crop
        "crop_mode": "center",
        "mean": list(meta.mean),
        "std": list(meta.std),
        "num_classes": len(meta.classes),
        "first_conv": first_conv,
        "classifier": classifier,
    }


def folder_config(model: torch.nn.Module, meta: CheckpointMeta,
                  extra: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint's model (a ``ResNet``), as timm's save_for_hf
    writes it, with reslab's own metadata (``extra``) under the key ``reslab``."""
    arch, args = timm_architecture(meta.model, model.spec)
    convs = (n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    head = next(n for n, m in model.named_modules() if m is model.get_classifier())
    config = {"architecture": arch, "num_classes": len(meta.classes),
              "num_features": model.spec.num_features, "global_pool": "avg",
              "label_names": list(meta.classes)}
    if args:
        config["model_args"] = args
    config["pretrained_cfg"] = pretrained_cfg(meta, next(convs), head)
    config["reslab"] = {"format": FORMAT, **extra}
    return config


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
    from reslab.paths import check_output, expand
    from reslab.runtime.checkpoint import model_from_checkpoint, resolve_checkpoint

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
        raise ConfigError(f"{printable(meta.model)} is no ResNet: timm has no architecture "
                          "for it; `reslab export RUN --onnx FILE` exports it")
    test = _test_result(source, meta)
    extra = {"version": __version__, "model": meta.model, "spec": model.spec.to_dict(),
             "spec_summary": f"depths {list(model.spec.depths)}, {model.spec.block.value} "
                             f"units, {sum(p.numel() for p in model.parameters()):,} parameters",
             **{k: value for k in ("data", "config", "tta_flip", "tta_shift", "epoch")
                if (value := getattr(meta, k)) is not None}, "test": test}
    config = folder_config(model, meta, extra)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "model.safetensors").write_bytes(
            safetensors.torch.save(weights, metadata={"format": "pt"}))
        (tmp / "README.md").write_text(model_card(config, meta, test, out.name))
    return {"path": out, "architecture": config["architecture"],
            "model_args": config.get("model_args", {}), "classes": len(meta.classes),
            "input_size": list(meta.input_size), "tensors": len(weights), "test": test}


OUR_FILES = ("config.json", "model.safetensors", "README.md")


def _test_result(source: Path, meta: CheckpointMeta) -> dict[str, Any] | None:
    """The run's test result when it is of these weights (results.json names their epoch)."""
    run = RunFolder.holding(source)
    if run is None or not run.results.is_file() or run.results.stat().st_size > MAX_CONFIG_BYTES:
        return None
    results = run.results
    try:
        found = json.loads(results.read_text())
        if found.get("best_epoch") != meta.epoch:
            return None
        return {k: found[k] for k in ("accuracy", "images", "best_epoch", "best_val_acc")}
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return None
