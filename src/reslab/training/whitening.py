"""A whitening first convolution (Page's and Keller Jordan's fast CIFAR-10 recipes): the first
layer's filters are the principal directions of the training images' patches, each scaled by
1/sqrt(its variance), in +/- pairs so that the ReLU after it keeps both signs; the layer is
then frozen. The network starts from decorrelated inputs instead of learning that first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reslab import memory
from reslab.data import BatchTransform, Dataset
from reslab.errors import ConfigError
from reslab.tables import count

PATCH_IMAGES = 5_000  # images the patch covariance is estimated from (enough for 9-27 dims)
EPSILON = 5e-4  # added to each variance: directions with almost none are not blown up


def first_conv(model: nn.Module) -> nn.Conv2d:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError("whiten_stem needs a network whose first layer is a convolution")
    if conv.groups != 1:
        raise ConfigError("whiten_stem needs an ungrouped first convolution")
    return conv


def patch_statistics(images: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (largest first) and eigenvectors (rows, as filters) of the uncentred
    covariance of ``images``' patches of the conv's kernel size and stride."""
    patches = F.unfold(images.double(), conv.kernel_size, dilation=conv.dilation,
                       stride=conv.stride)  # (N, C*kh*kw, positions)
    flat = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    values, vectors = torch.linalg.eigh(flat.T @ flat / len(flat))
    return values.flip(0), vectors.T.flip(0).reshape(-1, *conv.weight.shape[1:])


def setup_whitening(model: nn.Module, data: Dataset, resize: int | None, resume: bool) -> list[str]:
    """A new run's first convolution whitens the first training images as the network sees
    them (normalised, resized, unaugmented); a resumed one's has its filters from the
    checkpoint and stays frozen."""
    if resume:
        freeze_first_conv(model)
        return []
    count_ = min(len(data.train), PATCH_IMAGES)
    conv = first_conv(model)
    channels, side, _ = data.image_shape
    side = resize or side
    # the images in float, their patches in double, and the patches' transposed copy
    patch = channels * math.prod(conv.kernel_size)
    memory.require(count_ * side * side * (4 * channels + 2 * 8 * patch),
                   f"whitening the stem over {count_:,} images of {channels}x{side}x{side}",
                   "lower --resize, or leave out --whiten-stem")
    transform = BatchTransform(data.mean, data.std, resize=resize, channels_last=False)
    images = transform(data.train.load(torch.arange(min(len(data.train), PATCH_IMAGES))))
    return [whiten_first_conv(model, images)]


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor) -> str:
    """Sets the first convolution's filters to whiten ``images`` (normalised, N x C x H x W)
    and freezes it; returns a line saying what it did. With more output channels than twice
    the patch's dimensions, the rest keep their initial filters (frozen too)."""
    conv = first_conv(model)
    if images.shape[1] != conv.in_channels:
        raise ConfigError(f"whiten_stem: images have {count(images.shape[1], 'channel')}, the "
                          f"first convolution takes {conv.in_channels}")
    values, vectors = patch_statistics(images[:PATCH_IMAGES], conv)
    pairs = min(conv.out_channels // 2, len(values))
    filters = vectors[:pairs] / (values[:pairs, None, None, None] + EPSILON).sqrt()
    conv.weight[: 2 * pairs] = torch.cat([filters, -filters]).to(conv.weight)
    if conv.bias is not None:
        conv.bias.zero_()
    freeze_first_conv(model)
    return (f"whitened stem: {conv.out_channels} filters = +/- the top {pairs} of "
            f"{len(values)} patch directions of the training images, frozen")


def freeze_first_conv(model: nn.Module) -> None:
    for p in first_conv(model).parameters():
        p.requires_grad_(False)
