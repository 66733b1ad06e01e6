"""The five BN/ReLU orderings of "Identity Mappings in Deep Residual Networks" (He et al.
2016, Fig. 4), trained with one recipe over several seeds at a depth where the paper's effect
can show, beside the paper's CIFAR-10 errors; the findings say which of its claims held."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reslab.data import Dataset
from reslab.experiments.common import cifar_spec, net_name, paper_recipe, seeded
from reslab.experiments.protocol import (
    Analysis,
    Experiment,
    PlannedRun,
    RunResult,
    TrainingSettings,
    setting,
)
from reslab.experiments.report import (
    count,
    legend_outside,
    literal,
    markdown_table,
    mean_std,
    new_figure,
    noise,
    percent,
    percent_pm,
    resized,
    spread,
)
from reslab.models import Ordering

REFERENCE = "original-reference"  # the key of the longer run of (a)

# He et al. 2016, Table 2: ResNet-110 test error (%) on CIFAR-10, by ordering (Fig. 4 a-e)
PAPER = {
    Ordering.ORIGINAL: ("(a) original", 6.61),
    Ordering.BN_AFTER_ADD: ("(b) BN after addition", 8.17),
    Ordering.RELU_BEFORE_ADD: ("(c) ReLU before addition", 7.84),
    Ordering.RELU_PREACT: ("(d) ReLU-only pre-activation", 6.71),
    Ordering.FULL_PREACT: ("(e) full pre-activation", 6.37),
}


@dataclass
class OrderingSettings(TrainingSettings):
    depth: int = setting(56, "CIFAR-style depth 6n + 2 (the paper's is 110)", low=8)
    width: int = setting(16, "channels of the first stage")
    side: int | None = setting(None, "input side the images are resized to (none: as they are)",
                               low=8)
    seeds: tuple[int, ...] = setting((0, 1, 2), "a run of each ordering per seed", low=0)
    epochs: int = setting(3, "epochs of each run")
    # the yardstick for "near convergence": the paper compares trained nets, so the report
    # says how far the comparison's best is from what the net reaches given far longer
    reference_epochs: int = setting(0, "epochs of one longer run of (a), seed 0, that the "
                                    "comparison is measured against (0: none)", low=0)
    schedule: str = setting("multistep", "learning rate: the paper's steps (/ 10 at 50% and "
                            "75%), or one-cycle (a warm-up, then annealing: more progress in a "
                            "short run)", choices=("multistep", "onecycle"))


class Orderings(Experiment):
    name = "orderings"
    title = "Orderings: where BN and ReLU sit in a residual unit"
    settings = OrderingSettings
    # resnet56 at width 8 on all 55,000 images resized to 14x14 (a fifth of width 16's cost
    # at 28 px: benchmarks/degradation_cost.py), 4 epochs, one-cycle rising over the first:
    # near convergence, measured against (a) trained 20. On 6,400 images for 300 iterations
    # (the full mode until 7 December) the nets sat at 19.6-34.4% test error, far from trained
    modes = {"full": dict(width=8, side=14, epochs=4, schedule="onecycle", warmup_epochs=1.0,
                          reference_epochs=20),
             "quick": dict(depth=14, width=8, side=14, seeds=(0, 1), epochs=3, batch_size=64,
                           train_size=2048, val_size=500, test_size=1000, reference_epochs=6)}

    def plan(self, s: OrderingSettings, data: Dataset) -> list[PlannedRun]:
        net = net_name(s.depth, plain=False)

        def planned(key: str, ordering: Ordering, seed: int, **changes: Any) -> PlannedRun:
            return PlannedRun(key, f"{net} {ordering.value}",
                              seeded(cifar_spec(s.depth, data, width=s.width, side=s.side,
                                                ordering=ordering), seed),
                              paper_recipe(s, data, seed=seed, schedule=s.schedule,
                                           resize=s.side, **changes),
                              info=dict(ordering=ordering.value, seed=seed, **changes))

        runs = [planned(f"{ordering.value}-seed{seed}", ordering, seed)
                for ordering in PAPER for seed in s.seeds]
        if s.reference_epochs:
            runs.append(planned(REFERENCE, Ordering.ORIGINAL, 0, epochs=s.reference_epochs))
        return runs

    def analyse(self, s: OrderingSettings, data: Dataset, runs: dict[str, RunResult],
                measured: dict[str, Any]) -> Analysis:
        net = net_name(s.depth, plain=False)
        rows = []
        reference = runs.get(REFERENCE)
        runs = {key: r for key, r in runs.items() if key != REFERENCE}
        for ordering, (label, paper_error) in PAPER.items():
            group = [r for r in runs.values() if r.info["ordering"] == ordering.value]
            errors = [r.test_error for r in group]
            mean, std = mean_std(errors)
            rows.append({"ordering": ordering.value, "label": label,
                         "paper_error": paper_error / 100, "seeds": [r.info["seed"] for r in group],
                         "test_errors": errors, "test_error_mean": mean, "test_error_std": std,
                         "train_errors": [1 - r.last["train_acc"] for r in group]})
        table = markdown_table(
            ["ordering", "paper: ResNet-110 CIFAR-10 test error %",
             f"here: {net} {data.name} test error % (mean ± std)", "here: train error %"],
            [[r["label"], f"{r['paper_error'] * 100:.2f}", percent_pm(r["test_errors"]),
              percent_pm(r["train_errors"])] for r in rows]) + "\n\n" + (
            "*Errors in % of images wrong; here mean ± standard deviation over "
            f"{count(len(s.seeds), 'seed')}. Test error: on {len(data.test):,} test images, "
            "with the weights of the epoch of best validation accuracy (validation: "
            f"{len(data.val):,} held-out training images). Train error: the last epoch's "
            f"{len(data.train):,} training images, counted while training on them (augmented, "
            "training mode). The paper's column is its Table 2 (ResNet-110 on CIFAR-10, "
            "one number per ordering).*")
        description = (
            f"The same {net} (option-A shortcuts, widths {s.width}/{2 * s.width}/{4 * s.width})"
            f" in each of the five unit orderings of He et al. 2016, trained on {data.name} "
            f"({len(data.train):,} images{resized(s.side)}) with the paper's recipe for "
            f"{count(s.epochs, 'epoch')} of batch {s.batch_size}"
            + ("" if s.schedule == "multistep" else
               f", its learning rate on a one-cycle schedule (rising to {s.lr} over "
               f"{s.warmup_epochs:g} of the epochs, then annealing) instead of steps")
            + f", once per seed ({', '.join(map(str, s.seeds))}). The "
            "paper's numbers are for ResNet-110 on CIFAR-10, a deeper net on a harder task: "
            "compare the ranking, not the values. A difference counts when it exceeds the "
            "noise: the seed-to-seed spread of a difference of two runs, and at least the "
            "sampling noise of the test set."
            + (f" The yardstick: (a) once more (seed 0) for {count(s.reference_epochs, 'epoch')}"
               f" of the same schedule, {percent(reference.test_error)}% test error: how far "
               "from trained the compared nets are." if reference else "")
        )
        return Analysis(
            description=description, table=table,
            findings=findings(rows, len(data.test)) + _converged(rows, reference, s),
            figures={"orderings.png": (_plot(rows, net, literal(data.name), len(s.seeds),
                                             reference),
                                       "Test error by ordering: here (mean ± std over seeds, "
                                       "dots are single runs) and in the paper; the two "
                                       "panels have different scales")},
            shows=[f"How the five orderings of {net} rank by test error on "
                   f"{len(data.train):,} {data.name} images after {count(s.epochs, 'epoch')} "
                   f"of this schedule, {count(len(s.seeds), 'seed')} each, and which of the "
                   "paper's three claims this ranking holds, contradicts or leaves within the "
                   "noise (the seeds' spread, and at least the sampling noise of "
                   f"{len(data.test):,} test images)."],
            does_not_show=[
                "The paper's comparison, which is of converged ResNet-110s on CIFAR-10 "
                "(6.4-8.2% test error): nets short of trained may rank orderings by how fast "
                "they start, not by where they end"
                + (f"; the findings say how far these are from {net} (a) trained "
                   f"{count(s.reference_epochs, 'epoch')}, which is itself one seed." if reference
                   else f". Compare the test errors here with what {net} reaches when fully "
                   "trained (`--set reference_epochs=N`) before reading the ranking as the "
                   "paper's."),
                "Why an ordering is better: these are end points, not the optimisation "
                "curves or the signal propagation the paper argues from.",
                "A difference within the noise stated in the findings, either way."],
            results={"net": net, "rows": rows, "reference": reference and {
                **reference.info, "test_error": reference.test_error,  # info: what plan ran
                "train_error": 1 - reference.last["train_acc"]}})


def _converged(rows: list[dict[str, Any]], reference: RunResult | None,
               s: OrderingSettings) -> list[str]:
    """How near trained the compared nets are: the best ordering against the longer run."""
    if reference is None:
        return []
    best = min(rows, key=lambda r: r["test_error_mean"])
    gap = best["test_error_mean"] - reference.test_error
    return [f"Near convergence? The best ordering here, {best['label']}, at "
            f"{percent(best['test_error_mean'])}% after {count(s.epochs, 'epoch')}, is "
            f"{gap * 100:+.2f} points from (a) trained {count(s.reference_epochs, 'epoch')} "
            f"({percent(reference.test_error)}%, seed 0)."]


# He et al. 2016's claims: (worse, better than) pairs of orderings, each held only if every
# pair's difference exceeds the noise
CLAIMS = [
    ("(b) BN after addition is worse than (a), (d) and (e)", Ordering.BN_AFTER_ADD,
     (Ordering.ORIGINAL, Ordering.RELU_PREACT, Ordering.FULL_PREACT)),
    ("(c) ReLU before addition is worse than (a), (d) and (e)", Ordering.RELU_BEFORE_ADD,
     (Ordering.ORIGINAL, Ordering.RELU_PREACT, Ordering.FULL_PREACT)),
    ("(e) full pre-activation is better than (a) the original", Ordering.ORIGINAL,
     (Ordering.FULL_PREACT,)),
]


def findings(rows: list[dict[str, Any]], images: int) -> list[str]:
    """The best ordering here, then each of the paper's claims: held, contradicted, or not
    resolved within the noise; ``images``: the test images each error is measured on."""
    by = {r["ordering"]: r for r in rows}
    best = min(rows, key=lambda r: r["test_error_mean"])
    agree = "as in the paper" if best["ordering"] == Ordering.FULL_PREACT else \
        "the paper's best is (e) full pre-activation, 6.37%"
    sentences = [f"Lowest mean test error here: {best['label']}, "
                 f"{percent(best['test_error_mean'])}% ({agree})."]
    for claim, worse, betters in CLAIMS:
        w = by[worse.value]["test_errors"]
        parts, gaps = [], []
        for better in betters:
            b = by[better.value]["test_errors"]
            gap = mean_std(w)[0] - mean_std(b)[0]
            margin = spread(w, b, noise(mean_std(b)[0], images))
            gaps.append((gap, margin))
            parts.append(f"{gap * 100:+.2f} points against {PAPER[better][0].split()[0]} "
                         f"(noise ± {percent(margin)})")
        if all(gap > margin for gap, margin in gaps):
            verdict = "held"
        elif any(gap < -margin for gap, margin in gaps):
            verdict = "was contradicted"
        else:
            verdict = "was not resolved within the noise"
        sentences.append(f"The paper's claim that {claim} {verdict} here: "
                         f"{'; '.join(parts)}.")
    return sentences


def _plot(rows: list[dict], net: str, data_name: str, seeds: int,
          reference: RunResult | None):
    figure, (ours, paper) = new_figure(2, size=(11, 4.8))
    x = range(len(rows))
    names = [r["label"].split(" ", 1)[0] + "\n" + r["ordering"] for r in rows]
    ours.bar(x, [100 * r["test_error_mean"] for r in rows],
             yerr=[100 * r["test_error_std"] for r in rows], capsize=4, color="C0", alpha=0.7,
             label=f"here: mean ± std of {count(seeds, 'seed')}")
    for i, r in enumerate(rows):
        ours.plot([i] * len(r["test_errors"]), [100 * e for e in r["test_errors"]], "k.",
                  label="here: single runs" if i == 0 else None)
    if reference:
        ours.axhline(100 * reference.test_error, color="C2", linestyle="--",
                     label=f"here: (a) trained {count(reference.info['epochs'], 'epoch')}")
    ours.set_title(f"here: {net} on {data_name}")
    paper.bar(x, [100 * r["paper_error"] for r in rows], color="C1", alpha=0.7, hatch="//",
              label="He et al. 2016, Table 2")
    paper.set_title("paper: ResNet-110 on CIFAR-10 (another scale)")
    for ax, split in ((ours, "test images here"), (paper, "CIFAR-10 test set")):
        ax.set_xticks(list(x), names, fontsize=8)
        ax.set_ylabel(f"test error (%, {split})")
        ax.grid(alpha=0.3, axis="y")
    legend_outside(figure, columns=3)
    return figure


EXPERIMENT = Orderings()
