"""Plain vs residual nets of the same depths: deeper plain nets train worse (He et al. 2015)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reslab.data import Dataset
from reslab.errors import ConfigError
from reslab.experiments.common import (
    TrainingSettings,
    cifar_spec,
    net_name,
    paper_recipe,
    prepare_data,
    prepare_out,
    resolve_settings,
    throughput,
    train_net,
)
from reslab.experiments.report import (
    count,
    markdown_table,
    new_figure,
    noise,
    percent,
    save_figure,
    write_report,
)
from reslab.models import build

TITLE = "Degradation: plain vs residual networks of the same depth"


@dataclass
class DegradationSettings(TrainingSettings):
    depths: tuple[int, ...] = (20, 56)  # CIFAR-style 6n + 2: 20, 32, 44, 56, 110...
    width: int = 16  # channels of the first stage (the paper's 16)
    epochs: int = 6  # about 50 min on 2 cores; the gap between plain depths opens early


QUICK = dict(epochs=4, batch_size=64, train_size=2560, val_size=1000, test_size=2000)


def run(out_dir: str | Path, quick: bool = False, data: Dataset | None = None,
        **settings: Any) -> dict[str, Any]:
    s = resolve_settings(DegradationSettings, quick, QUICK, settings)
    if not s.depths:
        raise ConfigError("depths is empty: give at least one depth, e.g. depths=(20, 56)")
    started = time.perf_counter()
    data = prepare_data(s, data)
    config = paper_recipe(s, data)  # a bad setting is refused before the folder is made
    out = prepare_out(out_dir, "degradation", s)
    rows, curves = [], {}
    for plain in (True, False):
        for depth in sorted(set(s.depths)):
            name = net_name(depth, plain)
            torch.manual_seed(s.seed)
            model = build(cifar_spec(depth, data, plain=plain, width=s.width))
            # the paper warms ResNet-110 up at lr 0.01: at 0.1 it does not start converging
            recipe = config.replace(warmup_lr=0.01) if depth >= 110 else config
            result = train_net(model, data, recipe, out / "runs" / name, name)
            last = result.history[-1]
            rows.append({
                "net": name, "plain": plain, "depth": depth,
                "params": sum(p.numel() for p in model.parameters()),
                "train_error": 1 - last["train_acc"], "val_error": 1 - last["val_acc"],
                "test_error": 1 - result.test["accuracy"], "images_per_s": throughput(result),
                "seconds": result.test["train_seconds"],
            })
            curves[name] = [{"step": r["step"], "train_error": 1 - r["train_acc"],
                             "val_error": 1 - r["val_acc"]} for r in result.history]
    _plot(curves, rows, out / "curves.png", data.name)
    table = markdown_table(
        ["net", "depth", "params", "train error %", "val error %", "test error %", "img/s"],
        [[r["net"], r["depth"], f"{r['params']:,}", percent(r["train_error"]),
          percent(r["val_error"]), percent(r["test_error"]), f"{r['images_per_s']:.0f}"]
         for r in rows])
    steps = curves[rows[0]["net"]][-1]["step"]
    description = (
        f"Plain and residual CIFAR-style networks (He et al. 2015, section 4.2; option-A "
        f"shortcuts, widths {s.width}/{2 * s.width}/{4 * s.width}) trained on {data.name} "
        f"({len(data.train):,} training images) with one recipe: SGD lr {s.lr}, momentum 0.9, "
        f"weight decay 1e-4, batch {s.batch_size}, {count(s.epochs, 'epoch')} "
        f"({count(steps, 'iteration')}), "
        "lr / 10 at 50% and 75% of them. Training error is averaged over each epoch while "
        "training (augmented images), as the paper plots it; validation error is measured "
        "after each epoch on held-out training images; test error is the test set's, for the "
        "epoch with the best validation accuracy."
    )
    return write_report(
        out, name="degradation", title=TITLE, description=description, table=table,
        findings=findings(rows, len(data.test)),
        figures={"curves.png": "Training error (dashed) and validation error (solid) against "
                               "iterations, in the style of He et al. 2015, Fig. 6"},
        results={"data": data.name, "test_images": len(data.test), "rows": rows,
                 "curves": curves}, settings=s,
        quick=quick, seconds=time.perf_counter() - started)


def findings(rows: list[dict[str, Any]], images: int) -> list[str]:
    """Two or three sentences read from the numbers, whichever way they came out;
    ``images``: the test images the test errors are over."""
    sentences = []
    for plain in (True, False):
        nets = sorted((r for r in rows if r["plain"] == plain), key=lambda r: r["depth"])
        if len(nets) < 2:
            continue
        shallow, deep = nets[0], nets[-1]
        a, b = shallow["train_error"], deep["train_error"]
        if plain:
            verdict = ("deeper plain nets degrade, as He et al. 2015 report" if b > a else
                       "no degradation here, unlike He et al. 2015's Fig. 6 (longer training "
                       "may be needed to see it)")
        else:
            verdict = ("with shortcuts the deeper net trains better, as the paper reports"
                       if b < a else "the deeper residual net has not overtaken the shallower "
                       "one, unlike in the paper (it may need a longer schedule)")
        relation = "higher" if b > a else "lower" if b < a else "the same"
        sentences.append(f"{deep['net']} ended with {relation} training error than "
                         f"{shallow['net']} ({percent(b)}% vs {percent(a)}%): {verdict}.")
    depth = max(r["depth"] for r in rows)
    plain = next(r for r in rows if r["plain"] and r["depth"] == depth)
    residual = next(r for r in rows if not r["plain"] and r["depth"] == depth)
    p, q = plain["test_error"], residual["test_error"]
    if abs(p - q) <= noise(p, images):
        sentences.append(f"At depth {depth} the plain and residual nets' test errors "
                         f"({percent(p)}% and {percent(q)}%) are level within the sampling "
                         f"noise of {images:,} test images.")
    elif q < p:
        sentences.append(f"At depth {depth} the shortcuts lowered test error from {percent(p)}% "
                         f"to {percent(q)}% with the same layers and parameters.")
    else:
        sentences.append(f"At depth {depth} the residual net's test error ({percent(q)}%) was "
                         f"not below the plain net's ({percent(p)}%): here the shortcuts did "
                         "not help.")
    return sentences


def _plot(curves: dict[str, list[dict]], rows: list[dict], path: Path, data_name: str) -> None:
    figure, axes = new_figure(2, sharey=True)
    depths = sorted({r["depth"] for r in rows})
    colours = {d: f"C{i}" for i, d in enumerate(depths)}
    for ax, plain in zip(axes, (True, False), strict=True):
        for row in (r for r in rows if r["plain"] == plain):
            points = curves[row["net"]]
            steps = [p["step"] for p in points]
            colour = colours[row["depth"]]
            ax.plot(steps, [100 * p["train_error"] for p in points], "--", color=colour,
                    linewidth=1, label=f"{row['net']} train")
            ax.plot(steps, [100 * p["val_error"] for p in points], "-", color=colour,
                    linewidth=2.2, label=f"{row['net']} validation")
        ax.set_title(f"{'plain' if plain else 'residual'} networks on {data_name}")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    save_figure(figure, path)
