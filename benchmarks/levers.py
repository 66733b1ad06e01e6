"""Levers of the `fast` recipe, measured on the validation split over several seeds.

    python -m benchmarks.levers [--trials NAME,NAME] [--seeds 0,1,2] [--workers 2] [--list]

Each trial is the `fast` recipe of 3 December (fast_resnet10, batch 256, lr 0.6, the
whitening stem; ``RECIPE``) cut to the issue's budget of 10 TFLOP of nominal training
compute (for fast_resnet10 513 steps of 256 images, 2.4 epochs; a cheaper network gets more
steps), the one-cycle schedule ending there, with a few changes, trained once per seed by
``benchmarks.bench_time_to_accuracy.one_run``. What is compared is the validation accuracy
at the end of the run (5,000 training images held out): no choice is made on the test set,
whose accuracy is kept in the results file for the preset's own benchmark and not shown
here. ``--workers 2`` runs two trials at a time, one thread each, so the times of such runs
are not comparable and are left out; accuracy is.

A trial changes config fields (``config``), may change the network (``spec``: fields of
fast_resnet10's ResNetSpec, registered under a new zoo name in the worker only) and may
train whole epochs instead of the budget (``epochs``) or spend another budget (``tflop``).
Results are appended to benchmarks/results/levers.jsonl as each run ends (a run already
there is not run again) and tabled in benchmarks/results/levers.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import statistics

from benchmarks.common import RESULTS
from benchmarks.report import markdown_table
from reslab.io import atomic_write_text

RESULTS_FILE = RESULTS / "levers.jsonl"
TABLE_FILE = RESULTS / "levers.md"
BASE = "fast"
# every trial starts from the `fast` recipe as it was chosen on 3 December (batch 256, lr 0.6,
# the whitening stem; these levers are what the preset sets for fast_resnet10 only), so the
# table keeps its meaning when the preset itself changes
RECIPE = dict(whiten_stem=True, lr=0.6, batch_size=256)
TRAIN_SPLIT = 55_000  # Fashion-MNIST's training images less the 5,000 held out
BUDGET_FLOPS = 10e12  # nominal: 3 x forward FLOPs per image x images trained

TRIALS: dict[str, dict] = {
    "10 TFLOP": {},
    "zero-init residual": dict(spec=dict(zero_init_residual=True)),
    "BN momentum 0.4": dict(spec=dict(norm="batchnorm_m40")),
    "EMA 0.98": dict(config=dict(ema_decay=0.98)),
    "batch 128 at lr 0.42": dict(config=dict(batch_size=128, lr=0.42)),
    "batch 128 at lr 0.6": dict(config=dict(batch_size=128, lr=0.6)),
    "batch 64 at lr 0.3": dict(config=dict(batch_size=64, lr=0.3)),
    # more compute: the preset's 3 epochs (12.5 TFLOP) at batch 128, and 4 epochs
    "batch 128 at lr 0.42 for 3 epochs": dict(config=dict(batch_size=128, lr=0.42), epochs=3),
    "16.7 TFLOP": dict(epochs=4),
    "batch 128 at lr 0.42 for 4 epochs": dict(config=dict(batch_size=128, lr=0.42), epochs=4),
    # cheaper networks, trained for more steps in the same compute
    "3 stages 16/32/64": dict(spec=dict(depths=(1, 1, 1), widths=(16, 32, 64))),
    # airbench's levers (7 December, second round)
    "label smoothing 0.2": dict(config=dict(label_smoothing=0.2)),
    "BN biases 16x lr + scales frozen + momentum 0.4": dict(
        config=dict(norm_bias_lr_scale=16.0, freeze_norm_scales=True),
        spec=dict(norm="batchnorm_m40")),
    # airbench's weight decay is "decoupled" from the rate: lr x decay stays the recipe's 3e-4
    "batch 1024 at lr 1.2 + Nesterov 0.85": dict(
        config=dict(batch_size=1024, lr=1.2, momentum=0.85, weight_decay=2.5e-4)),
    # the two within the spread but above it at the lowest seed, on top of batch 128
    "batch 128 at lr 0.42 + BN biases 16x lr + scales frozen + momentum 0.4 + label smoothing 0.2":
        dict(config=dict(batch_size=128, lr=0.42, norm_bias_lr_scale=16.0,
                         freeze_norm_scales=True, label_smoothing=0.2),
             spec=dict(norm="batchnorm_m40")),
    "dirac init": dict(config=dict(init="dirac")),
    "one-cycle ending at 0.07": dict(config=dict(end_lr_fraction=0.07)),
    # fewer, wider stages: more compute per image, fewer steps
    "3 stages 24/48/96": dict(spec=dict(depths=(1, 1, 1), widths=(24, 48, 96))),
    # the goal of 94% in at most 40 TFLOP: 9 epochs (37.6 TFLOP), and the whole budget
    "batch 128 at lr 0.42 for 9 epochs": dict(config=dict(batch_size=128, lr=0.42), epochs=9),
    "batch 128 at lr 0.42 for 40 TFLOP": dict(config=dict(batch_size=128, lr=0.42), tflop=40),
}


def _register_variant(name: str, spec_changes: dict) -> str:
    """A zoo name for fast_resnet10 with ``spec_changes``, in this process only."""
    import torch.nn as nn

    from reslab.models import layers, zoo

    if "batchnorm_m40" not in layers.NORMS:
        layers.register_norm("batchnorm_m40", lambda c: nn.BatchNorm2d(c, momentum=0.4))
    model = "fast_resnet10+" + "".join(ch if ch.isalnum() else "_" for ch in name)
    zoo.SPECS[model] = dataclasses.replace(zoo.SPECS["fast_resnet10"], **spec_changes)
    return model


def overrides_for(name: str, threads: int = 1) -> dict:
    """The config fields trial ``name`` gives the `fast` preset: its changes, its network's
    zoo name, and its steps: its whole epochs, or what its network takes in the budget."""
    from benchmarks.bench_time_to_accuracy import forward_flops
    from reslab.training import preset

    trial = TRIALS[name]
    overrides = dict(RECIPE, **trial.get("config", {}), threads=threads)
    if "spec" in trial:
        overrides["model"] = _register_variant(name, trial["spec"])
    config = preset(BASE, **overrides)
    steps_per_epoch = TRAIN_SPLIT // config.batch_size  # the last part-batch is dropped
    if "epochs" in trial:
        steps = trial["epochs"] * steps_per_epoch
    else:
        budget = trial.get("tflop", BUDGET_FLOPS / 1e12) * 1e12
        steps = int(budget / (3 * forward_flops(config, 1, 28, 10)) // config.batch_size)
    return overrides | dict(max_steps=steps, epochs=math.ceil(steps / steps_per_epoch))


def run_trial(name: str, seed: int, threads: int) -> dict:
    """One trial on one seed (in a worker process): validation and test accuracy."""
    from benchmarks.bench_time_to_accuracy import one_run

    run = one_run(BASE, seed, overrides_for(name, threads), test_every=10**6)
    last = run["epochs"][-1]
    return {"trial": name, "seed": seed, "changes": _changes(TRIALS[name]),
            "val_acc": last["val_acc"], "test_acc": run["final_test_acc"],
            "images": last["images"], "train_flops_per_image": run["train_flops_per_image"],
            "val_curve": [row["val_acc"] for row in run["epochs"]]}


def _changes(trial: dict) -> str:
    parts = [f"{k}={v}" for k, v in trial.get("config", {}).items()]
    parts += [f"spec.{k}={v}" for k, v in trial.get("spec", {}).items()]
    return ", ".join(parts) or "(the recipe)"


def done() -> list[dict]:
    if not RESULTS_FILE.is_file():
        return []
    return [json.loads(line) for line in RESULTS_FILE.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    """Validation accuracy per trial: every seed, then the mean and the lowest over the seeds
    that every trial has, so that the rows compare like with like."""
    by_trial: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_trial.setdefault(row["trial"], {})[row["seed"]] = row
    seeds = sorted({row["seed"] for row in rows})
    common = sorted(set.intersection(*(set(runs) for runs in by_trial.values())))
    over = ", ".join(map(str, common))
    header = ["trial", "changes", "TFLOP", *(f"seed {s}" for s in seeds),
              f"mean (seeds {over})", f"lowest (seeds {over})"]
    body = []
    for name, runs in by_trial.items():
        accs = [runs[s]["val_acc"] for s in common]
        tflop = max(r["images"] * r["train_flops_per_image"] for r in runs.values()) / 1e12
        cells = [f"{runs[s]['val_acc']:.4f}" if s in runs else "" for s in seeds]
        body.append([name, next(iter(runs.values()))["changes"], f"{tflop:.1f}", *cells,
                      f"{statistics.mean(accs):.4f}", f"{min(accs):.4f}"])
    return markdown_table(header, body) + "\n"


def report(rows: list[dict]) -> str:
    """One table per compute budget, so that a trial is compared with those that spent as
    much."""
    budgets: dict[float, list[dict]] = {}
    for row in rows:
        spent = round(row["images"] * row["train_flops_per_image"] / 1e12, 1)
        budgets.setdefault(spent, []).append(row)
    return "\n".join(f"At {spent:g} TFLOP:\n\n" + table(group)
                     for spent, group in sorted(budgets.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default=",".join(TRIALS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--list", action="store_true", help="print the table and stop")
    args = parser.parse_args(argv)
    names = args.trials.split(",")
    unknown = [n for n in names if n not in TRIALS]
    if unknown:
        parser.error(f"unknown trial {unknown[0]!r}; choose from {', '.join(TRIALS)}")
    have = {(r["trial"], r["seed"]) for r in done()}
    todo = [(n, int(s)) for n in names for s in args.seeds.split(",") if (n, int(s)) not in have]
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    if not args.list and todo:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
            futures = [pool.submit(run_trial, n, s, threads) for n, s in todo]
            for future in concurrent.futures.as_completed(futures):
                row = future.result()
                with RESULTS_FILE.open("a") as out:
                    out.write(json.dumps(row) + "\n")
                print(f"{row['trial']}, seed {row['seed']}: val {row['val_acc']:.4f}",
                      flush=True)
    rows = done()
    atomic_write_text(TABLE_FILE, report(rows))
    print(report([r for r in rows if r["trial"] in names]), end="")


if __name__ == "__main__":
    main()
