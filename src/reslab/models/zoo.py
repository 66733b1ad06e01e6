"""The model zoo: named specs, and ``create_model`` / ``list_models`` in timm's style."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from reslab.errors import SpecError, UnknownNameError, close_matches
from reslab.models.build import build
from reslab.models.features import FeatureNet
from reslab.models.lenet import LeNetBN
from reslab.models.pretrained import CFGS, pretrained_cfg
from reslab.models.spec import ResNetSpec
from reslab.models.weights import load_weights

_IMAGENET = dict(widths=(64, 128, 256, 512))
_BASIC = dict(_IMAGENET, block="basic")
_BOTTLENECK = dict(_IMAGENET, block="bottleneck")
# He et al. 2015 section 4.2: 3 stages of 16/32/64 at 32x32, n units each, option A shortcuts.
_CIFAR = dict(
    block="basic", widths=(16, 32, 64), stem="cifar", stem_width=16,
    shortcut="pad", num_classes=10, input_size=32,
)


def _cifar(depth: int, **extra: Any) -> ResNetSpec:
    n = (depth - 2) // 6
    return ResNetSpec(**(_CIFAR | dict(depths=(n, n, n)) | extra))


def _preact_cifar(depth: int, block: str = "basic") -> ResNetSpec:
    # He et al. 2016: full pre-activation; 1x1-conv shortcuts where the shape changes.
    per_unit = 3 if block == "bottleneck" else 2
    n = (depth - 2) // (3 * per_unit)
    return ResNetSpec(**(_CIFAR | dict(
        depths=(n, n, n), block=block, ordering="full_preact", shortcut="conv"
    )))


def _wide(depth: int, k: int) -> ResNetSpec:
    # Zagoruyko & Komodakis 2016, WRN-d-k: pre-activation basic units, widths 16k/32k/64k.
    n = (depth - 4) // 6
    return ResNetSpec(**(_CIFAR | dict(
        depths=(n, n, n), widths=(16 * k, 32 * k, 64 * k),
        ordering="full_preact", shortcut="conv",
    )))


SPECS: dict[str, ResNetSpec] = {
    # torchvision's ImageNet models, key for key
    "resnet18": ResNetSpec(**_BASIC, depths=(2, 2, 2, 2)),
    "resnet34": ResNetSpec(**_BASIC, depths=(3, 4, 6, 3)),
    "resnet50": ResNetSpec(**_BOTTLENECK, depths=(3, 4, 6, 3)),
    "resnet101": ResNetSpec(**_BOTTLENECK, depths=(3, 4, 23, 3)),
    "resnet152": ResNetSpec(**_BOTTLENECK, depths=(3, 8, 36, 3)),
    "resnext50_32x4d": ResNetSpec(**_BOTTLENECK, depths=(3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": ResNetSpec(
        **_BOTTLENECK, depths=(3, 4, 23, 3), groups=32, width_per_group=8
    ),
    "resnext101_64x4d": ResNetSpec(
        **_BOTTLENECK, depths=(3, 4, 23, 3), groups=64, width_per_group=4
    ),
    "wide_resnet50_2": ResNetSpec(**_BOTTLENECK, depths=(3, 4, 6, 3), width_per_group=128),
    "wide_resnet101_2": ResNetSpec(**_BOTTLENECK, depths=(3, 4, 23, 3), width_per_group=128),
    # The seed's D2L ResNet-18: conv biases, 1x1-conv shortcut without BN, 1 channel, 10 classes
    "d2l_resnet18": ResNetSpec(
        **_BASIC, depths=(2, 2, 2, 2), shortcut="conv", conv_bias=True,
        in_channels=1, num_classes=10, input_size=96,
    ),
    # ImageNet-style plain networks (He et al. 2015, Table 1 without shortcuts)
    "plain18": ResNetSpec(**_BASIC, depths=(2, 2, 2, 2), shortcut="none"),
    "plain34": ResNetSpec(**_BASIC, depths=(3, 4, 6, 3), shortcut="none"),
    # pre-activation (He et al. 2016); preact_resnet18 is the common CIFAR variant
    "preact_resnet18": ResNetSpec(
        **_BASIC, depths=(2, 2, 2, 2), stem="cifar", ordering="full_preact",
        shortcut="conv", num_classes=10, input_size=32,
    ),
    "preact_resnet110": _preact_cifar(110),
    "preact_resnet164": _preact_cifar(164, "bottleneck"),
    "preact_resnet1001": _preact_cifar(1001, "bottleneck"),
    "wrn16_4": _wide(16, 4),
    "wrn28_10": _wide(28, 10),
    "wrn40_4": _wide(40, 4),
}
# The `fast` preset's network: the CIFAR ResNet's stem and option-A units, one unit per stage
# and a fourth stage (16/32/64/128 channels at 28/14/7/4 on 28x28 input): 10 weight layers
# where resnet14 has 14, 1.6x fewer multiply-adds, and on a 2-core CPU more accuracy per
# second of training (docs/benchmarks.md, "Time to accuracy")
# reslab's own Fashion-MNIST net (`reslab train`'s default): 1x28x28 in, 10 classes out
SPECS["fast_resnet10"] = ResNetSpec(**(_CIFAR | dict(depths=(1, 1, 1, 1),
                                                     widths=(16, 32, 64, 128), in_channels=1,
                                                     input_size=28)))
for _depth in (14, 20, 32, 44, 56, 110, 1202):
    SPECS[f"resnet{_depth}"] = _cifar(_depth)
    if _depth <= 110:
        SPECS[f"plain{_depth}"] = _cifar(_depth, shortcut="none")
# The other four BN/ReLU orderings of He et al. 2016 ("Identity Mappings", Fig. 4 b-e; resnetN
# is (a)) with option-A shortcuts, as `reslab experiment orderings` builds them: at depth 20,
# the experiment's 56 and the paper's 110
_ORDERINGS = {"b": "bn_after_add", "c": "relu_before_add", "d": "relu_preact",
              "e": "full_preact"}
for _depth in (20, 56, 110):
    for _letter, _ordering in _ORDERINGS.items():
        SPECS[f"resnet{_depth}_{_letter}"] = _cifar(_depth, ordering=_ordering)

# timm's ResNet family, weight-compatible with timm 1.0 (its names, keys and shapes); each
# at the input size its weights were trained at. -D: deep stem and average-pool shortcuts
# (He et al. 2019, "Bag of Tricks"); -T: the deep stem tiered 24/32/64.
_D = dict(stem="deep", avg_down=True)
_T = dict(stem="tiered", avg_down=True)
_V2 = dict(naming="resnetv2", ordering="full_preact", shortcut="conv")
_RS = dict(_D, stem_pool="conv", attention="se", attention_ratio=0.25)  # ResNet-RS
_X32 = dict(groups=32, width_per_group=4)
_TIMM = {
    "resnet10t": dict(_BASIC, depths=(1, 1, 1, 1), **_T),
    "resnet14t": dict(_BOTTLENECK, depths=(1, 1, 1, 1), **_T),
    "resnet18d": dict(_BASIC, depths=(2, 2, 2, 2), **_D),
    "resnet26": dict(_BOTTLENECK, depths=(2, 2, 2, 2)),
    "resnet26d": dict(_BOTTLENECK, depths=(2, 2, 2, 2), **_D),
    "resnet26t": dict(_BOTTLENECK, depths=(2, 2, 2, 2), **_T),
    "resnet34d": dict(_BASIC, depths=(3, 4, 6, 3), **_D),
    "resnet50d": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_D),
    "resnet50t": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_T),
    "resnet101d": dict(_BOTTLENECK, depths=(3, 4, 23, 3), **_D),
    "resnet152d": dict(_BOTTLENECK, depths=(3, 8, 36, 3), **_D),
    "resnet200d": dict(_BOTTLENECK, depths=(3, 24, 36, 3), **_D),
    "resnext50d_32x4d": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_X32, **_D),
    "seresnet50": dict(_BOTTLENECK, depths=(3, 4, 6, 3), attention="se"),
    "seresnext50_32x4d": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_X32, attention="se"),
    "ecaresnet50d": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_D, attention="eca"),
    "resnetaa50d": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_D, anti_alias="avgpool"),
    "resnetblur50": dict(_BOTTLENECK, depths=(3, 4, 6, 3), anti_alias="blur"),
    "resnetrs50": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_RS),
    "resnetrs101": dict(_BOTTLENECK, depths=(3, 4, 23, 3), **_RS),
    "resnet50_gn": dict(_BOTTLENECK, depths=(3, 4, 6, 3), norm="groupnorm"),
    "resnetv2_50": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_V2),
    "resnetv2_50d": dict(_BOTTLENECK, depths=(3, 4, 6, 3), **_V2, **_D),
}
TIMM_FAMILY = tuple(_TIMM)
for _name, _fields in _TIMM.items():
    # timm's ResNet starts each unit's last norm at zero (zero_init_last); ResNetV2 does not
    SPECS[_name] = ResNetSpec(**_fields, zero_init_residual=_fields.get("naming") != "resnetv2",
                              input_size=CFGS[_name].input_size[1])

# Non-residual baselines that are not ResNetSpecs; they take in_channels / num_classes only.
BASELINES: dict[str, Callable[..., nn.Module]] = {"lenet_bn": LeNetBN}


def list_models(pattern: str = "*") -> list[str]:
    """Names in the zoo matching a shell-style pattern, sorted naturally."""
    import fnmatch

    from reslab.tables import natural_key

    names = [n for n in (*SPECS, *BASELINES) if fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=natural_key)


def _unknown(name: str) -> UnknownNameError:
    close = close_matches(name, list_models(), n=4, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; `reslab models` lists them all"
    return UnknownNameError(f"unknown model {name!r}{hint}")


def check_model_name(name: str) -> None:
    """Refuse a name the zoo lacks (naming the closest) before any work is done for it."""
    if name not in SPECS and name not in BASELINES:
        raise _unknown(name)


def get_spec(name: str, **overrides: Any) -> ResNetSpec:
    """The zoo's spec for ``name``, with fields overridden (num_classes=, in_channels=, ...)."""
    if name not in SPECS:
        if name in BASELINES:
            raise SpecError(f"{name!r} is not a residual network and has no ResNetSpec")
        raise _unknown(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return SPECS[name].replace(**overrides) if overrides else SPECS[name]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    weights: str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a zoo model, e.g. ``create_model("resnet50", num_classes=10, in_channels=1)``.

    ``weights``: a torchvision/timm/reslab weights file to start from; a classifier of
    another size is replaced and a 3-channel first conv adapted (see ``load_weights``).
    The model carries ``pretrained_cfg``: input size, mean/std, interpolation and crop of
    the published weights of ``name`` (None if none are published).
    ``features_only``: the network without its head, returning the maps at ``out_indices``
    (0: the stem, i: stage i; all by default) and describing them in ``feature_info``.
    """
    if features_only:
        spec = get_spec(name, num_classes=num_classes, in_channels=in_channels, **overrides)
        model = FeatureNet(spec, out_indices)
    elif out_indices is not None:
        raise SpecError("out_indices chooses feature maps: pass features_only=True with it")
    else:
        model = _create(name, num_classes, in_channels, overrides)
    # how the published weights of this name expect their images (None: none published)
    model.pretrained_cfg = pretrained_cfg(name)
    if weights is not None:
        load_weights(model, weights)
    return model


def _create(name: str, num_classes, in_channels, overrides: dict[str, Any]) -> nn.Module:
    if name in BASELINES:
        if overrides:
            raise SpecError(
                f"{name!r} takes only num_classes and in_channels, not {sorted(overrides)}"
            )
        kwargs = {k: v for k, v in dict(num_classes=num_classes, in_channels=in_channels).items()
                  if v is not None}
        return BASELINES[name](**kwargs)
    return build(get_spec(name, num_classes=num_classes, in_channels=in_channels, **overrides))
