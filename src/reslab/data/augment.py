"""Batch-level augmentation and normalisation: whole batches at once, no per-image Python.

Order, as in the usual torchvision recipes: random crop with zero padding and horizontal flip on
the uint8 images (padding is black), then float, optional bilinear resize, per-channel
normalisation, then random erasing (erased pixels become 0 = the mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reslab.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """What training augmentation does; the defaults do nothing.

    crop_padding: pad each side with this many black pixels, then crop back at a random offset
        (a random translation of up to ``crop_padding`` pixels); 0 = off.
    flip: mirror left-right with probability 1/2.
    alternate_flips: with ``flip``, mirror each image in exactly every other epoch instead
        (a random half of them in even epochs, the other half in odd ones), as airbench does:
        no image goes several epochs unmirrored or mirrored by chance.
    erase_prob: probability that an image gets one random rectangle erased (cutout); 0 = off.
    erase_scale: range of the rectangle's area, as a fraction of the image.
    erase_ratio: range of the rectangle's aspect ratio (height / width).
    """

    crop_padding: int = 0
    flip: bool = False
    alternate_flips: bool = False
    erase_prob: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.33)
    erase_ratio: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) \
                or self.crop_padding < 0:
            _bad("crop_padding", self.crop_padding, "an integer >= 0")
        if not isinstance(self.flip, bool):
            _bad("flip", self.flip, "true or false")
        if not isinstance(self.alternate_flips, bool) or (self.alternate_flips and not self.flip):
            _bad("alternate_flips", self.alternate_flips, "true or false, true only with flip")
        if not 0.0 <= self.erase_prob <= 1.0:
            _bad("erase_prob", self.erase_prob, "0 <= erase_prob <= 1")
        low, high = _pair("erase_scale", self.erase_scale)
        if not 0.0 < low <= high <= 1.0:
            _bad("erase_scale", self.erase_scale, "0 < low <= high <= 1")
        low, high = _pair("erase_ratio", self.erase_ratio)
        if not 0.0 < low <= high:
            _bad("erase_ratio", self.erase_ratio, "0 < low <= high")

    @classmethod
    def standard(cls, image_size: int) -> AugmentConfig:
        """Crop with 1/8 of the image size as padding (4 pixels at 32) and flip."""
        return cls(crop_padding=max(1, image_size // 8), flip=True)

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.erase_prob)


def _bad(name: str, value, allowed: str):
    raise ConfigError(f"augmentation {name}={value!r} is out of range; allowed: {allowed}")


def _pair(name: str, value) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        _bad(name, value, "a (low, high) pair")
    return float(value[0]), float(value[1])


def crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator,
    flipped: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip of a batch, in one gather; the
    images to mirror are ``flipped`` (a bool per image) when given, else a random half."""
    b, c, h, w = images.shape
    if not (padding or flip):
        return images
    rows = torch.arange(h).expand(b, h)
    cols = torch.arange(w).expand(b, w)
    if flip:
        if flipped is None:
            flipped = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(flipped.view(b, 1), (w - 1) - cols, cols)
    if padding:
        images = F.pad(images, (padding,) * 4)
        offsets = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator)
        rows, cols = rows + offsets[0], cols + offsets[1]
    index = rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]
    index = index.view(b, 1, h * w).expand(b, c, h * w).to(images.device)
    return images.flatten(2).gather(2, index).view(b, c, h, w)


def erase(
    x: torch.Tensor, prob: float, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Random erasing (cutout) in place: one rectangle set to 0 in a ``prob`` share of images."""
    b, _, h, w = x.shape
    chosen = torch.rand(b, generator=generator) < prob
    area = torch.empty(b).uniform_(*scale, generator=generator) * (h * w)
    aspect = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                     generator=generator).exp()
    height = (area * aspect).sqrt().round().clamp(1, h).long()
    width = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(b, generator=generator) * (h - height + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - width + 1)).long()
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    return x.masked_fill_(mask[:, None].to(x.device), 0.0)


class BatchTransform:
    """uint8 ``(B, C, H, W)`` batch -> normalised float32, augmented when given a generator."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: AugmentConfig | None = None,
        resize: int | None = None,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
    ) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(f"mean {tuple(mean)} and std {tuple(std)} must have one value per "
                              "channel, and std must be > 0")
        if resize is not None and resize < 1:
            raise ConfigError(f"resize must be a positive image size or None, got {resize}")
        self.device = torch.device(device)
        # (x / 255 - mean) / std == x * scale + shift
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (1 / (255 * std_t)).to(self.device)
        self.shift = (-mean_t / std_t).to(self.device)
        self.augment = augment if augment is not None and augment.active else None
        self.resize = resize
        self.channels_last = channels_last

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None,
        flipped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if images.shape[1] != self.scale.shape[1]:
            raise ConfigError(f"images have {images.shape[1]} channel(s) but mean/std have "
                              f"{self.scale.shape[1]}")
        augment = self.augment if generator is not None else None
        x = images.to(self.device, non_blocking=True)
        if augment is not None:
            x = crop_flip(x, augment.crop_padding, augment.flip, generator, flipped)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.float()  # keeps the memory format
        h, w = x.shape[-2:]
        if self.resize is not None and (h, w) != (self.resize, self.resize):
            # Antialiasing matters only when shrinking; torch's then matches PIL's resize.
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                              align_corners=False, antialias=self.resize < min(h, w))
        x = x.mul_(self.scale).add_(self.shift)
        if augment is not None and augment.erase_prob > 0:
            erase(x, augment.erase_prob, augment.erase_scale, augment.erase_ratio, generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def progressive_side(start: int, full: int, epoch: int, epochs: int) -> int:
    """The side epoch ``epoch`` (from 0) of ``epochs`` trains at: ``start`` first, growing
    linearly to ``full`` by half-way, in steps of 2 pixels (even sides keep the maps of
    stride-2 stages aligned)."""
    halfway = epochs / 2
    if epoch >= halfway:
        return full
    side = start + (full - start) * epoch / halfway
    return min(full, 2 * round(side / 2))
