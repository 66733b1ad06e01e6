import pytest

from reslab.experiments import orderings, run
from reslab.experiments.report import mean_std
from reslab.models import Ordering

from .conftest import TINY, check_figure, check_report


def test_orderings_report(tmp_path, small_data, figures):
    out = tmp_path / "orderings"
    results = run("orderings", out, quick=True, data=small_data, depth=8, seeds=(0, 1),
                  reference_epochs=2, **TINY | dict(epochs=1))
    check_report(out, results)
    check_figure(figures["orderings.png"], "test error (%, test images here)",
                 "test error (%, CIFAR-10 test set)")
    assert "Test error: on 128 test images" in results["table"]
    rows = results["rows"]
    assert [r["ordering"] for r in rows] == [o.value for o in Ordering]
    assert [r["paper_error"] for r in rows] == pytest.approx([0.0661, 0.0817, 0.0784, 0.0671,
                                                              0.0637])
    for row in rows:
        assert row["seeds"] == [0, 1] and len(row["test_errors"]) == 2
        assert (row["test_error_mean"], row["test_error_std"]) == \
            pytest.approx(mean_std(row["test_errors"]))
        assert f"{100 * row['test_error_mean']:.2f} ± {100 * row['test_error_std']:.2f}" \
            in results["table"]
    # header, rule, five orderings
    assert [line.startswith("|") for line in results["table"].splitlines()].count(True) == 7
    assert len(list((out / "runs").iterdir())) == 11  # 5 orderings x 2 seeds, the reference
    assert results["net"] == "resnet8" and results["settings"]["depth"] == 8
    # the best ordering, each of the paper's three claims, how near trained the nets are
    assert len(results["findings"]) == 5 and "(b) BN after addition" in results["findings"][1]
    reference = results["reference"]
    assert (reference["ordering"], reference["seed"], reference["epochs"]) == ("original", 0, 2)
    best = min(r["test_error_mean"] for r in rows)
    assert f"points from (a) trained 2 epochs ({100 * reference['test_error']:.2f}%, seed 0)" \
        in results["findings"][4]
    assert f"{100 * (best - reference['test_error']):+.2f} points" in results["findings"][4]
    legend = [t.get_text() for t in figures["orderings.png"].legends[0].get_texts()]
    assert "here: (a) trained 2 epochs" in legend
    metrics = (out / "runs" / "original-reference" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2  # the reference trains its own epochs, not the comparison's one


def test_the_full_mode_is_deep_and_seeded(small_data):
    s = orderings.EXPERIMENT.resolve("full", {})
    assert (s.depth, s.seeds, s.schedule) == (56, (0, 1, 2), "onecycle")
    assert (s.width, s.side, s.train_size, s.epochs) == (8, 14, None, 4)  # the measured setting
    plan = orderings.EXPERIMENT.plan(s, small_data)
    configs = [run.config for run in plan]
    assert len(configs) == 16  # 5 orderings x 3 seeds, then (a) trained longer
    assert all((c.schedule, c.milestones, c.lr, c.warmup_epochs, c.resize) ==
               ("onecycle", (), 0.1, 1.0, 14) for c in configs)  # rising over the first epoch
    assert [c.epochs for c in configs] == [4] * 15 + [20]
    assert (plan[-1].key, plan[-1].info["ordering"], plan[-1].info["seed"]) == \
        ("original-reference", "original", 0)
    steps = orderings.EXPERIMENT.resolve("full", {"schedule": "multistep"})
    config = orderings.EXPERIMENT.plan(steps, small_data)[0].config
    iterations = steps.epochs * (len(small_data.train) // steps.batch_size)
    assert (config.schedule, config.milestones) == \
        ("multistep", (iterations // 2, iterations * 3 // 4))


def test_mean_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))


def row(ordering, *errors):
    mean, std = mean_std(errors)
    return {"ordering": ordering.value, "label": orderings.PAPER[ordering][0],
            "test_errors": list(errors), "test_error_mean": mean, "test_error_std": std}


def test_findings_say_which_claims_held():
    like_paper = orderings.findings([
        row(Ordering.ORIGINAL, 0.070, 0.071, 0.069), row(Ordering.BN_AFTER_ADD, 0.09, 0.091, 0.089),
        row(Ordering.RELU_BEFORE_ADD, 0.08, 0.081, 0.079),
        row(Ordering.RELU_PREACT, 0.072, 0.073, 0.071),
        row(Ordering.FULL_PREACT, 0.06, 0.061, 0.059)], 10_000)
    assert "(e) full pre-activation, 6.00% (as in the paper)" in like_paper[0]
    assert "(b) BN after addition is worse than (a), (d) and (e) held here: +2.00 points " \
        "against (a)" in like_paper[1]
    assert "(c) ReLU before addition is worse than (a), (d) and (e) held" in like_paper[2]
    assert "(e) full pre-activation is better than (a) the original held here: +1.00 points " \
        "against (e)" in like_paper[3]


def test_findings_weigh_differences_against_the_seeds_spread():
    # (b) lower than (a) beyond the noise; (c) and (e) within a wide seed spread: for (c) vs
    # (a), sqrt(1.41^2 + 2.83^2) = 3.16 points
    found = orderings.findings([
        row(Ordering.ORIGINAL, 0.08, 0.04), row(Ordering.BN_AFTER_ADD, 0.02, 0.021),
        row(Ordering.RELU_BEFORE_ADD, 0.07, 0.05), row(Ordering.RELU_PREACT, 0.06, 0.061),
        row(Ordering.FULL_PREACT, 0.055, 0.065)], 10_000)
    assert "the paper's best is (e)" in found[0]
    assert "(b) BN after addition is worse than (a), (d) and (e) was contradicted" in found[1]
    assert "was not resolved within the noise" in found[2] and "(noise ± 3.16)" in found[2]
    assert "was not resolved within the noise" in found[3]
