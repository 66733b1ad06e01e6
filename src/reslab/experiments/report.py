"""The report folder every experiment writes: results.json, PNG figures and report.md."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reslab.io import atomic_write_text
from reslab.runtime.host import machine, versions
from reslab.tables import count  # here too, for the experiments' reports
from reslab.training.plots import literal, save_figure  # literal: every text from outside

__all__ = ["count", "literal", "markdown_table", "mean_std", "new_figure", "noise", "percent",
           "percent_pm", "save_figure", "spread", "write_report"]


def new_figure(panels: int = 1, *, size: tuple[float, float] | None = None, **options):
    """An Agg figure (no pyplot state) and its axes: one axis, or an array of ``panels``.
    ``options`` go to ``Figure.subplots`` (sharey=True...)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size or (5.5 * panels, 4), layout="constrained")
    axes = figure.subplots(1, panels, **options)
    return figure, axes


def noise(rate: float, images: int) -> float:
    """Rough 95% margin of the difference of two accuracies (or errors) near ``rate``, each
    measured on ``images`` test images: 2 standard errors of a difference of proportions.
    Two models on the same images are correlated, so this errs on the side of caution."""
    return 2 * math.sqrt(2 * rate * (1 - rate) / max(images, 1))


def percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def percent_pm(values: Sequence[float], digits: int = 2) -> str:
    """``[0.081, 0.083]`` -> "8.20 ± 0.14": mean ± sample standard deviation, in percent."""
    mean, std = mean_std(values)
    return f"{percent(mean, digits)} ± {percent(std, digits)}"


def spread(a: Sequence[float], b: Sequence[float], floor: float = 0.0) -> float:
    """What the difference of the means of ``a`` and ``b`` (one value per seed) must exceed
    to count: the seed-to-seed spread of a difference of two runs, sqrt(sa^2 + sb^2), and at
    least ``floor`` (the test set's sampling noise, which a single seed cannot show)."""
    return max(math.hypot(mean_std(a)[1], mean_std(b)[1]), floor)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub table, its columns padded so it also reads well as plain text."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def write_report(
    out: Path,
    *,
    name: str,
    title: str,
    description: str,
    table: str,
    findings: Sequence[str],
    figures: dict[str, str],
    results: dict[str, Any],
    settings: Any,
    mode: str,
    seconds: float,
    train_seconds: float,
) -> dict[str, Any]:
    """Write results.json and report.md; returns what results.json holds.

    ``figures``: file name (already saved in ``out``) -> caption. ``seconds``: this call's
    time; ``train_seconds``: all runs' training time, earlier attempts' included.
    """
    record = {
        "experiment": name,
        "title": title,
        "mode": mode,
        "quick": mode == "quick",
        "settings": asdict(settings),
        **results,
        "table": table,
        "findings": list(findings),
        "figures": list(figures),
        "seconds": seconds,
        "train_seconds": train_seconds,
        "versions": versions(),
        "machine": machine(),
    }
    atomic_write_text(out / "results.json", json.dumps(record, indent=2, default=str) + "\n")
    described = "quick mode (small subsets, short runs: a smoke test, not a result)" \
        if mode == "quick" else f"{mode} mode"
    parts = [
        f"# {title}",
        description,
        table,
        " ".join(findings),
        *(f"![{Path(file).stem}]({file})\n\n*{caption}*" for file, caption in figures.items()),
        f"Run in {described} in {seconds / 60:.1f} min ({train_seconds / 60:.1f} min of "
        f"training, earlier attempts' included) on {record['machine']['cpu']} "
        f"({count(record['machine']['torch_threads'], 'thread')}); every number is in "
        "[results.json](results.json), and each training run's directory is under `runs/`.",
    ]
    atomic_write_text(out / "report.md", "\n\n".join(parts) + "\n")
    return record
