"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"): every
``k`` steps the slow weights move a fraction ``alpha`` toward the fast ones the optimizer made,
and training goes on from the slow weights. airbench uses it (as an EMA every 5 steps) to cut
its CIFAR-10 epochs by a tenth.
"""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    """Slow copies of a model's floating-point parameters and buffers (BN statistics too,
    as airbench does); ``step(n)`` after optimizer step ``n`` syncs on every k-th."""

    def __init__(self, model: nn.Module, k: int, alpha: float) -> None:
        self.k, self.alpha = k, alpha
        self.fast = {name: t for name, t in model.state_dict().items() if t.is_floating_point()}
        self.slow = {name: t.detach().clone() for name, t in self.fast.items()}

    @torch.no_grad()
    def step(self, step: int) -> None:
        if step % self.k:
            return
        for name, fast in self.fast.items():
            slow = self.slow[name]
            slow.lerp_(fast, self.alpha)
            fast.copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.slow)

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        if set(saved) != set(self.slow):
            raise ValueError("lookahead weights do not match the model's")
        for name, tensor in saved.items():
            self.slow[name].copy_(tensor)
