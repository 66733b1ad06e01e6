"""Per-layer gradient norms of plain and residual nets: does the shortcut carry the gradient?"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reslab.data import AugmentConfig, BatchLoader, Dataset
from reslab.errors import ConfigError
from reslab.experiments.common import (
    Settings,
    cifar_spec,
    net_name,
    prepare_data,
    prepare_out,
    resolve_settings,
)
from reslab.experiments.report import count, markdown_table, new_figure, save_figure, write_report
from reslab.models import build
from reslab.training import TrainConfig, TrainState, train_step
from reslab.training.runtime import resolve_device

log = logging.getLogger(__name__)
TITLE = "Gradients: per-layer gradient norms of plain and residual networks"


@dataclass
class GradientSettings(Settings):
    depths: tuple[int, ...] = (20, 32, 44, 56, 110)
    steps: int = 300  # SGD steps between the two measurements
    batch_size: int = 128
    lr: float = 0.05  # constant: lr 0.1 needs a warm-up at depth 110 (He et al. 2015)
    measure_batches: int = 4  # validation batches each gradient norm is averaged over
    width: int = 16


QUICK = dict(depths=(20, 56, 110), steps=30, batch_size=64, measure_batches=2)


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


def sgd_steps(model: nn.Module, loader: BatchLoader, steps: int, lr: float) -> list[float]:
    """``steps`` SGD steps (momentum 0.9, weight decay 1e-4 on every weight, constant rate,
    fp32) through the training engine's own step; the losses."""
    config = TrainConfig(lr=lr, momentum=0.9, nesterov=False, weight_decay=1e-4,
                         decay_bn_and_bias=True, schedule="constant", warmup_epochs=0.0,
                         label_smoothing=0.0, precision="fp32", channels_last=False, quiet=True)
    state = TrainState(model, config, total_steps=steps, steps_per_epoch=len(loader))
    model.train()
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            losses.append(train_step(state, x, y)[0])
            if len(losses) == steps:
                break
        epoch += 1
    return losses


def run(out_dir: str | Path, quick: bool = False, data: Dataset | None = None,
        **settings: Any) -> dict[str, Any]:
    s = resolve_settings(GradientSettings, quick, QUICK, settings)
    if not s.depths or s.steps < 1 or s.measure_batches < 1:
        raise ConfigError("gradients needs depths, steps >= 1 and measure_batches >= 1")
    started = time.perf_counter()
    out = prepare_out(out_dir, "gradients", s)
    data = prepare_data(s, data)
    device = resolve_device("auto")
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=False)
    train = BatchLoader(data.train, s.batch_size, train=True, seed=s.seed, **common,
                        augment=AugmentConfig(crop_padding=min(2, data.image_shape[1] // 8),
                                              flip=True))
    # the same fixed batches before and after training, so only the weights differ
    measure = list(BatchLoader(data.val, s.batch_size, train=False, **common))
    measure = measure[:s.measure_batches]
    if not measure:
        raise ConfigError("gradients needs validation images to measure on: val_size is 0")
    rows, layers = [], []
    for depth in sorted(set(s.depths)):
        for plain in (True, False):
            name = net_name(depth, plain)
            log.info("gradients of %s: at initialisation, then after %d steps", name, s.steps)
            torch.manual_seed(s.seed)  # plain and residual nets start from the same weights
            model = build(cifar_spec(depth, data, plain=plain, width=s.width)).to(device)
            at_init = layer_gradient_norms(model, measure)
            losses = sgd_steps(model, train, s.steps, s.lr)
            trained = layer_gradient_norms(model, measure)
            names = [n for n, _ in weighted_layers(model)]
            layers += [{"depth": depth, "net": name, "plain": plain, "index": i, "layer": n,
                        "init": a, "trained": b}
                       for i, (n, a, b) in enumerate(zip(names, at_init, trained, strict=True), 1)]
            # first conv vs the last conv: the classifier is not part of the deep stack
            rows.append({"depth": depth, "net": name, "plain": plain,
                         "ratio_init": at_init[0] / at_init[-2],
                         "ratio_trained": trained[0] / trained[-2],
                         "loss_start": losses[0], "loss_end": _tail_mean(losses)})
    figures = {}
    for depth in sorted(set(s.depths)):
        file = f"gradients-{depth}.png"
        _plot([r for r in layers if r["depth"] == depth], depth, s.steps, out / file)
        figures[file] = (f"Depth {depth}: gradient norm of each weighted layer's weights at "
                         f"initialisation (dashed) and after {count(s.steps, 'SGD step')} (solid)")
    table = markdown_table(
        ["depth", "net", "first/last at init", f"first/last after {count(s.steps, 'step')}",
         "loss at start", f"loss after {count(s.steps, 'step')}"],
        [[r["depth"], r["net"], f"{r['ratio_init']:.3g}", f"{r['ratio_trained']:.3g}",
          f"{r['loss_start']:.3f}", f"{r['loss_end']:.3f}"] for r in rows])
    description = (
        f"Plain and residual CIFAR-style networks (option-A shortcuts) of depths "
        f"{', '.join(map(str, sorted(set(s.depths))))} start from the same weights. For each "
        "weighted layer (convolutions and the classifier) we measure the norm of the loss "
        f"gradient with respect to its weights, averaged over {len(measure)} fixed validation "
        f"batches of {s.batch_size} {data.name} images, at initialisation and after "
        f"{count(s.steps, 'SGD step')} (lr {s.lr}, momentum 0.9). \"first/last\" is the first "
        "convolution's gradient norm divided by the last convolution's: well below 1, the "
        "gradient fades on its way back to the input; well above 1, it grows. Layers differ "
        "in size, so compare a plain net with the residual net of the same depth (same "
        "layers, same initial weights) rather than one layer with another. Seed 002's "
        "argument: a residual unit computes g(f(x)) + f(x), so d/dw of it keeps the term "
        "df/dw however small the product through g becomes."
    )
    return write_report(
        out, name="gradients", title=TITLE, description=description, table=table,
        findings=findings(rows, s.steps), figures=figures,
        results={"data": data.name, "rows": rows, "layers": layers}, settings=s, quick=quick,
        seconds=time.perf_counter() - started)


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


def _plot(layers: list[dict[str, Any]], depth: int, steps: int, path: Path) -> None:
    figure, ax = new_figure(size=(7, 4))
    for colour, plain in (("C3", True), ("C0", False)):
        points = [r for r in layers if r["plain"] == plain]
        index = [r["index"] for r in points]
        net = net_name(depth, plain)
        ax.plot(index, [r["init"] for r in points], "--", color=colour, linewidth=1,
                label=f"{net} at initialisation")
        ax.plot(index, [r["trained"] for r in points], "-", color=colour, linewidth=2,
                label=f"{net} after {count(steps, 'step')}")
    ax.set_yscale("log")
    ax.set_xlabel("weighted layer (1 = first conv, last = classifier)")
    ax.set_ylabel("gradient norm ||dL/dW||")
    ax.set_title(f"Depth {depth}: gradient norm per layer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(figure, path)
