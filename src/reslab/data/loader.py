"""Batches for one epoch: shuffled, sharded per rank, augmented and normalised, reproducible.

Everything random derives from ``(seed, epoch)``: the epoch's permutation from
``(seed, epoch)``, each batch's augmentation from ``(seed, epoch, rank, step)``. So a run that
stops at any step and resumes with ``set_epoch(epoch)`` and ``iter_from(step)`` sees exactly the
batches it would have seen.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reslab.data.augment import AugmentConfig, BatchTransform
from reslab.data.folder import FileSplit
from reslab.data.splits import ImageSplit
from reslab.errors import ConfigError

PERMUTATION, AUGMENTATION, FLIPS = 0, 1, 2  # keep the random streams apart


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


class BatchLoader:
    """Iterates ``(images, labels)`` batches of one split, one epoch per iteration.

    images: float32 ``(B, C, H, W)`` normalised with ``mean``/``std`` (per channel, in [0, 1]
    units), ``channels_last`` in memory, on ``device``; labels: int64 ``(B,)`` on ``device``.

    train=True shuffles (a new permutation per epoch) and applies ``augment``; train=False keeps
    the split's order and never augments. ``drop_last`` defaults to ``train``.

    With ``world_size > 1`` each rank takes a disjoint slice of the epoch's permutation and all
    ranks get ``len(loader)`` batches. With drop_last=False every image is seen exactly once
    across ranks, so a rank's last batch may be one image short or empty: sum metrics over
    images rather than averaging batch means.

    A FileSplit is decoded by ``num_workers`` DataLoader worker processes (default: up to 4).
    """

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        augment: AugmentConfig | None = None,
        resize: int | None = None,
        seed: int = 0,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
        num_workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in 0...{world_size - 1} (world_size {world_size}), "
                              f"got {rank}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        if augment is not None and augment.active and not train:
            raise ConfigError("augment is only for training batches; pass train=True or drop it")
        _, height, width = split.image_shape
        if augment is not None and augment.crop_padding > min(height, width):
            raise ConfigError(f"augmentation crop_padding={augment.crop_padding} is out of range "
                              f"for {height}x{width} images; allowed: 0...{min(height, width)}")
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.transform = BatchTransform(mean, std, augment=augment if train else None,
                                        resize=resize, device=device, channels_last=channels_last)
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.epoch = 0
        self._first_flips: torch.Tensor | None = None  # alternate_flips' even-epoch half
        if len(self) == 0 and train:  # an empty evaluation split just yields nothing
            raise ConfigError(f"no batches: {len(split)} images over {world_size} rank(s) make no "
                              f"full batch of {batch_size}; lower batch_size or set "
                              "drop_last=False")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation and augmentation the next iteration uses."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        n = len(self.split)
        if self.drop_last:
            return (n // self.world_size) // self.batch_size
        return math.ceil(math.ceil(n / self.world_size) / self.batch_size)

    def batch_indices(self) -> list[torch.Tensor]:
        """This rank's batches for the current epoch, as indices into the split."""
        n = len(self.split)
        if self.train:
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, self.epoch, PERMUTATION))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.drop_last:
            share = n // self.world_size
            mine = order[self.rank * share:(self.rank + 1) * share]
        else:  # balanced: shares differ by at most one image
            mine = order[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]
        size = self.batch_size
        return [mine[i * size:(i + 1) * size] for i in range(len(self))]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The current epoch's batches from batch ``step`` on (to resume mid-epoch)."""
        if not 0 <= step <= len(self):
            raise ConfigError(f"step must be in 0...{len(self)}, got {step}")
        return self._batches(self.batch_indices()[step:], step, self.epoch)

    def _batches(
        self, batches: list[torch.Tensor], start: int, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, (indices, images) in enumerate(zip(batches, self._uint8(batches),
                                                     strict=True), start):
            generator, flipped = None, None
            if self.train:
                generator = torch.Generator().manual_seed(
                    derive_seed(self.seed, epoch, AUGMENTATION, self.rank, step))
                flipped = self.alternate_flips(indices, epoch)
            labels = self.split.labels[indices].to(self.transform.device, non_blocking=True)
            yield self.transform(images, generator, flipped), labels

    def alternate_flips(self, indices: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """With alternate_flips, which of these images are mirrored in ``epoch``: a fixed
        random half of the split in even epochs, the other half in odd ones."""
        augment = self.transform.augment
        if augment is None or not augment.alternate_flips:
            return None
        if self._first_flips is None:  # drawn once: the same half for the whole run
            generator = torch.Generator().manual_seed(derive_seed(self.seed, FLIPS))
            self._first_flips = torch.rand(len(self.split), generator=generator) < 0.5
        return self._first_flips[indices] ^ bool(epoch % 2)

    def _uint8(self, batches: list[torch.Tensor]) -> Iterable[torch.Tensor]:
        if not isinstance(self.split, FileSplit) or self.num_workers == 0:
            return (self.split.load(indices) for indices in batches)
        # Each worker decodes whole batches; batch_size=None passes them through as they are.
        return DataLoader(_FileBatches(self.split, batches), batch_size=None,
                          num_workers=self.num_workers)


class _FileBatches(Dataset):
    def __init__(self, split: FileSplit, batches: list[torch.Tensor]) -> None:
        self.split, self.batches = split, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        indices = self.batches[i].tolist()
        if not indices:
            return torch.empty((0, *self.split.image_shape), dtype=torch.uint8)
        return torch.stack([self.split[j] for j in indices])
