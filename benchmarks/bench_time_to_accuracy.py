"""Time to accuracy: wall time and training compute for presets to reach 93%, 94%, 95%
Fashion-MNIST test accuracy.

    python -m benchmarks time_to_accuracy [--presets fast,accurate,best] [--seeds 0,1,2]
        [--targets 0.93,0.94,0.95] [--test-every N] [--ablate] [--quick] [--d2l-run DIR]

Runs ``reslab.train`` once per preset and seed, exactly as ``reslab train --preset P --seed S``
would. After each epoch the benchmark (not the run: selection uses the validation split only)
measures test accuracy of the model validation saw; the clock stops while it does
(``--test-every N``: only after every Nth epoch and the last, for long runs; a crossing is
then found up to N epochs late). An epoch's time is the run's wall time from the call to
``train`` (data loading included) to the end of that epoch's validation and checkpoint. The
time to X% is the first epoch end measured at or above X, reported per seed and as the median
over seeds (a seed that never gets there counts as never), and for every seed: the compute
by which the slowest seed got there, or how many did. Times are the machine's own, never
normalised: a matrix-multiply peak that differs 5x between machines (AMX) moves a small
convolutional net's step by 1.4x, so no factor relates them honestly. Beside them each entry
keeps the machine's kind (AVX2, AVX-512 bf16 or AMX, from its CPU flags) and both peaks,
bf16 and fp32 ``torch.mm``, measured first, alone.

Each preset's entry keeps the machine, date and peak it was measured with; presets not
measured this time keep their earlier entries in the results file. The file is written as
each seed ends, the entry marked unfinished until the last: run again, the same command keeps
the seeds an unfinished entry has (same recipe, test interval, machine kind and precision)
and trains the rest.

Compute is nominal and the same for every recipe: the model's forward FLOPs on one image
(``FlopCounterMode``, at the size it trains at) x 3 (forward and backward) x images trained.

``--ablate`` trains the first preset once more per lever it turns on, with that lever off
(first seed only), to show what each is worth. ``--d2l-run DIR`` adds a finished
``reslab train --preset d2l`` run's time to its final accuracy (10 epochs: too long to repeat).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import bench_training, common, report
from reslab.data import BatchLoader, load_dataset
from reslab.models import create_model
from reslab.runtime.device import resolve_device, resolve_precision
from reslab.runtime.evaluate import evaluate
from reslab.training import PRESETS, TrainConfig, preset, train
from reslab.training.config import recipe

# what switches each lever off, for the ablation (only those a preset turns on are tried);
# the learning rate goes back to TrainConfig's plain 0.2
LEVERS_OFF = {
    "whiten_stem": False, "lr": TrainConfig.lr, "lookahead_steps": 0, "ema_decay": None,
    "alternate_flips": False, "tta_shift": 0, "tta_flip": False, "label_smoothing": 0.0,
    "norm_bias_lr_scale": 1.0, "freeze_norm_scales": False, "progressive_resize": None,
}


def forward_flops(config: TrainConfig, channels: int, side: int, classes: int) -> int:
    """FLOPs of one image's forward pass, at the size the run feeds the network."""
    model = create_model(config.model, num_classes=classes, in_channels=channels).eval()
    side = config.resize or side
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, side, side))
    return counter.get_total_flops()


def one_run(preset_name: str, seed: int, overrides: dict, test_every: int = 1,
            progress: bool = False) -> dict:
    config = preset(preset_name, seed=seed, quiet=True, **overrides)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    data = load_dataset(config.data, config.data_dir, val_size=config.val_size, seed=seed)
    test = BatchLoader(data.test, 512, train=False, mean=data.mean, std=data.std,
                       resize=config.resize, device=device, channels_last=config.channels_last)
    epochs, paused, images = [], 0.0, 0

    def follow_test_accuracy(row, model):
        nonlocal paused, images
        now = time.perf_counter()
        images += row["train_images"]
        accuracy = None
        if row["epoch"] % test_every == 0 or row["epoch"] == config.epochs:
            accuracy = evaluate(model, test, len(data.classes), device=device,
                                precision=precision, tta_flip=config.tta_flip,
                                tta_shift=config.tta_shift).accuracy
        epochs.append({"epoch": row["epoch"], "wall_s": now - start - paused, "images": images,
                       "val_acc": row["val_acc"], "test_acc": accuracy})
        if progress:
            shown = "-" if accuracy is None else f"{accuracy:.4f}"
            print(f"  {preset_name} seed {seed} epoch {row['epoch']}/{config.epochs}: "
                  f"{now - start - paused:.0f} s, val {row['val_acc']:.4f}, test {shown}",
                  flush=True)
        paused += time.perf_counter() - now

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(config.replace(out=str(Path(out) / "run")),
                       on_epoch_end=follow_test_accuracy)
        total = time.perf_counter() - start - paused
    channels, side, _ = data.image_shape
    return {"seed": seed, "epochs": epochs, "final_test_acc": result.test["accuracy"],
            "wall_s": total, "precision": precision,
            "train_flops_per_image": 3 * forward_flops(config, channels, side, len(data.classes))}


