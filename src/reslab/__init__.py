"""reslab: residual networks from one spec — build, inspect, train and explain them.

The names below are imported on first use, so that ``import reslab`` (and the command line's
``--help``) does not load torch until something needs it.
"""

import importlib

__version__ = "0.1.0"
_EXPORTS = {
    "Comparison": "reslab.models.summary", "Summary": "reslab.models.summary",
    "compare": "reslab.models.summary", "summary": "reslab.models.summary",
    "ResNetSpec": "reslab.models", "build": "reslab.models", "create_model": "reslab.models",
    "get_spec": "reslab.models", "list_models": "reslab.models", "load_weights": "reslab.models",
    "save_weights": "reslab.models",
    "TrainConfig": "reslab.training", "fit": "reslab.training", "train": "reslab.training",
    "TrainedModel": "reslab.trained", "load": "reslab.trained",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reslab' has no attribute {name!r}")
