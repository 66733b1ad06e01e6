"""``load_dataset``: one entry point for the built-in data sets and image folders."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from reslab.data.cifar import CIFAR10, CIFAR100, load_cifar
from reslab.data.fetch import ProgressCallback
from reslab.data.folder import load_folder
from reslab.data.idx import FASHION_MNIST, MNIST, load_idx_source
from reslab.data.loader import BatchLoader
from reslab.data.splits import (
    ImageSplit,
    SourceInfo,
    Split,
    channel_stats,
    fingerprint,
    hold_out,
)
from reslab.errors import ConfigError, UnknownNameError, close_matches

log = logging.getLogger(__name__)

BUILTIN = {
    "fashion-mnist": partial(load_idx_source, FASHION_MNIST),
    "mnist": partial(load_idx_source, MNIST),
    "cifar10": partial(load_cifar, CIFAR10),
    "cifar100": partial(load_cifar, CIFAR100),
}
DEFAULT_VAL_SIZE = 5000  # built-in sets; image folders hold out 10% of train
FOLDER_HOLD_OUT = 0.1  # of an image folder's images, for val and, without test/, for test
# The test images of a folder without test/ are drawn with this fixed seed, not the run's:
# runs with different seeds are then tested on the same images.
TEST_SEED = 0
STATS_SAMPLE = 10_000  # images read to estimate mean/std of a split kept on disk


def dataset_names() -> list[str]:
    """The built-in data set names (any image folder path works too)."""
    return list(BUILTIN)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set's three splits, class names, and normalisation statistics.

    Each split holds uint8 ``(N, C, H, W)`` images and int64 labels: a ``Split`` in memory, or a
    ``FileSplit`` (large image folders) decoded per batch. ``val`` is for model selection;
    ``test`` only for the final report. ``mean``/``std`` are per channel, in [0, 1] units,
    computed on ``train`` after the validation images were held out.
    """

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: SourceInfo

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` as stored (before any loader resize)."""
        return self.train.image_shape

    def input_shape(self, resize: int | None) -> tuple[int, int, int]:
        """``(C, H, W)`` of what a model sees: the images, resized to ``resize`` square if a
        run resizes (``TrainConfig.resize``)."""
        channels, height, width = self.image_shape
        return (channels, resize, resize) if resize else (channels, height, width)

    @functools.cached_property
    def identity(self) -> dict[str, Any]:
        """What a resumed run checks is still the data it trained on (hashed once)."""
        return {"name": self.name, "classes": list(self.classes),
                "sizes": {s: len(self.split(s)) for s in ("train", "val", "test")},
                "fingerprint": {s: fingerprint(self.split(s)) for s in ("train", "val", "test")}}

    def split(self, name: str) -> ImageSplit:
        if name not in ("train", "val", "test"):
            raise UnknownNameError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, name)

    def loader(self, split: str, batch_size: int, **options) -> BatchLoader:
        """A BatchLoader over ``split`` with this data set's mean/std.

        ``train`` defaults to ``split == "train"``; other options go to BatchLoader.
        """
        options.setdefault("train", split == "train")
        return BatchLoader(self.split(split), batch_size, mean=self.mean, std=self.std, **options)


def load_dataset(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int | None = None,
    seed: int = 0,
    download: bool = True,
    image_size: int | None = None,
    channels: int | None = None,
    in_memory: bool | None = None,
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Load a data set by name ("fashion-mnist", "mnist", "cifar10", "cifar100") or image folder.

    name: a built-in name (case, "-" and "_" do not matter), or an image folder as a path or
        "folder:PATH".
    data_dir: a folder to look in first (built-in sets); see ``reslab.data.fetch``.
    val_size: images held out from train for validation, chosen by ``seed``; default 5,000 for
        built-in sets, 10% for image folders without a ``val/`` folder; 0 allowed. An image
        folder without ``test/`` (only class folders) has 10% of its images held out as the
        test split, the same ones whatever ``seed`` is.
    download: fetch a missing built-in set from its official site.
    image_size, channels: image folders only (default 32 and 3): the square size and channel
        count (1 = grey, 3 = RGB) images are converted to. Use a loader's ``resize`` to change
        the size of a built-in set.
    in_memory: image folders only; None decides by size (``folder.IN_MEMORY_LIMIT_BYTES``).
    progress: called while downloading, see ``fetch.ProgressCallback``.
    """
    if val_size is not None and (isinstance(val_size, bool) or not isinstance(val_size, int)
                                 or val_size < 0):
        raise ConfigError(f"val_size must be an integer >= 0, got {val_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    key, folder = _resolve(name)
    if folder is not None:
        loaded = load_folder(folder, image_size=32 if image_size is None else image_size,
                             channels=3 if channels is None else channels, in_memory=in_memory)
        key = f"folder:{folder}"
        if loaded.test is None:  # class folders only: hold a test split out of them
            count = round(FOLDER_HOLD_OUT * len(loaded.train))
            train, test = hold_out(loaded.train, count, TEST_SEED)
            loaded = loaded._replace(train=train, test=test, source=replace(
                loaded.source, test_origin=f"no test/ folder: held out from the images, the "
                f"same {count:,} in every run"))
        default_val = round(FOLDER_HOLD_OUT * len(loaded.train))
    else:
        loaded = BUILTIN[key](data_dir, download=download, progress=progress)
        _check_native(key, loaded.train.image_shape, image_size, channels)
        default_val = DEFAULT_VAL_SIZE
    source = loaded.source
    if loaded.val is not None:
        train, val = loaded.train, loaded.val
        if val_size is not None:
            log.info("val_size ignored: %s has its own validation folder", key)
    else:
        size = default_val if val_size is None else val_size
        train, val = hold_out(loaded.train, size, seed)
        source = replace(source, val_origin=f"held out from train, seed {seed}")
    mean, std = _stats(train, seed)
    return Dataset(name=key, train=train, val=val, test=loaded.test, classes=loaded.classes,
                   mean=mean, std=std, source=source)


def _resolve(name: str | os.PathLike) -> tuple[str, Path | None]:
    """(built-in key, None) or ("", folder path)."""
    if isinstance(name, os.PathLike):
        return "", Path(name)
    if name.startswith("folder:"):
        return "", Path(name.removeprefix("folder:"))
    squashed = name.lower().replace("-", "").replace("_", "")
    for key in BUILTIN:
        if key.replace("-", "") == squashed:
            return key, None
    if os.sep in name or name.startswith(("~", ".")) or Path(name).exists():
        return "", Path(name)
    close = close_matches(name, BUILTIN, n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UnknownNameError(f"unknown data set {name!r}; known: {', '.join(BUILTIN)}, or an "
                           f"image folder given as a path or folder:PATH{hint}")


def _check_native(key: str, shape: tuple[int, int, int], image_size, channels) -> None:
    c, h, _ = shape
    if channels is not None and channels != c:
        raise ConfigError(f"{key} images have {c} channel(s); channels={channels} is only for "
                          "image folders")
    if image_size is not None and image_size != h:
        raise ConfigError(f"{key} images are {h}x{h}; image_size={image_size} is only for image "
                          "folders, use the loader's resize instead")


def _stats(train: ImageSplit, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(train, Split):
        return channel_stats(train.images)
    indices = torch.arange(len(train))
    if len(train) > STATS_SAMPLE:  # decoding a whole on-disk split would take an epoch's time
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(train), generator=generator)[:STATS_SAMPLE]
    return channel_stats(train.load(indices))