def step_utilisation(preset_name: str, peak: float, windows: int = 5) -> dict:
    """The preset's training step on one batch already in memory (no data pipeline): images/s
    and the share of the peak (of the precision it computes in) its nominal FLOPs make."""
    config = preset(preset_name)
    x, y = bench_training.batch(1, 28, config.batch_size)
    step, precision = bench_training.reslab_step(config.model, 1, x, y, config.precision,
                                                 config.channels_last, recipe=config)
    rate = statistics.median(common.rates(bench_training.window(step, 4, len(y)), windows))
    flops = 3 * forward_flops(config, 1, 28, 10)
    return {"images_per_s": rate, "train_flops_per_image": flops,
            "utilisation": rate * flops / peak, "precision": precision}


def reached(run: dict, target: float) -> dict | None:
    """When ``run`` first reached ``target`` test accuracy: epoch, seconds, compute."""
    epoch = next((e for e in run["epochs"]
                  if e["test_acc"] is not None and e["test_acc"] >= target), None)
    if epoch is None:
        return None
    return {"epoch": epoch["epoch"], "seconds": epoch["wall_s"],
            "tflop": epoch["images"] * run["train_flops_per_image"] / 1e12}


def time_to(runs: list[dict], target: float) -> dict:
    per_seed = [reached(run, target) for run in runs]

    def median(key: str) -> float | None:
        # a run that never got there counts as infinitely slow
        values = sorted(r[key] if r else float("inf") for r in per_seed)
        middle = statistics.median(values)
        return None if middle == float("inf") else middle

    got_there = [r for r in per_seed if r]
    return {"target": target, "per_seed": per_seed, "median_s": median("seconds"),
            "median_tflop": median("tflop"), "seeds_reached": len(got_there),
            # the goal is every seed: the compute by which the slowest one got there
            "every_seed_tflop": (max(r["tflop"] for r in got_there)
                                 if got_there and len(got_there) == len(per_seed) else None)}


def ablation(preset_name: str, seed: int, overrides: dict, targets: list[float]
             ) -> list[dict]:
    recipe = preset(preset_name)
    rows = []
    for field, off in LEVERS_OFF.items():
        if getattr(recipe, field) == off:
            continue
        run = one_run(preset_name, seed, overrides | {field: off})
        rows.append({"without": field, "value": off, "final_test_acc": run["final_test_acc"],
                     "reached": {str(t): reached(run, t) for t in targets}, "run": run})
        print(f"  {field}={off}: final test {run['final_test_acc']:.4f}; "
              + ", ".join(_reached_text(t, reached(run, t)) for t in targets))
    return rows


def _reached_text(target: float, when: dict | None) -> str:
    if when is None:
        return f"{target:.0%} never"
    return (f"{target:.0%} at epoch {when['epoch']} ({when['seconds']:.0f} s, "
            f"{when['tflop']:.1f} TFLOP)")


def d2l_figures(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run / "results.json").read_text())
    return {"run": str(run), "epochs": len(rows), "train_s": sum(r["seconds"] for r in rows),
            "images_per_s": [r["images_per_s"] for r in rows],
            "final_test_acc": results["accuracy"]}


def measure_peak(preset_name: str, quick: bool) -> dict:
    """The machine's kind and its bf16 and fp32 ``torch.mm`` peaks, and the precision the
    preset computes in here (``peak`` of the record: the one its step is read against)."""
    config = preset(preset_name)
    precision = resolve_precision(config.precision, resolve_device(config.device))
    n = 1024 if quick else 4096
    # emulated bf16 runs at ~1 GFLOP/s: a small product is enough to record it
    bf16_n = n if precision == "bf16" else 512
    peaks = {"bf16_peak": common.matmul_peak(torch.bfloat16, n=bf16_n, windows=3),
             "fp32_peak": common.matmul_peak(torch.float32, n=n)}
    return {"precision": precision, "cpu_kind": common.cpu_kind(),
            "peak": peaks[f"{precision}_peak"]} | peaks


def previous(quick: bool) -> dict:
    """The presets measured before (each with its own machine and peak), to keep."""
    path = common.RESULTS / f"time_to_accuracy{'-quick' if quick else ''}.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    presets = old.get("presets", {})
    for entry in presets.values():  # files from before entries carried their own machine
        entry.setdefault("date", old.get("date"))
        entry.setdefault("machine", old.get("machine"))
        entry.setdefault("peak", {"precision": "bf16", "bf16_peak": old.get("bf16_peak")})
    return {key: old[key] for key in ("ablation", "d2l") if key in old} | {"presets": presets}


