"""The README.md of an exported model folder: the Hugging Face model card, front matter and
all, from what the checkpoint and its run recorded (data, recipe, test metrics), with how to
load it in timm, reslab and, for torchvision's names, torchvision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reslab.models.pretrained import TORCHVISION_NAMES

if TYPE_CHECKING:
    from reslab.runtime.checkpoint_meta import CheckpointMeta


def model_card(config: dict[str, Any], meta: CheckpointMeta, test: dict[str, Any] | None,
               folder_name: str) -> str:
    arch, reslab = config["architecture"], config["reslab"]
    train = meta.config or {}
    channels, height, width = meta.input_size
    classes = list(meta.classes)
    data = meta.data or "unknown data"
    lines = ["---", "library_name: timm", "tags:", "- image-classification", "- timm",
             "- reslab", "pipeline_tag: image-classification", "---", "",
             f"# {arch} trained with reslab on {data}", "",
             f"A `{arch}` ({reslab['spec_summary']}) trained by reslab {reslab['version']} on "
             f"`{data}`: {channels}x{height}x{width} input, {len(classes)} classes "
             f"({_listed(classes)}). The folder is timm's own format: `config.json` and "
             "`model.safetensors` in timm's key names.", "", "## Recipe", ""]
    if train:
        lines += [f"- epochs: {train.get('epochs')}, at batch {train.get('batch_size')}, "
                  f"{train.get('optimizer')} at lr {train.get('lr')} ({train.get('schedule')} "
                  f"schedule), weight decay {train.get('weight_decay')}, label smoothing "
                  f"{train.get('label_smoothing')}, seed {train.get('seed')}",
                  f"- training subset: {train.get('train_subset') or 'all images'}; "
                  f"started from {train.get('init_from') or 'random weights'}"]
    lines += [f"- normalisation: mean {_numbers(meta.mean)}, std {_numbers(meta.std)} "
              "on pixels in [0, 1]; images resized bilinearly to the input size, no crop",
              f"- these weights: epoch {reslab.get('epoch', '?')}", "", "## Metrics", ""]
    if test:
        lines.append(f"Test split of `{data}`: accuracy {test['accuracy']:.4f} on "
                     f"{test['images']:,} images (validation accuracy "
                     f"{_maybe(test.get('best_val_acc'))}).")
    else:
        lines.append("No test result was recorded with these weights (their run's "
                     "results.json is of other weights, or missing).")
    if meta.tta_flip or meta.tta_shift:
        views = " and ".join(v for v, on in (("its mirror", meta.tta_flip),
                                             ("its shifts", meta.tta_shift)) if on)
        lines.append(f"reslab's accuracy averages each image with {views}; a plain forward "
                     "pass (timm's) gives the image alone, which may score slightly lower.")
    lines += ["", "## Intended use and limits", "",
              f"Classifying {channels}-channel {height}x{width} images of the classes above, "
              f"drawn like `{data}`'s. The model knows nothing outside these classes, and "
              "its accuracy holds only for images like its training data; it was trained "
              "for study, not checked for any deployment.", "", "## Loading it", "",
              "timm (1.0.16 or later):", "", "```python", "import timm",
              f'model = timm.create_model("local-dir:{folder_name}", pretrained=True).eval()',
              "cfg = timm.data.resolve_data_config({}, model=model)  # size, mean/std",
              "```", "", "reslab:", "", "```sh",
              f"reslab predict {folder_name} image.png",
              f"reslab train --init-from {folder_name} --data folder:photos   # fine-tune",
              "```"]
    if arch in TORCHVISION_NAMES:
        conv = ("\nmodel.conv1 = torch.nn.Conv2d(" + str(channels)
                + ", 64, 7, 2, 3, bias=False)" if channels != 3 else "")
        lines += ["", "torchvision (the same keys):", "", "```python", "import torch",
                  "import torchvision", "from safetensors.torch import load_file",
                  f"model = torchvision.models.{arch}(num_classes={len(classes)}){conv}",
                  f'model.load_state_dict(load_file("{folder_name}/model.safetensors"))',
                  "```"]
    return "\n".join(lines) + "\n"


def _listed(classes: list[str]) -> str:
    shown = ", ".join(classes[:10])
    return shown + (f", ... {len(classes) - 10} more" if len(classes) > 10 else "")


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def _maybe(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4f}"
