"""Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of a split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reslab.runtime.device import autocast


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    confusion: torch.Tensor  # [true, predicted] counts

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def __repr__(self) -> str:  # one line; .confusion holds the matrix
        return (f"EvalResult(accuracy {self.accuracy:.4f}, loss {self.loss:.4f}, "
                f"{self.count:,} images)")

    def per_class(self, classes: list[str]) -> dict[str, float]:
        totals = self.confusion.sum(dim=1).clamp(min=1)
        return {c: float(self.confusion[i, i] / totals[i]) for i, c in enumerate(classes)}


def predict_proba(model: nn.Module, x: torch.Tensor, tta_flip: bool = False,
                  tta_shift: int = 0) -> torch.Tensor:
    """Class probabilities; with ``tta_flip``, averaged over the image and its mirror, and with
    ``tta_shift`` s, also over each shifted by s pixels down-right and up-left (edges
    reflected): 2 x 3 views with both."""
    views = [x]
    if tta_shift:
        s = tta_shift
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        h, w = x.shape[-2:]
        views += [padded[..., : h, : w], padded[..., 2 * s:, 2 * s:]]
    if tta_flip:
        views += [v.flip(3) for v in views]
    probs = sum(model(v).float().softmax(dim=1) for v in views)
    return probs / len(views)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta_flip: bool = False,
    tta_shift: int = 0,
) -> EvalResult:
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    try:
        for x, y in loader:
            if len(y) == 0:
                continue
            with autocast(device, precision):
                probs = predict_proba(model, x, tta_flip, tta_shift)
            loss_sum += float(F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
            pairs = y.cpu() * num_classes + probs.argmax(dim=1).cpu()
            confusion += torch.bincount(pairs, minlength=num_classes**2).view(
                num_classes, num_classes)
    finally:
        model.train(was_training)
    n = int(confusion.sum())
    if n == 0:
        return EvalResult(float("nan"), float("nan"), confusion)
    return EvalResult(loss_sum / n, float(confusion.diag().sum()) / n, confusion)
