"""The one builder: any valid ResNetSpec becomes a ResNet module.

Top-level names match torchvision (``conv1``, ``bn1``, ``layer1``..., ``fc``) so published
weight files load as they are. The model API follows timm: ``forward_features``,
``forward_head``, ``reset_classifier``, plus ``forward_stages`` for per-stage feature maps.
"""

from __future__ import annotations

import torch
from torch import nn

from reslab.models.blocks import ResidualUnit, conv3x3
from reslab.models.spec import Ordering, ResNetSpec, Stem


class ResNet(nn.Module):
    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        self.stage_names: list[str] = []
        self._build_stem(spec)
        channels = spec.stem_width
        for i, (depth, width) in enumerate(zip(spec.depths, spec.widths, strict=True)):
            units = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                units.append(
                    ResidualUnit(
                        spec.block, channels, width, stride,
                        groups=spec.groups, width_per_group=spec.width_per_group,
                        shortcut=spec.shortcut, ordering=spec.ordering, bias=spec.conv_bias,
                        bottleneck_stride=spec.bottleneck_stride,
                    )
                )
                channels = units[-1].out_channels
            self.stage_names.append(f"layer{i + 1}")
            self.add_module(self.stage_names[-1], nn.Sequential(*units))
        # Pre-activation units leave their sum un-normalised: one last BN-ReLU (or ReLU).
        if spec.ordering is Ordering.FULL_PREACT:
            self.final_act = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
        elif spec.ordering is Ordering.RELU_PREACT:
            self.final_act = nn.ReLU()
        else:
            self.final_act = nn.Identity()
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # any input size; nothing hard-wired in the head
        self.fc = self._make_classifier(spec.num_classes)
        self._init_weights()

    def _build_stem(self, spec: ResNetSpec) -> None:
        width, bias = spec.stem_width, spec.conv_bias
        if spec.stem is Stem.CIFAR:
            self.conv1 = conv3x3(spec.in_channels, width, bias=bias)
        elif spec.stem is Stem.DEEP:
            mid = width // 2
            self.conv1 = nn.Sequential(
                conv3x3(spec.in_channels, mid, stride=2, bias=bias), nn.BatchNorm2d(mid), nn.ReLU(),
                conv3x3(mid, mid, bias=bias), nn.BatchNorm2d(mid), nn.ReLU(),
                conv3x3(mid, width, bias=bias),
            )
        else:
            self.conv1 = nn.Conv2d(spec.in_channels, width, 7, stride=2, padding=3, bias=bias)
        pooled = spec.stem is not Stem.CIFAR
        # A pre-activation net's first unit normalises its own input, so a CIFAR stem is a
        # bare conv; a pooled stem keeps BN-ReLU so the max-pool sees activations.
        if spec.ordering.is_preact and not pooled:
            self.bn1, self.relu = nn.Identity(), nn.Identity()
        else:
            self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if pooled else nn.Identity()

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def _init_weights(self) -> None:
        # torchvision's initialisation; the d2l preset re-initialises explicitly when asked.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.spec.zero_init_residual:
            self.zero_init_residual()

    def units(self) -> list[ResidualUnit]:
        return [m for m in self.modules() if isinstance(m, ResidualUnit)]

    def zero_init_residual(self) -> None:
        """Zero each branch's last BN (or conv): every identity-shortcut unit starts as x."""
        for unit in self.units():
            unit.zero_init_last()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after the stem and after each stage (for FPNs, probes, plots)."""
        features = [self.forward_stem(x)]
        for name in self.stage_names:
            features.append(getattr(self, name)(features[-1]))
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.final_act(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier (0 removes it); the spec follows."""
        self.fc = self._make_classifier(num_classes)
        self.spec = self.spec.replace(num_classes=num_classes)


def build(spec: ResNetSpec) -> ResNet:
    return ResNet(spec)
