"""Residual networks from one declarative spec."""

from reslab.models.blocks import PadShortcut, ResidualUnit
from reslab.models.build import ResNet, build
from reslab.models.lenet import LeNetBN
from reslab.models.spec import Block, Ordering, ResNetSpec, Shortcut, Stem, StrideOn
from reslab.models.weights import LoadReport, load_weights, read_metadata, save_weights
from reslab.models.zoo import SPECS, create_model, get_spec, list_models

__all__ = [
    "SPECS", "Block", "LeNetBN", "Ordering", "PadShortcut", "ResNet", "ResNetSpec",
    "ResidualUnit", "Shortcut", "Stem", "StrideOn", "build", "create_model", "get_spec",
    "list_models", "LoadReport", "load_weights", "read_metadata", "save_weights",
]
