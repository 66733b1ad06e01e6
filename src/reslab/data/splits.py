"""In-memory splits, where a data set came from, and the statistics computed from a split."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

import torch

from reslab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Split:
    """Images kept in memory as uint8 ``(N, C, H, W)`` with int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but labels of shape "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices``."""
        return self.images[indices]


@dataclass(frozen=True)
class SourceInfo:
    """Where a data set was read from and how far it was verified (shown by ``data info``)."""

    location: Path
    verification: str
    downloaded: bool = False
    val_origin: str = ""
    test_origin: str = ""
    """Where the test split came from when the source has none of its own (image folders)."""
    skipped: tuple[str, ...] = field(default=())
    """Unreadable images left out (image folders), each as ``"path: reason"``."""


class ImageSplit(Protocol):
    """What loaders need from a split: a Split in memory, or a FileSplit read from disk."""

    labels: torch.Tensor

    def __len__(self) -> int: ...
    @property
    def image_shape(self) -> tuple[int, int, int]: ...
    def subset(self, indices: torch.Tensor) -> ImageSplit: ...
    def load(self, indices: torch.Tensor) -> torch.Tensor: ...


class Loaded(NamedTuple):
    """What a source reader returns; ``val`` and ``test`` are None unless the source has its
    own."""

    train: ImageSplit
    val: ImageSplit | None
    test: ImageSplit | None
    classes: tuple[str, ...]
    source: SourceInfo


S = TypeVar("S", bound=ImageSplit)


def hold_out(split: S, val_size: int, seed: int) -> tuple[S, S]:
    """Split ``split`` into (train, val) with ``val_size`` random images in val (fixed by seed)."""
    n = len(split)
    if not 0 <= val_size < n:
        raise ConfigError(f"val_size must be between 0 and {n - 1} (the training set has {n} "
                          f"images), got {val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size].sort().values, order[val_size:].sort().values
    return split.subset(train_idx), split.subset(val_idx)


def fingerprint(split: ImageSplit) -> str:
    """A short hash of a split's content: its pixels and labels in memory, or for images kept
    on disk their paths, sizes and modification times (decoding them all would take an
    epoch). Two loads of unchanged data give the same value."""
    digest = hashlib.blake2b(digest_size=12)
    images = getattr(split, "images", None)
    if images is not None:
        digest.update(_raw_bytes(images))
    else:
        for path in split.files:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(_raw_bytes(split.labels))
    return digest.hexdigest()


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes without a copy; flattened first, since memoryview cannot cast an
    empty split's (0, C, H, W) shape."""
    return memoryview(tensor.contiguous().reshape(-1).numpy()).cast("B")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 ``(N, C, H, W)`` images, scaled to [0, 1].

    Exact and memory-light: a 256-bin histogram per channel instead of a float copy.
    A constant channel gets std 1/255 so normalising it cannot divide by zero.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1 / 255))
    return tuple(means), tuple(stds)
