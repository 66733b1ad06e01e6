"""Small data for experiment tests: real Fashion-MNIST subsets where the system has them, else
generated images (each class a bright square at its own place)."""

import json
from pathlib import Path

import pytest
import torch

from reslab.data import Dataset, SourceInfo, Split, channel_stats, load_dataset
from reslab.experiments import executor
from reslab.experiments.report import CLOSING, QUICK_CAVEAT

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SIZES = {"train": 256, "val": 128, "test": 128}
# settings that make any experiment take seconds: tiny nets, one or two short epochs
TINY = dict(width=4, epochs=2, batch_size=32, quiet=True)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets gain nothing from a second thread, and where other processes share the cores,
    OpenMP's spinning barriers made these tests several times slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _synthetic_split(n: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 1, 28, 28), generator=generator)
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 4)
        images[i, :, row * 7:(row + 1) * 7, col * 7:(col + 1) * 7] += 180
    return Split(images.clamp(0, 255).to(torch.uint8), labels)


@pytest.fixture(scope="session")
def small_data() -> Dataset:
    if FASHION_MNIST.is_dir():
        full = load_dataset("fashion-mnist", FASHION_MNIST, download=False)
        splits = {name: full.split(name).subset(torch.arange(n)) for name, n in SIZES.items()}
        return Dataset(name="fashion-mnist", classes=full.classes, mean=full.mean,
                       std=full.std, source=full.source, **splits)
    splits = {name: _synthetic_split(n, seed) for seed, (name, n) in enumerate(SIZES.items())}
    mean, std = channel_stats(splits["train"].images)
    return Dataset(name="synthetic", classes=tuple(f"class{i}" for i in range(10)), mean=mean,
                   std=std, source=SourceInfo(location=None, verification="generated"),
                   **splits)


def check_report(out: Path, results: dict) -> None:
    """The report folder's structure, whatever the numbers."""
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"] == results["experiment"]
    assert {"title", "quick", "settings", "table", "findings", "figures", "seconds",
            "versions", "machine"} <= set(saved)
    report = (out / "report.md").read_text()
    title, first, *_ = report.split("\n\n")
    if saved["quick"]:  # the caveat first: in the title and the paragraph under it
        assert title == f"# {saved['title']} ({QUICK_CAVEAT})"
        assert first.startswith("**This is a quick-mode run") and "not what the experiment" \
            in first and "may shrink, vanish or reverse in the full mode" in first
        assert "## Findings in this run\n\nIn this quick run (not evidence" in report
    else:
        assert title == f"# {saved['title']}" and "quick" not in first
    # it ends with what the run shows and what it does not, one bullet each
    closing = report.split(f"\n## {CLOSING}\n\n")[1]
    assert saved["shows"] and saved["does_not_show"] and "\n## " not in closing
    assert closing.count("- **Shows:** ") == len(saved["shows"])
    assert closing.count("- **Does not show:** ") == \
        len(saved["does_not_show"]) + saved["quick"]  # quick mode adds its own
    assert saved["table"] in report and "\n|---" in saved["table"]  # a markdown table
    assert 1 <= len(saved["findings"]) <= 5 and all(f in report for f in saved["findings"])
    assert saved["figures"]
    for figure in saved["figures"]:
        assert f"]({figure})" in report
        assert (out / figure).read_bytes()[:8] == PNG


@pytest.fixture
def figures(monkeypatch) -> dict:
    """The figures an experiment saves (file name -> matplotlib Figure), kept for a test to
    look at, and saved as usual."""
    kept, save = {}, executor.save_figure

    def keep(figure, path: Path) -> None:
        save(figure, path)  # drawn: the legend and the axes have their places
        kept[path.name] = figure
    monkeypatch.setattr(executor, "save_figure", keep)
    return kept


def check_figure(figure, *splits: str) -> None:
    """Every panel's y axis names what it shows (one of ``splits``: the data split, such as
    "validation"), and the one legend sits outside every panel's data area."""
    figure.draw_without_rendering()
    axes = figure.axes
    assert axes and all(not ax.get_legend() for ax in axes)  # no legend inside a panel
    assert len(figure.legends) == 1
    legend = figure.legends[0].get_window_extent()
    for ax in axes:
        assert not legend.overlaps(ax.get_window_extent())
        label = ax.get_ylabel() or axes[0].get_ylabel()  # panels sharing y label the first
        assert any(split in label for split in splits), label
