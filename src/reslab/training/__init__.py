"""Training: one typed config, presets, the fit loop, checkpoints and evaluation."""

from reslab.training.config import PRESETS, TrainConfig, preset
from reslab.training.fit import FitResult, fit, train

__all__ = ["PRESETS", "FitResult", "TrainConfig", "fit", "preset", "train"]