def entry(name: str, peak: dict, step: dict, test_every: int, runs: list[dict],
          targets: list[float], seeds: int) -> dict:
    """A preset's record: its recipe, where and how it was measured, its runs, when each
    target was reached, and whether seeds are still to run."""
    return {"recipe": recipe(name), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": common.machine(), "peak": peak, "test_every": test_every,
            "step": step, "runs": runs, "targets": [time_to(runs, t) for t in targets],
            "unfinished": len(runs) < seeds}


def unfinished_runs(previous_entry: dict | None, name: str, peak: dict, test_every: int
                    ) -> dict[int, dict]:
    """The seeds an unfinished measurement of preset ``name`` already ran, by seed, when it
    measured the same recipe the same way on the same kind of machine; else none."""
    if not previous_entry or not previous_entry.get("unfinished"):
        return {}
    same = (previous_entry.get("recipe") == json.loads(json.dumps(recipe(name)))
            and previous_entry.get("test_every") == test_every
            and previous_entry["peak"].get("cpu_kind") == peak["cpu_kind"]
            and previous_entry["peak"].get("precision") == peak["precision"])
    return {run["seed"]: run for run in previous_entry["runs"]} if same else {}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="fast", help="comma-separated: "
                        + ", ".join(PRESETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default="0.93,0.94,0.95")
    parser.add_argument("--test-every", type=int, default=1, metavar="N",
                        help="measure test accuracy after every Nth epoch (and the last)")
    parser.add_argument("--ablate", action="store_true",
                        help="also train the first preset without each of its levers")
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch on 3,000 images (a smoke run, not a measurement)")
    parser.add_argument("--d2l-run", type=Path, default=None)
    args = parser.parse_args(argv)
    names = args.presets.split(",")
    for name in names:
        preset(name)  # an unknown name is refused before anything runs
    if args.test_every < 1:
        parser.error(f"--test-every must be at least 1, got {args.test_every}")
    overrides = {"epochs": 1, "train_subset": 3000, "val_size": 500} if args.quick else {}
    targets = [float(t) for t in args.targets.split(",")]
    results = {"quick": args.quick, "presets": {}}
    results |= previous(args.quick)
    for name in names:
        peak = measure_peak(name, args.quick)
        print(f"{name}: {report.peak_text(peak)}", flush=True)
        step = step_utilisation(name, peak["peak"], windows=1 if args.quick else 5)
        print(f"{name}: training step {step['images_per_s']:,.0f} images/s, "
              f"{step['utilisation']:.0%} of the {peak['precision']} peak", flush=True)
        seeds = [int(s) for s in args.seeds.split(",")]
        kept = unfinished_runs(results["presets"].get(name), name, peak, args.test_every)
        runs = []
        for seed in seeds:
            if seed in kept:
                run = kept[seed]
                print(f"{name} seed {seed}: kept from the unfinished measurement "
                      f"({run['final_test_acc']:.4f})", flush=True)
            else:
                run = one_run(name, seed, overrides, args.test_every, progress=True)
                print(f"{name} seed {seed}: final test {run['final_test_acc']:.4f} in "
                      f"{run['wall_s']:.0f} s ({run['precision']})", flush=True)
            runs.append(run)
            # each finished seed is written at once: a measurement cut short (an hour a seed
            # for `best`) goes on from here when run again
            results["presets"][name] = entry(name, peak, step, args.test_every, runs, targets,
                                             len(seeds))
            common.write("time_to_accuracy", results)
        reached_by = results["presets"][name]["targets"]
        for t in reached_by:
            shown = ("not reached" if t["median_s"] is None else
                     f"{t['median_s']:.0f} s, {t['median_tflop']:.1f} TFLOP")
            every = (f"every seed by {t['every_seed_tflop']:.1f} TFLOP"
                     if t["every_seed_tflop"] is not None
                     else f"{t['seeds_reached']} of {len(runs)} seeds")
            print(f"{name}: time to {t['target']:.1%}: median {shown}; {every}")
    if args.ablate:
        print(f"ablation of {names[0]} (seed {args.seeds.split(',')[0]}):")
        results["ablation"] = {"preset": names[0], "rows": ablation(
            names[0], int(args.seeds.split(",")[0]), overrides, targets)}
    if args.d2l_run:
        results["d2l"] = d2l = d2l_figures(args.d2l_run)
        print(f"d2l: final test accuracy {d2l['final_test_acc']:.4f} after {d2l['epochs']} "
              f"epochs, {d2l['train_s']:.0f} s of training")
    path = common.write("time_to_accuracy", results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
