"""``reslab data info NAME`` and ``reslab data show NAME --out grid.png``."""

from __future__ import annotations

import argparse
import math
import sys
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def register(subcommands) -> dict:
    data_parser = subcommands.add_parser(
        "data", help="Inspect a data set: where it was found, its splits and classes, sample "
        "images.", description="Inspect a data set.")
    actions = data_parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    info = actions.add_parser("info", help="Describe a data set.", description="Where a data "
                              "set was found, its splits, classes, mean/std and checksum status.")
    _add_dataset_arguments(info)

    show = actions.add_parser("show", help="Save a grid of sample images.",
                              description="Save a labelled grid of sample images as a PNG.")
    _add_dataset_arguments(show)
    show.add_argument("--out", required=True, help="The PNG file to write.")
    show.add_argument("--split", choices=["train", "val", "test"], default="train",
                      help="Which split to sample.")
    show.add_argument("--count", type=int, default=32, help="How many images (1...256).")
    show.add_argument("--augmented", action=argparse.BooleanOptionalAction, default=False,
                      help="Apply the standard training augmentation (random crop, flip).")
    show.add_argument("--resize", type=int, default=None,
                      help="Resize images to this square size, as a training run would.")
    return {"data": run}


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="fashion-mnist, mnist, cifar10, cifar100, or an "
                        "image folder (a path or folder:PATH).")
    parser.add_argument("--data-dir", default=None,
                        help="A folder to look in first for the data set's files.")
    parser.add_argument("--val-size", type=int, default=None,
                        help="Images held out from train for validation (default: 5000 for "
                        "built-in sets, a tenth of train for image folders).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the validation split.")
    parser.add_argument("--image-size", type=int, default=None,
                        help="Image folders: square size to resize to (default 32).")
    parser.add_argument("--channels", type=int, default=None,
                        help="Image folders: 1 (grey) or 3 (RGB, default).")


def run(options: Namespace) -> int:
    from reslab.data import load_dataset
    from reslab.paths import check_output

    if options.action == "show":  # checked before the data set's seconds of loading
        data = [d for d in (options.name.removeprefix("folder:"), options.data_dir) if d]
        options.out = check_output(options.out, "--out", suffix=".png", inputs=data)
    with download_progress() as progress:
        data = load_dataset(options.name, options.data_dir, val_size=options.val_size,
                            seed=options.seed, image_size=options.image_size,
                            channels=options.channels, progress=progress)
    return {"info": info, "show": show}[options.action](data, options)


@contextmanager
def download_progress() -> Iterator[Callable | None]:
    """A rich progress bar for downloads when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        tasks = {}

        def update(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        yield update


def info(data, options: Namespace) -> int:
    from reslab.paths import printable

    source = data.source
    c, h, w = data.image_shape
    rows = [
        ("found in", f"{source.location}" + (" (downloaded)" if source.downloaded else "")),
        ("checksum", source.verification),
        ("images", f"{c}x{h}x{w} uint8, {len(data.classes)} classes"),
        ("train", f"{len(data.train):,}"),
        ("val", f"{len(data.val):,}" + (f"  ({source.val_origin})" if source.val_origin else "")),
        ("test", f"{len(data.test):,}"
         + (f"  ({source.test_origin})" if source.test_origin else "")),
        ("mean", ", ".join(f"{m:.4f}" for m in data.mean)),
        ("std", ", ".join(f"{s:.4f}" for s in data.std)),
        ("classes", ", ".join(data.classes)),
    ]
    if source.skipped:
        rows.append(("skipped", f"{len(source.skipped)} unreadable image(s)"))
    print(printable(data.name))
    for key, value in rows:
        print(f"  {key:<9} {printable(value)}")  # folder and class names come from the disk
    return 0


def show(data, options: Namespace) -> int:
    import torch

    from reslab import memory
    from reslab.data import AugmentConfig
    from reslab.errors import ConfigError, DataError
    from reslab.limits import MAX_IMAGE_SIDE

    out = options.out
    if not 1 <= options.count <= 256:
        raise ConfigError(f"--count must be in 1...256, got {options.count}")
    if options.resize is not None and not 1 <= options.resize <= MAX_IMAGE_SIDE:
        raise ConfigError(f"--resize must be in 1...{MAX_IMAGE_SIDE}, got {options.resize}")
    split = data.split(options.split)
    if len(split) == 0:
        raise DataError(f"the {options.split} split of {data.name} is empty; choose another "
                        "--split")
    channels, side, _ = data.image_shape
    side, shown = options.resize or side, min(options.count, len(split))
    # the batch in float through resize, augmentation and un-normalising, and the grid's
    # figure: about six float copies of it
    memory.require(6 * 4 * shown * channels * side * side,
                   f"a grid of {shown} images of {channels}x{side}x{side}",
                   "lower --count or --resize")
    augment = AugmentConfig.standard(data.image_shape[1]) if options.augmented else None
    loader = data.loader(options.split, min(options.count, len(split)), train=True,
                         augment=augment, resize=options.resize, seed=options.seed,
                         drop_last=False, channels_last=False)
    images, labels = next(iter(loader))
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    pixels = (images * std + mean).clamp(0, 1)
    title = f"{data.name} {options.split}" + (", augmented" if options.augmented else "")
    _save_grid(pixels, [data.classes[i] for i in labels.tolist()], title, out)
    print(f"wrote {out}")
    return 0


def _save_grid(pixels, names: list[str], title: str, out: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or window

    from reslab.io import atomic_output
    from reslab.training.plots import literal

    columns = min(8, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows + 0.4), layout="constrained")
    figure.suptitle(literal(title))
    for i, (image, name) in enumerate(zip(pixels, names, strict=True)):
        axes = figure.add_subplot(rows, columns, i + 1)
        if image.shape[0] == 1:
            axes.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            axes.imshow(image.permute(1, 2, 0).numpy())
        axes.set_title(literal(name), fontsize=8)
        axes.axis("off")
    with atomic_output(out) as file:
        figure.savefig(file, format="png", dpi=100)
