"""Residual networks from one declarative spec."""

from reslab.models.attention import ATTENTION, register_attention
from reslab.models.blocks import UNITS, PadShortcut, ResidualUnit, register_unit
from reslab.models.build import ResNet, build
from reslab.models.features import (
    FeatureInfo,
    FeatureNet,
    create_feature_extractor,
    get_graph_node_names,
)
from reslab.models.layers import (
    ACTIVATIONS,
    ANTI_ALIAS,
    NORMS,
    AntiAlias,
    register_act,
    register_anti_alias,
    register_norm,
)
from reslab.models.lenet import LeNetBN
from reslab.models.pretrained import PretrainedCfg, pretrained_cfg
from reslab.models.spec import (
    Block,
    Naming,
    Ordering,
    ResNetSpec,
    Shortcut,
    Stem,
    StemPool,
    StrideOn,
)
from reslab.models.surgery import grow
from reslab.models.weights import LoadReport, load_weights, read_metadata, save_weights
from reslab.models.zoo import SPECS, TIMM_FAMILY, create_model, get_spec, list_models

__all__ = [
    "SPECS", "Block", "grow", "LeNetBN", "Ordering", "PadShortcut", "ResNet", "ResNetSpec",
    "ResidualUnit", "Shortcut", "Stem", "StrideOn", "build", "create_model", "get_spec",
    "list_models", "LoadReport", "load_weights", "read_metadata", "save_weights",
    "TIMM_FAMILY", "PretrainedCfg", "pretrained_cfg", "Naming", "StemPool",
    "ATTENTION", "ACTIVATIONS", "ANTI_ALIAS", "NORMS", "UNITS", "AntiAlias",
    "register_attention", "register_act", "register_anti_alias", "register_norm",
    "register_unit", "FeatureInfo", "FeatureNet", "create_feature_extractor",
    "get_graph_node_names",
]
