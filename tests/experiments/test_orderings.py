import pytest

from reslab.experiments import orderings
from reslab.experiments.report import mean_std
from reslab.models import Ordering

from .conftest import TINY, check_report


def test_orderings_report(tmp_path, small_data):
    out = tmp_path / "orderings"
    results = orderings.run(out, quick=True, data=small_data, depth=8, seeds=2,
                            **TINY | dict(epochs=1))
    check_report(out, results)
    rows = results["rows"]
    assert [r["ordering"] for r in rows] == [o.value for o in Ordering]
    assert [r["paper_error"] for r in rows] == pytest.approx([0.0661, 0.0817, 0.0784, 0.0671,
                                                              0.0637])
    for row in rows:
        errors = [run["test_error"] for run in row["runs"]]
        assert [run["seed"] for run in row["runs"]] == [0, 1]
        assert (row["test_error_mean"], row["test_error_std"]) == pytest.approx(mean_std(errors))
        assert f"{100 * row['test_error_mean']:.2f} ± {100 * row['test_error_std']:.2f}" \
            in results["table"]
    assert results["table"].count("\n") == 1 + 5  # header, rule, five orderings
    assert len(list((out / "runs").iterdir())) == 10


def test_mean_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))


def test_findings_rank_the_orderings():
    def row(ordering, mean, std=0.001):
        return {"ordering": ordering.value, "label": orderings.PAPER[ordering][0],
                "test_error_mean": mean, "test_error_std": std}

    like_paper = orderings.findings([
        row(Ordering.ORIGINAL, 0.07), row(Ordering.BN_AFTER_ADD, 0.09),
        row(Ordering.RELU_BEFORE_ADD, 0.08), row(Ordering.RELU_PREACT, 0.072),
        row(Ordering.FULL_PREACT, 0.06)], 10_000)
    assert "(e) full pre-activation, 6.00% (as in the paper)" in like_paper[0]
    assert "full pre-activation is better, as the paper reports" in like_paper[1]
    assert "ranks 5 of 5" in like_paper[2]
    noisy = orderings.findings([
        row(Ordering.ORIGINAL, 0.06, 0.02), row(Ordering.BN_AFTER_ADD, 0.05),
        row(Ordering.RELU_BEFORE_ADD, 0.08), row(Ordering.RELU_PREACT, 0.072),
        row(Ordering.FULL_PREACT, 0.07)], 10_000)
    assert "the paper's best is (e)" in noisy[0] and "within the seed-to-seed spread" in noisy[1]
    assert "ranks 1 of 5" in noisy[2]
