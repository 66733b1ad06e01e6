"""The one builder: any valid ResNetSpec becomes a ResNet module.

Top-level names match torchvision (``conv1``, ``bn1``, ``layer1``..., ``fc``) so published
weight files load as they are; ``naming='resnetv2'`` gives timm's ResNetV2 tree instead
(``stem``, ``stages.N.blocks.M``, ``norm``, ``head.fc``). The model API follows timm:
``forward_features``, ``forward_head``, ``reset_classifier``, ``feature_info``, plus
``forward_stages`` for per-stage feature maps.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from reslab.errors import SpecError
from reslab.models.attention import ATTENTION
from reslab.models.blocks import UNITS, zero_init_last
from reslab.models.layers import ACTIVATIONS, ANTI_ALIAS, NORMS
from reslab.models.spec import Naming, Ordering, ResNetSpec, Stem
from reslab.models.stems import stem_layers


class Stage(nn.Module):
    """timm ResNetV2's stage: its units under ``blocks``."""

    def __init__(self, units: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ConvClassifier(nn.Module):
    """timm ResNetV2's head: a 1x1 conv on the pooled features (``head.fc``)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Conv2d(in_features, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.fc(x[..., None, None]), 1)


class FeatureInfo(list):
    """One dict per feature map: ``num_chs``, ``reduction``, ``module``; timm's getters."""

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self]

    def module_name(self) -> list[str]:
        return [info["module"] for info in self]


def check_names(spec: ResNetSpec) -> None:
    """Refuse a spec whose norm, act, attention, anti_alias or unit no registry holds, naming
    the closest. The spec is plain data (a name registered later is still a valid spec), so
    its names are looked up here, beside the registries, before anything is built."""
    for field, registry, optional in (("norm", NORMS, False), ("act", ACTIVATIONS, False),
                                      ("attention", ATTENTION, True),
                                      ("anti_alias", ANTI_ALIAS, True), ("unit", UNITS, False)):
        value = getattr(spec, field)
        if not (optional and value is None) and value not in registry:
            raise SpecError(registry.unknown(value))


def build_unit(spec: ResNetSpec, in_channels: int, width: int, stride: int = 1,
               drop_path: float = 0.0) -> nn.Module:
    """One unit of the spec's kind (the ``unit`` registry): what ``build`` puts in a stage and
    ``grow`` appends to one."""
    return UNITS.get(spec.unit)(spec, in_channels, width, stride, drop_path)


