"""Per-layer gradient norms of plain and residual nets: does the shortcut carry the gradient?

Each net is a planned run of a few hundred steps through the training engine; its probe
measures the gradient norms before the first step and after the last."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reslab.data import BatchLoader, Dataset
from reslab.errors import ConfigError
from reslab.experiments.common import cifar_spec, net_name, seeded
from reslab.experiments.protocol import (
    Analysis,
    Experiment,
    PlannedRun,
    Probe,
    RunResult,
    Settings,
    setting,
)
from reslab.experiments.report import count, legend_outside, markdown_table, new_figure
from reslab.training import TrainConfig


@dataclass
class GradientSettings(Settings):
    depths: tuple[int, ...] = setting((20, 32, 44, 56, 110), "CIFAR-style depths 6n + 2",
                                      low=8)
    steps: int = setting(300, "SGD steps between the two measurements")
    batch_size: int = setting(128, "images per SGD step and per measured batch")
    # constant: lr 0.1 needs a warm-up at depth 110 (He et al. 2015)
    lr: float = setting(0.05, "the constant learning rate")
    measure_batches: int = setting(4, "validation batches each gradient norm is averaged over")
    width: int = setting(16, "channels of the first stage")
    seed: int = setting(0, "of the weights (plain and residual nets start alike) and the data "
                        "order", low=0)


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions and linear layers in the order the input meets them."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def layer_gradient_norms(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
                         ) -> list[float]:
    """||dL/dW|| of each weighted layer, averaged over ``batches`` (train mode, as in SGD)."""
    layers = [m for _, m in weighted_layers(model)]
    sums = [0.0] * len(layers)
    model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for i, layer in enumerate(layers):
            sums[i] += float(layer.weight.grad.norm())
    model.zero_grad(set_to_none=True)
    return [total / len(batches) for total in sums]


def sgd_config(s: GradientSettings, data: Dataset) -> TrainConfig:
    """``steps`` SGD steps through the engine: momentum 0.9, weight decay 1e-4 on every
    weight, a constant rate, fp32, pad-crop-flip augmentation; no label smoothing."""
    steps_per_epoch = max(len(data.train) // s.batch_size, 1)
    return TrainConfig(
        data=data.name, val_size=None, lr=s.lr, momentum=0.9, nesterov=False,
        weight_decay=1e-4, decay_bn_and_bias=True, schedule="constant", warmup_epochs=0.0,
        label_smoothing=0.0, precision="fp32", channels_last=False, tta_flip=False,
        crop_padding=min(2, data.image_shape[1] // 8), flip=True, batch_size=s.batch_size,
        epochs=math.ceil(s.steps / steps_per_epoch), max_steps=s.steps, seed=s.seed,
        quiet=s.quiet)


class GradientProbe(Probe):
    """Per-layer gradient norms on fixed validation batches before the first step and after
    the last (on a copy: measuring must not move BN's statistics), and each step's loss."""

    def __init__(self, data: Dataset, s: GradientSettings):
        self.data, self.s = data, s

    def start(self, model: nn.Module, config) -> dict[str, Any]:
        return {"init": self._norms(model)}

    def on_step(self, state, loss: float, correct: int, images: int) -> dict[str, Any]:
        return {"loss": loss}

    def on_epoch_end(self, row: dict[str, Any], model: nn.Module) -> dict[str, Any] | None:
        return {"trained": self._norms(model)} if row["step"] >= self.s.steps else None

    def _norms(self, model: nn.Module) -> list[float]:
        device = next(model.parameters()).device
        # the same fixed batches before and after training, so only the weights differ
        loader = BatchLoader(self.data.val, self.s.batch_size, train=False, mean=self.data.mean,
                             std=self.data.std, device=device, channels_last=False)
        batches = list(itertools.islice(loader, self.s.measure_batches))
        with torch.enable_grad():  # the engine calls epoch hooks under no_grad
            return layer_gradient_norms(copy.deepcopy(model), batches)


class Gradients(Experiment):
    name = "gradients"
    title = "Gradients: per-layer gradient norms of plain and residual networks"
    settings = GradientSettings
    modes = {"quick": dict(depths=(20, 56, 110), steps=30, batch_size=64, measure_batches=2)}

    def plan(self, s: GradientSettings, data: Dataset) -> list[PlannedRun]:
        if len(data.val) == 0:
            raise ConfigError("gradients needs validation images to measure on: val_size is 0")
        config = sgd_config(s, data)
        return [PlannedRun(net_name(depth, plain), net_name(depth, plain),
                           seeded(cifar_spec(depth, data, plain=plain, width=s.width), s.seed),
                           config, probe=GradientProbe(data, s),
                           info=dict(net=net_name(depth, plain), depth=depth, plain=plain))
                for depth in sorted(set(s.depths)) for plain in (True, False)]

    def analyse(self, s: GradientSettings, data: Dataset, runs: dict[str, RunResult],
                measured: dict[str, Any]) -> Analysis:
        rows, layers = [], []
        for result in runs.values():
            info, probe = result.info, result.probe
            at_init = next(p["init"] for p in probe if "init" in p)
            trained = next(p["trained"] for p in probe if "trained" in p)
            losses = [p["loss"] for p in probe if "loss" in p]
            names = [n for n, _ in weighted_layers(result.fit.model)]
            layers += [{**info, "index": i, "layer": n, "init": a, "trained": b}
                       for i, (n, a, b) in enumerate(zip(names, at_init, trained, strict=True), 1)]
            # first conv vs the last conv: the classifier is not part of the deep stack
            rows.append({**info, "ratio_init": at_init[0] / at_init[-2],
                         "ratio_trained": trained[0] / trained[-2],
                         "loss_start": losses[0], "loss_end": _tail_mean(losses)})
        measured_on = min(s.measure_batches, math.ceil(len(data.val) / s.batch_size))
        batches = count(measured_on, "fixed validation batch", "fixed validation batches")
        figures = {}
        for depth in sorted(set(s.depths)):
            figures[f"gradients-{depth}.png"] = (
                _plot([r for r in layers if r["depth"] == depth], depth, s.steps),
                f"Depth {depth}: gradient norm of each weighted layer's weights at "
                f"initialisation (dashed) and after {count(s.steps, 'SGD step')} (solid), "
                f"on {batches}, log scale")
        tail = max(s.steps // 10, 1)
        table = markdown_table(
            ["depth", "net", "first/last at init", f"first/last after {count(s.steps, 'step')}",
             "train loss at start", f"train loss after {count(s.steps, 'step')}"],
            [[r["depth"], r["net"], f"{r['ratio_init']:.3g}", f"{r['ratio_trained']:.3g}",
              f"{r['loss_start']:.3f}", f"{r['loss_end']:.3f}"] for r in rows]) + "\n\n" + (
            "*first/last: a ratio of two gradient norms (no unit), the first convolution's "
            "over the last convolution's, measured in training mode on "
            f"{batches} (held-out training images, not "
            "augmented). Train loss: cross-entropy in nats per image, raw (no label "
            "smoothing), on the augmented training batches in training mode; at start: the "
            f"first step's batch; after {count(s.steps, 'step')}: the mean over the last "
            f"{count(tail, 'step')}' batches. One seed ({s.seed}), so no spread.*")
        description = (
            f"Plain and residual CIFAR-style networks (option-A shortcuts) of depths "
            f"{', '.join(map(str, sorted(set(s.depths))))} start from the same weights. For "
            "each weighted layer (convolutions and the classifier) we measure the norm of the "
            "loss gradient with respect to its weights, averaged over "
            f"{batches} of up to {s.batch_size} "
            f"{data.name} images, at initialisation and after {count(s.steps, 'SGD step')} "
            f"(lr {s.lr}, momentum 0.9, the training engine's own step). \"first/last\" is the "
            "first convolution's gradient norm divided by the last convolution's: well below "
            "1, the gradient fades on its way back to the input; well above 1, it grows. "
            "Layers differ in size, so compare a plain net with the residual net of the same "
            "depth (same layers, same initial weights) rather than one layer with another. "
            "Seed 002's argument: a residual unit computes g(f(x)) + f(x), so d/dw of it keeps "
            "the term df/dw however small the product through g becomes."
        )
        depths = ", ".join(map(str, sorted(set(s.depths))))
        return Analysis(
            description=description, table=table, findings=findings(rows, s.steps),
            figures=figures,
            shows=[f"At depths {depths}, with one seed's weights shared by the plain and the "
                   "residual net, how the gradient's size changes from the last layer back to "
                   f"the first, at initialisation and after {count(s.steps, 'SGD step')}, and "
                   "how far the training loss fell in those steps."],
            does_not_show=[
                "That the gradient's size is why deep plain nets train worse: this measures the "
                "gradients, it does not test whether evening them out would help.",
                f"Anything past {count(s.steps, 'step')} of a constant rate, or about another "
                "seed: one seed, no spread, so small differences between depths may be noise.",
                "A comparison of one layer with another in absolute terms: layers differ in "
                "size; compare a plain net with the residual net of the same depth."],
            results={"rows": rows, "layers": layers})


def _tail_mean(losses: list[float]) -> float:
    tail = losses[-max(len(losses) // 10, 1):]
    return sum(tail) / len(tail)


def findings(rows: list[dict[str, Any]], steps: int) -> list[str]:
    depth = max(r["depth"] for r in rows)
    plain = next(r for r in rows if r["plain"] and r["depth"] == depth)
    residual = next(r for r in rows if not r["plain"] and r["depth"] == depth)
    p, q = plain["ratio_init"], residual["ratio_init"]
    # a ratio of 1 is a gradient that keeps its size from the last layer back to the first
    if _distance(q) >= _distance(p):
        why = "the shortcut did not keep the gradient more even here"
    elif p < 1:
        why = ("in the plain net the gradient fades on its way back to the input and the "
               "shortcut carries it through, as seed 002's argument predicts")
    else:
        why = ("in the plain net the gradient grows on its way back to the input (with batch "
               "normalisation deep plain nets explode rather than vanish at initialisation), "
               "and the shortcut keeps it in scale")
    sentences = [f"At depth {depth} and initialisation, the first layer's gradient norm is "
                 f"{p:.3g}x the last layer's in {plain['net']} and {q:.3g}x in "
                 f"{residual['net']}: {why}."]
    plains = sorted((r for r in rows if r["plain"]), key=lambda r: r["depth"])
    residuals = sorted((r for r in rows if not r["plain"]), key=lambda r: r["depth"])
    if len(plains) > 1:
        a, b = plains[0]["ratio_init"], plains[-1]["ratio_init"]
        c, d = residuals[0]["ratio_init"], residuals[-1]["ratio_init"]
        only = "only " if abs(_distance(d) - _distance(c)) < abs(_distance(b) - _distance(a)) \
            else ""
        sentences.append(f"From depth {plains[0]['depth']} to {plains[-1]['depth']} the plain "
                         f"nets' ratio goes from {a:.3g} to {b:.3g}, the residual nets' {only}"
                         f"from {c:.3g} to {d:.3g}.")
    a, b = plain["loss_end"], residual["loss_end"]
    pt, rt = plain["ratio_trained"], residual["ratio_trained"]
    fades = (f": now the gradient fades on its way back through {plain['net']}"
             if pt < 1 and _distance(pt) > _distance(rt) else "")
    sentences.append(f"After {count(steps, 'step')} the ratio is {pt:.3g} in {plain['net']} "
                     f"and {rt:.3g} in {residual['net']}{fades}; the training loss reached "
                     f"{b:.3f} in {residual['net']} against {a:.3f} in {plain['net']}"
                     + (", so the residual net learns faster." if b < a else
                        ": the plain net was not slower here."))
    return sentences


def _distance(ratio: float) -> float:
    """How far a gradient ratio is from 1, growing and shrinking alike."""
    return abs(math.log(ratio)) if ratio > 0 else math.inf


def _plot(layers: list[dict[str, Any]], depth: int, steps: int):
    figure, ax = new_figure(size=(7, 4.8))
    for colour, marker, plain in (("C3", "s", True), ("C0", "o", False)):
        points = [r for r in layers if r["plain"] == plain]
        index = [r["index"] for r in points]
        net = net_name(depth, plain)
        every = max(len(index) // 15, 1)
        ax.plot(index, [r["init"] for r in points], "--", color=colour, linewidth=1,
                marker=marker, markersize=4, markerfacecolor="none", markevery=every,
                label=f"{net} at initialisation")
        ax.plot(index, [r["trained"] for r in points], "-", color=colour, linewidth=2,
                marker=marker, markersize=4, markevery=every,
                label=f"{net} after {count(steps, 'step')}")
    ax.set_yscale("log")
    ax.set_xlabel("weighted layer (1 = first conv, last = classifier)")
    ax.set_ylabel("gradient norm ||dL/dW|| (validation batches, log)")
    ax.set_title(f"Depth {depth}: gradient norm per layer")
    ax.grid(alpha=0.3, which="both")
    legend_outside(figure)
    return figure


EXPERIMENT = Gradients()
