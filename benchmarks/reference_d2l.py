"""The baseline every benchmark compares with: ResNets written the way seed 003 (D2L 7.6)
writes them, trained the way D2L's ``train_ch6`` trains — eager PyTorch, fp32, NCHW, plain SGD.

``Residual``, ``resnet_block`` and the ``b1..b5`` ``nn.Sequential`` are the seed's code. For
ResNet-50 the seed has no bottleneck, so ``Bottleneck`` is written in the same style (convs with
bias, a 1x1-conv shortcut). ``net(name, ...)`` gives a network of the same size as reslab's
model of that name.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the seed's spelling)


class Residual(nn.Module):
    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blk.append(Residual(num_channels, num_channels))
    return blk


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), in the seed's style."""

    def __init__(self, input_channels, mid_channels, strides=1):
        super().__init__()
        out_channels = mid_channels * 4
        self.conv1 = nn.Conv2d(input_channels, mid_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, kernel_size=1)
        if strides != 1 or input_channels != out_channels:
            self.conv4 = nn.Conv2d(input_channels, out_channels, kernel_size=1, stride=strides)
        else:
            self.conv4 = None
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = F.relu(self.bn2(self.conv2(Y)))
        Y = self.bn3(self.conv3(Y))
        if self.conv4:
            X = self.conv4(X)
        Y += X
        return F.relu(Y)


def bottleneck_block(input_channels, mid_channels, num_residuals, first_block=False):
    blk = [Bottleneck(input_channels, mid_channels, strides=1 if first_block else 2)]
    blk += [Bottleneck(mid_channels * 4, mid_channels) for _ in range(num_residuals - 1)]
    return blk


def net(name: str, in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """The seed's network for ``d2l_resnet18`` and ``resnet18``; its bottleneck twin for
    ``resnet50``."""
    b1 = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    if name in ("d2l_resnet18", "resnet18"):
        b2 = nn.Sequential(*resnet_block(64, 64, 2, first_block=True))
        b3 = nn.Sequential(*resnet_block(64, 128, 2))
        b4 = nn.Sequential(*resnet_block(128, 256, 2))
        b5 = nn.Sequential(*resnet_block(256, 512, 2))
        features = 512
    elif name == "resnet50":
        b2 = nn.Sequential(*bottleneck_block(64, 64, 3, first_block=True))
        b3 = nn.Sequential(*bottleneck_block(256, 128, 4))
        b4 = nn.Sequential(*bottleneck_block(512, 256, 6))
        b5 = nn.Sequential(*bottleneck_block(1024, 512, 3))
        features = 2048
    else:
        raise ValueError(f"no reference network for {name!r}: d2l_resnet18, resnet18, resnet50")
    return nn.Sequential(b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(features, num_classes))


def train_step(net: nn.Module, optimizer, loss, X: torch.Tensor, y: torch.Tensor) -> float:
    """One step of D2L's ``train_ch6`` loop (its metric: the batch's correct predictions)."""
    optimizer.zero_grad()
    y_hat = net(X)
    l = loss(y_hat, y)
    l.backward()
    optimizer.step()
    with torch.no_grad():
        return float((y_hat.argmax(dim=1) == y).sum())


def trainer(net: nn.Module, lr: float = 0.05):
    """D2L's ``train_ch6`` set-up: plain SGD, cross-entropy, the net in training mode."""
    net.train()
    return torch.optim.SGD(net.parameters(), lr=lr), nn.CrossEntropyLoss()
