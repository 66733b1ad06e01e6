"""Time to accuracy: wall time for a preset to reach 93% and 94% Fashion-MNIST test accuracy.

    python -m benchmarks time_to_accuracy [--seeds 0,1,2] [--preset fast] [--d2l-run DIR]

Runs ``reslab.train`` once per seed, exactly as ``reslab train --preset P --seed S`` would.
After each epoch the benchmark (not the run: selection uses the validation split only) measures
test accuracy of the model validation saw; the clock stops while it does. An epoch's time is
the run's wall time from the call to ``train`` (data loading included) to the end of that
epoch's validation and checkpoint. The time to X% is the first epoch end at or above X;
reported as the median over seeds (a seed that never gets there counts as never).

``--d2l-run DIR`` adds a finished ``reslab train --preset d2l`` run's time to its final
accuracy (from its metrics.jsonl and results.json; 10 epochs are too long to repeat here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common
from reslab.data import BatchLoader, load_dataset
from reslab.training import preset, train
from reslab.training.evaluate import evaluate
from reslab.training.runtime import resolve_device, resolve_precision


def one_run(preset_name: str, seed: int, overrides: dict) -> dict:
    config = preset(preset_name, seed=seed, quiet=True, **overrides)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    data = load_dataset(config.data, config.data_dir, val_size=config.val_size, seed=seed)
    test = BatchLoader(data.test, 512, train=False, mean=data.mean, std=data.std,
                       resize=config.resize, device=device, channels_last=config.channels_last)
    epochs, paused = [], 0.0

    def follow_test_accuracy(row, model):
        nonlocal paused
        now = time.perf_counter()
        accuracy = evaluate(model, test, len(data.classes), device=device, precision=precision,
                            tta_flip=config.tta_flip,
                            tta_shift=config.tta_shift).accuracy
        epochs.append({"epoch": row["epoch"], "wall_s": now - start - paused,
                       "val_acc": row["val_acc"], "test_acc": accuracy})
        paused += time.perf_counter() - now

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(config.replace(out=str(Path(out) / "run")),
                       on_epoch_end=follow_test_accuracy)
        total = time.perf_counter() - start - paused
    return {"seed": seed, "epochs": epochs, "final_test_acc": result.test["accuracy"],
            "wall_s": total, "precision": precision}


def time_to(runs: list[dict], target: float) -> dict:
    times = [next((e["wall_s"] for e in run["epochs"] if e["test_acc"] >= target), None)
             for run in runs]
    reached = sorted(t for t in times if t is not None)
    # the median counts a run that never got there as infinitely slow
    ordered = reached + [float("inf")] * (len(times) - len(reached))
    median = statistics.median(ordered)
    return {"target": target, "per_seed_s": times,
            "median_s": None if median == float("inf") else median}


def d2l_figures(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run / "results.json").read_text())
    return {"run": str(run), "epochs": len(rows), "train_s": sum(r["seconds"] for r in rows),
            "images_per_s": [r["images_per_s"] for r in rows],
            "final_test_acc": results["accuracy"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default="0.93,0.94")
    parser.add_argument("--quick", action="store_true",
                        help="2 epochs on 6,000 images (a smoke run, not a measurement)")
    parser.add_argument("--d2l-run", type=Path, default=None)
    args = parser.parse_args(argv)
    overrides = {"epochs": 2, "train_subset": 6000} if args.quick else {}
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run = one_run(args.preset, seed, overrides)
        runs.append(run)
        trail = ", ".join(f"{e['wall_s']:.0f}s {e['test_acc']:.4f}" for e in run["epochs"])
        print(f"{args.preset} seed {seed}: final test {run['final_test_acc']:.4f} in "
              f"{run['wall_s']:.0f} s ({run['precision']}); after each epoch: {trail}")
    targets = [time_to(runs, float(t)) for t in args.targets.split(",")]
    for t in targets:
        shown = "not reached" if t["median_s"] is None else f"{t['median_s']:.0f} s"
        print(f"time to {t['target']:.1%}: median {shown} over {len(runs)} seeds")
    results = {"preset": args.preset, "quick": args.quick, "runs": runs, "targets": targets}
    if args.d2l_run:
        results["d2l"] = d2l_figures(args.d2l_run)
        d2l = results["d2l"]
        print(f"d2l: final test accuracy {d2l['final_test_acc']:.4f} after {d2l['epochs']} "
              f"epochs, {d2l['train_s']:.0f} s of training")
    path = common.write("time_to_accuracy", results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
