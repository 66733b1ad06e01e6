"""The autocast precisions a run may name, declared once: ``TrainConfig`` and the
experiments' settings take their choices from here. Plain data (no torch), so that the
command line's parser can list them without importing torch."""

from typing import Literal, get_args

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
