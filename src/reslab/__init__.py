"""reslab: residual networks from one spec — build, inspect, train and explain them."""

from reslab.inspect import Comparison, Summary, compare, summary
from reslab.models import (
    ResNetSpec,
    build,
    create_model,
    get_spec,
    list_models,
    load_weights,
    save_weights,
)
from reslab.training import TrainConfig, fit, train

__version__ = "0.1.0"
__all__ = [
    "ResNetSpec", "build", "create_model", "get_spec", "list_models", "load_weights",
    "save_weights", "Comparison", "Summary", "compare", "summary", "TrainConfig", "fit", "train",
]
