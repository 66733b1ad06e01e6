"""Fine-tuning from weights against training from scratch, on real data.

    python -m benchmarks finetune [--per-class 60] [--base-epochs 4] [--epochs 15] [--seeds 0,1,2]

A ``fast_resnet10`` is trained on Fashion-MNIST classes 0-4 (T-shirt ... Coat). Then a small
image folder is written from the *training* split's classes 5-9 (Sandal ... Ankle boot, images
the base model never saw): ``--per-class`` images each, and the test split's classes 5-9 as its
test folder. Each arm trains on that folder through ``reslab.train`` exactly as
``reslab train --data folder:DIR`` would, for the same number of epochs:

- scratch: ``--model fast_resnet10``;
- fine-tune: ``--init-from BASE`` (a new 5-class head; the checkpoint's normalisation);
- fine-tune, backbone at 0.1x: ``--init-from BASE --backbone-lr-scale 0.1``;
- fine-tune, frozen to layer3: ``--init-from BASE --freeze-until layer3``.

Reported per arm: test accuracy (mean and each seed) and training wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks import common
from reslab.data import load_dataset
from reslab.models import create_model
from reslab.training import fit, preset, train

ARMS = {
    "scratch": dict(model="fast_resnet10"),
    "fine-tune": dict(init_from="BASE"),
    "fine-tune, backbone lr 0.1x": dict(init_from="BASE", backbone_lr_scale=0.1),
    "fine-tune, frozen to layer3": dict(init_from="BASE", freeze_until="layer3"),
}


def classes_of(split, wanted: range):
    keep = torch.isin(split.labels, torch.tensor(list(wanted)))
    return split.subset(torch.nonzero(keep).flatten())


def train_base(data, epochs: int, out: Path) -> Path:
    """fast_resnet10 on classes 0-4 of Fashion-MNIST (train, val, test cut to them)."""
    first = range(5)
    subset = dataclasses.replace(
        data, train=classes_of(data.train, first), val=classes_of(data.val, first),
        test=classes_of(data.test, first), classes=data.classes[:5])
    torch.manual_seed(0)
    model = create_model("fast_resnet10", num_classes=5, in_channels=1)
    result = fit(model, subset, preset("fast", epochs=epochs, quiet=True, out=str(out)))
    print(f"base model: classes 0-4, {epochs} epochs, test accuracy "
          f"{result.test['accuracy']:.4f} on {result.test['images']:,} images")
    return out / "checkpoints" / "best.safetensors"


def write_folder(data, per_class: int, root: Path) -> Path:
    """Classes 5-9: ``per_class`` training images each, and the whole test split."""
    for split, limit in (("train", per_class), ("test", None)):
        source = getattr(data, split)
        for label in range(5, 10):
            indices = torch.nonzero(source.labels == label).flatten()[:limit]
            folder = root / split / data.classes[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices.tolist():
                Image.fromarray(source.images[i, 0].numpy(), mode="L").save(folder / f"{i}.png")
    return root


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks finetune")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--base-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2")
    options = parser.parse_args(argv)
    seeds = [int(s) for s in options.seeds.split(",")]
    data = load_dataset("fashion-mnist")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = train_base(data, options.base_epochs, tmp / "base")
        folder = write_folder(data, options.per_class, tmp / "folder")
        for arm, changes in ARMS.items():
            runs = []
            for seed in seeds:
                values = {k: str(base) if v == "BASE" else v for k, v in changes.items()}
                start = time.perf_counter()
                result = train(data=f"folder:{folder}", channels=1, image_size=28,
                               batch_size=32, epochs=options.epochs, seed=seed, quiet=True,
                               out=str(tmp / f"{arm}-{seed}".replace(" ", "_")), **values)
                runs.append({"seed": seed, "test_acc": result.test["accuracy"],
                             "train_s": result.test["train_seconds"],
                             "wall_s": time.perf_counter() - start})
            accuracies = [r["test_acc"] for r in runs]
            results[arm] = {"runs": runs, "mean_acc": statistics.mean(accuracies),
                            "std_acc": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
                            "train_s": statistics.median(r["train_s"] for r in runs)}
            print(f"{arm:<30} test accuracy {results[arm]['mean_acc']:.4f} ± "
                  f"{results[arm]['std_acc']:.4f} ({', '.join(f'{a:.4f}' for a in accuracies)})"
                  f"; {results[arm]['train_s']:.1f} s of training")
    print(f"wrote {common.write('finetune', {'options': vars(options), 'arms': results})}")
