"""Training: one typed config, presets, the loop, checkpoints and evaluation.

Imported lazily (``reslab.training.config`` alone needs no torch, for the command line)."""

import importlib

_EXPORTS = {
    "PRESETS": "config", "TrainConfig": "config", "preset": "config",
    "FitResult": "loop", "fit": "loop", "train_epoch": "loop", "train_step": "loop",
    "train": "run", "TrainState": "state",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"reslab.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'reslab.training' has no attribute {name!r}")
