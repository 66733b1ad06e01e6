"""The pictures a run leaves: learning curves and the confusion matrix, as PNG files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from reslab.io import atomic_write_bytes


def literal(text: object) -> str:
    """``text`` from a file or the user (a class name, a model or data set name) as a figure
    shows it: its dollar signs escaped, so that matplotlib does not read ``$...$`` in it as
    mathtext (``dog$\\frac{$`` would stop the figure with a parse error). Every text a figure
    takes from outside reslab goes through here."""
    return str(text).replace("$", r"\$")


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss (left) and accuracy (right) of training and validation against the epoch, with
    markers so that a run of one or two epochs shows its points."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 3.6), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "acc", "accuracy")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], "o-", ms=4, label="training")
        if any(row[f"val_{key}"] is not None for row in history):
            ax.plot(epochs, [row[f"val_{key}"] for row in history], "s--", ms=4,
                    label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # one point: an axis around it, not 0.96-1.04
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(literal(title))
    save_figure(figure, path)


def plot_confusion(matrix: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    n = len(classes)
    figure = Figure(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax = figure.subplots()
    counts = matrix.numpy()
    ax.imshow(counts, cmap="Blues")
    names = [literal(name) for name in classes]
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(literal(title))
    if n <= 20:
        top = counts.max() or 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > top / 2 else "black")
    save_figure(figure, path)


def plot_comparison(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Several runs' training loss (left) and validation accuracy (right) against the epoch,
    one colour per run, the legend beside the axes rather than over the curves."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    nan = float("nan")  # an epoch without validation: a gap in its curve
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    colours = _colours(len(histories))
    for (name, history), colour in zip(histories.items(), colours, strict=True):
        epochs = [row["epoch"] for row in history]
        loss_ax.plot(epochs, [row["train_loss"] for row in history], "o-", ms=4, color=colour,
                     label=name)
        acc_ax.plot(epochs, [nan if row.get("val_acc") is None else row["val_acc"]
                             for row in history], "s-", ms=4, color=colour)
    for ax, label in ((loss_ax, "training loss"), (acc_ax, "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    figure.legend(loc="outside right upper", title="run")
    save_figure(figure, path)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
