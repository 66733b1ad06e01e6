"""Rewrite the tables of docs/benchmarks.md from benchmarks/results/*.json.

    python -m benchmarks report

Each table sits between ``<!-- BEGIN NAME -->`` and ``<!-- END NAME -->``; the prose around
the tables (analysis, profiles) is written by hand and left as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import RESULTS
from reslab.io import atomic_write_text

DOC = Path(__file__).parent.parent / "docs" / "benchmarks.md"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def machine(r: dict) -> str:
    m = r["machine"]
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores ({m.get('threads')} threads), "
            f"torch {m.get('torch')} ({m.get('cpu_capability', '?')}); "
            f"measured {r.get('date', '?')}")


def training(r: dict) -> str:
    peaks = r["peak_flops"]
    rows = []
    for case in r["results"]:
        shape = "x".join(map(str, case["input"]))
        ref = case["reference"]["median"]
        rows.append([f"{case['model']} {shape} b{case['batch']}", "reference (eager fp32)",
                     f"{ref:,.1f}", "1.00x",
                     f"{ref * case['train_gflop_per_image'] * 1e9 / peaks['fp32']:.1%} (fp32)"])
        for label, v in case["reslab"].items():
            rows.append(["", f"reslab {label} ({v['precision']})", f"{v['median']:,.1f}",
                         f"{v['speedup']:.2f}x", f"{v['mfu']:.1%} ({v['precision']})"])
    measured = "; ".join(f"{kind}: fp32 {m['fp32'] / 1e9:.0f}, bf16 {m['bf16'] / 1e9:.0f}"
                         for kind, m in r.get("measured_peaks", {}).items())
    return (f"Matrix-multiply peak (the faster of {measured or 'torch.mm'}; GFLOP/s): fp32 "
            f"{peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f}. {machine(r)}.\n\n"
            + markdown_table(["case", "step", "images/s (median)", "vs reference", "MFU"], rows))


def inference(r: dict) -> str:
    rows = []
    for case in r["results"]:
        ref = case["reference"]
        rows.append([case["model"], "reference (eager fp32, no_grad)",
                     f"{ref['latency_ms']['median']:.1f}", "1.00x",
                     f"{ref['batch64_images_per_s']['median']:.1f}", "1.00x"])
        for label, v in case["reslab"].items():
            rows.append(["", f"reslab {label} ({v['precision']})",
                         f"{v['latency_ms']['median']:.1f}", f"{v['latency_ratio']:.2f}x",
                         f"{v['batch64_images_per_s']['median']:.1f}",
                         f"{v['throughput_speedup']:.2f}x"])
    return f"{machine(r)}.\n\n" + markdown_table(
        ["model (3x224x224)", "path", "batch-1 latency ms", "vs reference",
         "batch-64 images/s", "vs reference"], rows)


def time_to_accuracy(r: dict) -> str:
    if "presets" not in r:  # written by an older version of the benchmark
        return "(results from an older benchmark: run `python -m benchmarks time_to_accuracy`)"
    targets = [t["target"] for t in next(iter(r["presets"].values()))["targets"]]
    header = ["preset", "seed", "final test acc"] + [f"to {t:.0%}: epoch, s, TFLOP"
                                                     for t in targets]
    rows = []
    for name, p in r["presets"].items():
        for i, run in enumerate(p["runs"]):
            rows.append([f"`{name}`" if i == 0 else "", str(run["seed"]),
                         f"{run['final_test_acc']:.4f}"]
                        + [_when(t["per_seed"][i]) for t in p["targets"]])
        rows.append(["", "**median**", ""] + [
            "never" if t["median_s"] is None else
            f"**{t['median_s']:.0f} s, {t['median_tflop']:.1f}**" for t in p["targets"]])
        rows.append(["", "**every seed**", ""] + [_every(t, len(p["runs"]))
                                                  for t in p["targets"]])
    steps = "; ".join(f"`{name}` {p['step']['images_per_s']:,.0f} images/s, "
                      f"{p['step']['utilisation']:.0%} of the {p['peak']['precision']} peak"
                      for name, p in r["presets"].items() if "step" in p)
    measured: dict[str, list[str]] = {}  # how and where, for the presets measured alike
    for name, p in r["presets"].items():
        line = (f"{peak_text(p['peak'])}; {machine(p)}."
                + (f" Test accuracy measured every {p['test_every']} epochs and after the "
                   "last." if p.get("test_every", 1) > 1 else "")
                + (" Unfinished: the seeds so far." if p.get("unfinished") else ""))
        measured.setdefault(line, []).append(f"`{name}`")
    where = "\n".join(f"- {', '.join(names)}: {line}" for line, names in measured.items())
    text = (where + "\n\n" + markdown_table(header, rows)
            + (f"\n\nTraining step alone (one batch in memory): {steps}." if steps else ""))
    if "ablation" in r:
        a = r["ablation"]
        rows = [[f"`{row['without']}={row.get('value')}`", f"{row['final_test_acc']:.4f}"]
                + [_when(row["reached"][str(t)]) for t in targets] for row in a["rows"]]
        seed = r["presets"][a["preset"]]["runs"][0]["seed"]
        text += (f"\n\nAblation of `{a['preset']}` (seed {seed}; each lever switched off in "
                 "turn):\n\n"
                 + markdown_table(["run", "final test acc"]
                                  + [f"to {t:.0%}" for t in targets], rows))
    if "d2l" in r:
        d = r["d2l"]
        text += (f"\n\n`d2l` preset (one run): final test accuracy {d['final_test_acc']:.4f} "
                 f"after {d['epochs']} epochs and {d['train_s']:,.0f} s of training "
                 f"({min(d['images_per_s']):.0f}–{max(d['images_per_s']):.0f} images/s).")
    return text


def peak_text(peak: dict) -> str:
    """The machine a preset's times come from: its kind, both peaks, the precision trained in
    (entries measured before the kind was recorded show what they kept)."""
    peaks = ", ".join(f"{dtype} `torch.mm` {_gflops(peak[f'{dtype}_peak'])} GFLOP/s"
                      for dtype in ("bf16", "fp32") if peak.get(f"{dtype}_peak"))
    kind = f"{peak['cpu_kind']} machine, " if peak.get("cpu_kind") else ""
    return f"{kind}{peaks}; trained in {peak['precision']}"


def _gflops(flops: float) -> str:
    return f"{flops / 1e9:.1f}" if flops < 10e9 else f"{flops / 1e9:,.0f}"


def _when(reached: dict | None) -> str:
    if reached is None:
        return "never"
    return f"{reached['epoch']}, {reached['seconds']:.0f} s, {reached['tflop']:.1f}"


def _every(target: dict, seeds: int) -> str:
    """The goal is every seed: the compute by which the slowest got there, or how many did."""
    got_there = [r for r in target["per_seed"] if r]
    if got_there and len(got_there) == seeds:
        return f"**all {seeds} by {max(r['tflop'] for r in got_there):.1f} TFLOP**"
    return f"{len(got_there)} of {seeds}"


def memory(r: dict) -> str:
    rows = [[label, f"{mib:,.0f}"] for label, mib in r["peak_rss_mib"].items()]
    return (f"{r['steps']} training steps per run. {machine(r)}.\n\n"
            + markdown_table(["process", "peak RSS MiB"], rows)
            + f"\n\nreslab's d2l preset / the reference: {r['d2l_vs_reference']:.2f}x.")


def pipeline(r: dict) -> str:
    rows = [[x["case"], f"{x['images_per_s']:,}"] for x in r["results"]]
    return f"One thread. {machine(r)}.\n\n" + markdown_table(["case", "images/s"], rows)


RENDER: dict[str, Callable[[dict], str]] = {
    "training": training, "inference": inference, "time_to_accuracy": time_to_accuracy,
    "memory": memory, "pipeline": pipeline,
}


def main(argv: list[str] | None = None) -> None:
    doc = DOC.read_text()
    for name, render in RENDER.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        block = re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)
        if not block.search(doc):
            print(f"docs/benchmarks.md has no block for {name}; skipped")
            continue
        table = render(json.loads(path.read_text()))
        doc = block.sub(lambda m, t=table: m[1] + t + "\n" + m[2], doc)
    atomic_write_text(DOC, doc)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
