"""The report every experiment writes: quick mode's caveat first, the closing section last."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from reslab.experiments import EXPERIMENTS
from reslab.experiments.report import (
    CLOSING,
    QUICK_CAVEAT,
    legend_outside,
    new_figure,
    write_report,
)


@dataclass
class Few:
    epochs: int = 1


def written(tmp_path, mode: str) -> str:
    write_report(tmp_path, name="demo", title="Demo", description="What was run.",
                 table="| a |\n|---|\n| 1 |", findings=["A was 1."], figures={},
                 shows=["That a is 1 here."], does_not_show=["Why."], results={},
                 settings=Few(), mode=mode, seconds=60.0, train_seconds=30.0)
    return (tmp_path / "report.md").read_text()


def test_a_quick_report_says_so_in_its_title_and_first_paragraph(tmp_path):
    report = written(tmp_path, "quick")
    title, first, description = report.split("\n\n")[:3]
    assert title == f"# Demo ({QUICK_CAVEAT})" == "# Demo (quick mode: a smoke test, not evidence)"
    assert "not what the experiment is about" in first and "docs/experiments/demo" in first
    assert description == "What was run."
    assert "## Findings in this run\n\nIn this quick run (not evidence, see above): A was 1." \
        in report
    # the closing section comes last, the quick caveat among what it does not show
    assert report.endswith(f"## {CLOSING}\n\n- **Shows:** That a is 1 here.\n"
                           "- **Does not show:** Whether any difference measured here is real: "
                           "quick mode is a smoke test, too small and too short for its "
                           "differences to mean anything (an exact check, such as a function "
                           "kept bit for bit, still holds).\n- **Does not show:** Why.\n")


def test_a_full_report_states_its_findings_without_the_caveat(tmp_path):
    report = written(tmp_path, "full")
    assert report.startswith("# Demo\n\nWhat was run.\n\n| a |")
    assert "quick" not in report and "## Findings in this run\n\nA was 1." in report
    assert report.endswith(f"## {CLOSING}\n\n- **Shows:** That a is 1 here.\n"
                           "- **Does not show:** Why.\n")


@pytest.mark.parametrize("panels", [1, 2])
def test_the_legend_goes_below_the_panels_and_lists_each_label_once(panels):
    figure, axes = new_figure(panels)
    for ax in [axes] if panels == 1 else axes:
        ax.plot([0, 1], [0, 1], label="a line")
        ax.plot([0, 1], [1, 0], label="another")
    legend = legend_outside(figure)
    figure.draw_without_rendering()  # constrained layout places the panels and the legend
    assert [t.get_text() for t in legend.get_texts()] == ["a line", "another"]
    box = legend.get_window_extent()
    for ax in figure.axes:
        assert not box.overlaps(ax.get_window_extent()) and box.y1 <= ax.get_window_extent().y0


COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "experiments"


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_each_committed_report_is_a_full_run_in_the_current_form(name):
    """README links these: each comes from its full mode and ends with what it does not show."""
    results = json.loads((COMMITTED / name / "results.json").read_text())
    report = (COMMITTED / name / "report.md").read_text()
    assert results["experiment"] == name and results["mode"] == "full"
    assert not results["quick"] and QUICK_CAVEAT not in report
    closing = report.split(f"\n## {CLOSING}\n\n")[1]
    assert closing.count("- **Shows:**") >= 1 and closing.count("- **Does not show:**") >= 1
    for figure in results["figures"]:
        assert (COMMITTED / name / figure).is_file(), figure
