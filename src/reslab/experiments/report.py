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

__all__ = ["QUICK_CAVEAT", "count", "legend_outside", "literal", "markdown_table", "mean_std",
           "new_figure", "noise", "percent", "percent_pm", "save_figure", "spread",
           "write_report"]

QUICK_CAVEAT = "quick mode: a smoke test, not evidence"  # in a quick report's title
CLOSING = "What this shows / what it does not"  # the heading every report ends with


def new_figure(panels: int = 1, *, size: tuple[float, float] | None = None, **options):
    """An Agg figure (no pyplot state) and its axes: one axis, or an array of ``panels``.
    ``options`` go to ``Figure.subplots`` (sharey=True...)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size or (5.5 * panels, 4), layout="constrained")
    axes = figure.subplots(1, panels, **options)
    return figure, axes


def legend_outside(figure, columns: int = 2):
    """One legend for all of ``figure``'s axes, below them (constrained layout makes room), so
    it covers no line or point; a label drawn in several panels is listed once."""
    entries: dict[str, Any] = {}
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return figure.legend(list(entries.values()), list(entries), loc="outside lower center",
                         ncols=columns, fontsize=8, frameon=False)


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


def resized(side: int | None) -> str:
    """``14`` -> ", resized to 14x14", for a description of the images a net trained on."""
    return f", resized to {side}x{side}" if side else ""


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
    shows: Sequence[str],
    does_not_show: Sequence[str],
    results: dict[str, Any],
    settings: Any,
    mode: str,
    seconds: float,
    train_seconds: float,
) -> dict[str, Any]:
    """Write results.json and report.md; returns what results.json holds.

    ``figures``: file name (already saved in ``out``) -> caption. ``shows``, ``does_not_show``:
    the closing section's sentences (quick mode adds its own caveat there, and in the title and
    the first paragraph). ``seconds``: this call's time; ``train_seconds``: all runs' training
    time, earlier attempts' included.
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
        "shows": list(shows),
        "does_not_show": list(does_not_show),
        "seconds": seconds,
        "train_seconds": train_seconds,
        "versions": versions(),
        "machine": machine(),
    }
    atomic_write_text(out / "results.json", json.dumps(record, indent=2, default=str) + "\n")
    quick = mode == "quick"
    run = (f"Run in {mode} mode in {seconds / 60:.1f} min ({train_seconds / 60:.1f} min of "
           f"training, earlier attempts' included) on {record['machine']['cpu']} "
           f"({count(record['machine']['torch_threads'], 'thread')}); every number is in "
           "[results.json](results.json), and each training run's directory is under `runs/`.")
    parts = [
        f"# {title}" + (f" ({QUICK_CAVEAT})" if quick else ""),
        *([_quick_caveat(name)] if quick else []),
        description,
        table,
        "## Findings in this run",
        (f"{_IN_THIS_RUN} " if quick else "") + " ".join(findings),
        *(f"![{Path(file).stem}]({file})\n\n*{caption}*" for file, caption in figures.items()),
        run,
        f"## {CLOSING}",
        "\n".join(f"- {line}" for line in _closing(shows, does_not_show, quick)),
    ]
    atomic_write_text(out / "report.md", "\n\n".join(parts) + "\n")
    return record


_IN_THIS_RUN = "In this quick run (not evidence, see above):"


def _quick_caveat(name: str) -> str:
    """A quick report's first paragraph: what a smoke test can and cannot show."""
    return (f"**This is a quick-mode run: it checks that the experiment runs end to end and "
            "writes its report, not what the experiment is about.** Its networks train on a "
            "small subset for a few epochs or steps, with at most two seeds, so they are far "
            "from trained, their differences are mostly noise, and any finding below may "
            "shrink, vanish or reverse in the full mode. Read every number as what this run "
            f"measured, nothing more; the full mode's report (`reslab experiment {name}`, "
            f"committed under docs/experiments/{name}) is the one to learn from.")


def _closing(shows: Sequence[str], does_not_show: Sequence[str], quick: bool) -> list[str]:
    if quick:
        does_not_show = ["Whether any difference measured here is real: quick mode is a smoke "
                         "test, too small and too short for its differences to mean anything "
                         "(an exact check, such as a function kept bit for bit, still holds).",
                         *does_not_show]
    return [*(f"**Shows:** {line}" for line in shows),
            *(f"**Does not show:** {line}" for line in does_not_show)]