def init_weights(module: nn.Module) -> None:
    """torchvision's and timm's initialisation, for a network or a unit added to one:
    He-normal conv weights (fan-out), norms at 1 and 0; conv biases (squeeze-excitation's)
    and linear layers keep PyTorch's defaults, as both libraries leave them. (The d2l preset
    re-initialises when asked.)"""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def unit_drop_rates(spec: ResNetSpec) -> list[float]:
    """Stochastic depth per unit, rising linearly from 0 to ``drop_path_rate`` (timm's rule)."""
    n = sum(spec.depths)
    return [spec.drop_path_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


class ResNet(nn.Module):
    def __init__(self, spec: ResNetSpec):
        check_names(spec)  # one line naming the unknown one, before a layer is made
        super().__init__()
        self.spec = spec
        v2 = spec.naming is Naming.RESNETV2
        layers = stem_layers(spec)
        if v2:
            self.stem = nn.Sequential(OrderedDict(layers))
            self.stem_names = ["stem"]
        else:
            for name, module in layers:
                self.add_module(name, module)
            self.stem_names = [name for name, _ in layers]
        # the stem's last map before its pooling: feature 0, as timm numbers them
        self._stem_feature = f"stem.{layers[-2][0]}" if v2 else layers[-2][0]
        drop_rates = iter(unit_drop_rates(spec))
        self.stage_names: list[str] = []
        stages = []
        channels = spec.stem_width
        for i, (depth, width) in enumerate(zip(spec.depths, spec.widths, strict=True)):
            units = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                units.append(build_unit(spec, channels, width, stride, next(drop_rates)))
                channels = units[-1].out_channels
            if v2:
                stages.append(Stage(units))
                self.stage_names.append(f"stages.{i}")
            else:
                self.stage_names.append(f"layer{i + 1}")
                self.add_module(self.stage_names[-1], nn.Sequential(*units))
        if v2:
            self.stages = nn.Sequential(*stages)
        # Pre-activation units leave their sum un-normalised: one last norm-act (or act).
        self.norm = None
        if v2:
            self.norm = NORMS.get(spec.norm)(channels)
            self.final_act = ACTIVATIONS.get(spec.act)()
        elif spec.ordering is Ordering.FULL_PREACT:
            self.final_act = nn.Sequential(NORMS.get(spec.norm)(channels),
                                           ACTIVATIONS.get(spec.act)())
        elif spec.ordering is Ordering.RELU_PREACT:
            self.final_act = ACTIVATIONS.get(spec.act)()
        else:
            self.final_act = nn.Identity()
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # any input size; nothing hard-wired in the head
        self.classifier_name = "head" if v2 else "fc"
        self.add_module(self.classifier_name, self._make_classifier(spec.num_classes))
        self._init_weights()

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        if self.spec.naming is Naming.RESNETV2:
            return ConvClassifier(self.num_features, num_classes)
        return nn.Linear(self.num_features, num_classes)

    def _init_weights(self) -> None:
        init_weights(self)
        head = self.get_classifier()
        if isinstance(head, ConvClassifier):  # timm's ResNetV2 init: N(0, 0.01), zero bias
            # (He's fan-out rule on a 1x1 conv with 10 outputs gives logits of std ~11)
            nn.init.normal_(head.fc.weight, std=0.01)
            nn.init.zeros_(head.fc.bias)
        if self.spec.zero_init_residual:
            self.zero_init_residual()

    def units(self) -> list[nn.Module]:
        """Every unit, in order (any registered unit kind)."""
        return [unit for stage in self.stage_units() for unit in stage]

    def stage_units(self) -> list[nn.Sequential]:
        """Each stage's sequence of units (``grow`` appends to these)."""
        stages = [self.get_submodule(name) for name in self.stage_names]
        return [s.blocks if isinstance(s, Stage) else s for s in stages]

    def stem_modules(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.stem_names]

    def zero_init_residual(self) -> None:
        """Zero each branch's last norm (or conv): every identity-shortcut unit starts as x."""
        for unit in self.units():
            zero_init_last(unit)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.stem_modules():
            x = module(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after the stem and after each stage (for FPNs, probes, plots)."""
        features = [self.forward_stem(x)]
        for name in self.stage_names:
            features.append(self.get_submodule(name)(features[-1]))
        return features

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps ``feature_info`` describes: the stem before its pooling, then each stage."""
        stem = list(self.stem) if self.spec.naming is Naming.RESNETV2 else self.stem_modules()
        for module in stem[:-1]:
            x = module(x)
        features = [x]
        x = stem[-1](x)  # the pooling
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
            features.append(x)
        return features

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction (input side / map side) and module of each map
        ``forward_intermediates`` gives, as timm describes its feature maps."""
        spec = self.spec
        reduction = 1 if spec.stem is Stem.CIFAR else 2
        info = [dict(num_chs=spec.stem_width, reduction=reduction, module=self._stem_feature)]
        reduction *= 1 if spec.stem is Stem.CIFAR else 2  # the stem's pooling
        for i, (name, width) in enumerate(zip(self.stage_names, spec.widths, strict=True)):
            reduction *= 2 if i > 0 else 1
            info.append(dict(num_chs=width * spec.expansion, reduction=reduction, module=name))
        return FeatureInfo(info)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.final_act(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier (0 removes it); the spec follows."""
        setattr(self, self.classifier_name, self._make_classifier(num_classes))
        self.spec = self.spec.replace(num_classes=num_classes)


def build(spec: ResNetSpec) -> ResNet:
    return ResNet(spec)
