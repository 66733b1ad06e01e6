"""How a zoo model's published weights expect their images: size, normalisation, resizing.

The values are timm's ``pretrained_cfg`` for its models, and torchvision's transforms for
torchvision's (where both publish a model of one name, reslab's name is torchvision's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's ResNet names; timm has them too, with the same weights' keys
TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                     "wide_resnet50_2", "wide_resnet101_2")


@dataclass(frozen=True)
class PretrainedCfg:
    input_size: tuple[int, int, int]  # C, H, W the weights were trained at
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"  # how images are resized: "bilinear", "bicubic"
    crop_pct: float = 0.875  # evaluation: resize to side / crop_pct, then centre-crop side
    test_input_size: tuple[int, int, int] | None = None  # a larger size that tests better


TORCHVISION = PretrainedCfg((3, 224, 224), interpolation="bilinear", crop_pct=0.875)
_TIMM_224 = PretrainedCfg((3, 224, 224), test_input_size=(3, 288, 288))
_TIMM_256 = PretrainedCfg((3, 256, 256), crop_pct=0.95, test_input_size=(3, 320, 320))
_TIMM_176 = PretrainedCfg((3, 176, 176), test_input_size=(3, 224, 224))

CFGS: dict[str, PretrainedCfg] = {
    **dict.fromkeys(TORCHVISION_NAMES, TORCHVISION),
    "resnet10t": _TIMM_176, "resnet14t": _TIMM_176,
    **dict.fromkeys(["resnet18d", "resnet26", "resnet26d", "resnet34d", "resnet50d",
                     "resnet50t", "resnext50d_32x4d", "seresnext50_32x4d", "ecaresnet50d",
                     "resnetblur50"], _TIMM_224),
    "resnet26t": replace(_TIMM_256, crop_pct=0.94),
    **dict.fromkeys(["resnet101d", "resnet152d", "resnet200d"], _TIMM_256),
    **dict.fromkeys(["seresnet50", "resnetaa50d"], replace(_TIMM_224, crop_pct=0.95)),
    "resnetrs50": PretrainedCfg((3, 160, 160), crop_pct=0.91, test_input_size=(3, 224, 224)),
    "resnetrs101": PretrainedCfg((3, 192, 192), crop_pct=0.94, test_input_size=(3, 288, 288)),
    "resnet50_gn": replace(_TIMM_224, crop_pct=0.94),
    "resnetv2_50": replace(_TIMM_224, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.95),
    "resnetv2_50d": PretrainedCfg((3, 224, 224), mean=(0.5,) * 3, std=(0.5,) * 3),
}


def pretrained_cfg(name: str) -> PretrainedCfg | None:
    """The input configuration of ``name``'s published weights; None for a zoo model that
    has none (the CIFAR nets, the seed's D2L net, ...)."""
    return CFGS.get(name)
