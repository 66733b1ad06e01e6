"""The five BN/ReLU orderings of "Identity Mappings in Deep Residual Networks" (He et al.
2016, Fig. 4), trained with one recipe over several seeds, beside the paper's CIFAR-10 errors."""

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
    train_net,
)
from reslab.experiments.report import (
    count,
    markdown_table,
    mean_std,
    new_figure,
    noise,
    percent,
    save_figure,
    write_report,
)
from reslab.models import Ordering, build

TITLE = "Orderings: where BN and ReLU sit in a residual unit"
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
    depth: int = 20  # the paper's is 110: about 6x the time
    width: int = 16
    seeds: int = 3  # runs per ordering: seeds seed, seed + 1, ...
    epochs: int = 3  # 15 runs: about 50 min on 2 cores


QUICK = dict(depth=14, seeds=2, epochs=3, batch_size=64, train_size=2048, val_size=500,
             test_size=1000)


def run(out_dir: str | Path, quick: bool = False, data: Dataset | None = None,
        **settings: Any) -> dict[str, Any]:
    s = resolve_settings(OrderingSettings, quick, QUICK, settings)
    if s.seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {s.seeds}")
    started = time.perf_counter()
    out = prepare_out(out_dir, "orderings", s)
    data = prepare_data(s, data)
    net = net_name(s.depth, plain=False)
    rows = []
    for ordering, (label, paper_error) in PAPER.items():
        runs = []
        for seed in range(s.seed, s.seed + s.seeds):
            torch.manual_seed(seed)
            model = build(cifar_spec(s.depth, data, width=s.width, ordering=ordering))
            result = train_net(model, data, paper_recipe(s, data, seed=seed),
                               out / "runs" / f"{ordering.value}-seed{seed}",
                               f"{net} {ordering.value}")
            runs.append({"seed": seed, "test_error": 1 - result.test["accuracy"],
                         "train_error": 1 - result.history[-1]["train_acc"]})
        mean, std = mean_std([r["test_error"] for r in runs])
        rows.append({"ordering": ordering.value, "label": label, "paper_error": paper_error / 100,
                     "test_error_mean": mean, "test_error_std": std,
                     "train_error_mean": mean_std([r["train_error"] for r in runs])[0],
                     "runs": runs})
    _plot(rows, out / "orderings.png", net, data.name, s.seeds)
    table = markdown_table(
        ["ordering", "paper: ResNet-110 CIFAR-10 error %",
         f"here: {net} {data.name} test error % (mean ± std)", "train error %"],
        [[r["label"], f"{r['paper_error'] * 100:.2f}",
          f"{percent(r['test_error_mean'])} ± {percent(r['test_error_std'])}",
          percent(r["train_error_mean"])] for r in rows])
    description = (
        f"The same {net} (option-A shortcuts, widths {s.width}/{2 * s.width}/{4 * s.width}) "
        f"in each of the five unit orderings of He et al. 2016, trained on {data.name} "
        f"({len(data.train):,} images) with the paper's recipe for {count(s.epochs, 'epoch')}, "
        f"{count(s.seeds, 'seed')} each. The paper's numbers are for ResNet-110 on CIFAR-10, "
        "a deeper net on a harder task: compare the ranking, not the values."
    )
    return write_report(
        out, name="orderings", title=TITLE, description=description, table=table,
        findings=findings(rows, len(data.test)),
        figures={"orderings.png": "Test error by ordering: here (mean ± std over seeds, dots "
                                  "are single runs) and in the paper"},
        results={"data": data.name, "test_images": len(data.test), "net": net, "rows": rows},
        settings=s, quick=quick,
        seconds=time.perf_counter() - started)


def findings(rows: list[dict[str, Any]], images: int) -> list[str]:
    """Three sentences; ``images``: the test images each error is measured on."""
    ranked = sorted(rows, key=lambda r: r["test_error_mean"])
    best = ranked[0]
    by = {r["ordering"]: r for r in rows}
    agree = "as in the paper" if best["ordering"] == Ordering.FULL_PREACT else \
        "the paper's best is (e) full pre-activation, 6.37%"
    sentences = [f"Lowest mean test error here: {best['label']}, "
                 f"{percent(best['test_error_mean'])}% ({agree})."]
    full, original = by[Ordering.FULL_PREACT], by[Ordering.ORIGINAL]
    a, b = full["test_error_mean"], original["test_error_mean"]
    # what separates them must exceed both the seeds' spread and the test set's sampling noise
    margin = max(full["test_error_std"], original["test_error_std"], noise(b, images))
    if abs(a - b) <= margin:
        verdict = (f"a difference within the seed-to-seed spread and sampling noise (± "
                   f"{percent(margin)} points), so this run cannot tell them apart (the paper: "
                   "6.37% vs 6.61%)")
    elif a < b:
        verdict = "full pre-activation is better, as the paper reports (6.37% vs 6.61%)"
    else:
        verdict = "the original is better here, unlike the paper (6.37% vs 6.61%)"
    sentences.append(f"Full pre-activation vs the original unit: {percent(a)}% vs "
                     f"{percent(b)}%: {verdict}.")
    rank = 1 + ranked.index(by[Ordering.BN_AFTER_ADD])
    sentences.append(f"BN after addition, the paper's worst (8.17%: it normalises the shortcut "
                     f"signal too), ranks {rank} of {len(rows)} here.")
    return sentences


def _plot(rows: list[dict], path: Path, net: str, data_name: str, seeds: int) -> None:
    figure, (ours, paper) = new_figure(2, size=(11, 4.5))
    x = range(len(rows))
    names = [r["label"].split(" ", 1)[0] + "\n" + r["ordering"] for r in rows]
    ours.bar(x, [100 * r["test_error_mean"] for r in rows],
             yerr=[100 * r["test_error_std"] for r in rows], capsize=4, color="C0", alpha=0.7,
             label=f"mean ± std of {count(seeds, 'seed')}")
    for i, r in enumerate(rows):
        ours.plot([i] * len(r["runs"]), [100 * run["test_error"] for run in r["runs"]], "k.",
                  label="single runs" if i == 0 else None)
    ours.set_title(f"here: {net} on {data_name}")
    paper.bar(x, [100 * r["paper_error"] for r in rows], color="C1", alpha=0.7,
              label="He et al. 2016, Table 2")
    paper.set_title("paper: ResNet-110 on CIFAR-10")
    for ax in (ours, paper):
        ax.set_xticks(list(x), names, fontsize=8)
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    save_figure(figure, path)
