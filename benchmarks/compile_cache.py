"""What ``--compile`` costs and pays on the `fast` preset's step, and whether Inductor's
on-disk cache spares a second run the compile.

    python -m benchmarks.compile_cache [--windows 5]

Two fresh processes, one after the other, each build the `fast` step exactly as
``bench_training.reslab_step`` does (fast_resnet10, one batch of 256 in memory, the run's
precision and layout, the whitened stem frozen) twice: eager, and with ``torch.compile`` as
``reslab train --compile true`` wraps the model. Each times the compiled model's first step
(tracing and compiling) and then windows of both steps in turn. The first process starts
from an empty Inductor cache (a new ``TORCHINDUCTOR_CACHE_DIR``); the second finds what the
first left there, as a user's second run on the same machine does. Results in
benchmarks/results/compile_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = "benchmarks.compile_cache"


def measure(windows: int) -> dict:
    """In this process: the first compiled step's seconds, then the images/s of both steps."""
    import torch

    from benchmarks import bench_training, common
    from reslab.training import preset

    x, y = bench_training.batch(1, 28, 256)
    recipe = preset("fast")
    eager, precision = bench_training.reslab_step("fast_resnet10", 1, x, y, "auto", True,
                                                  recipe=recipe)
    compiled, _ = bench_training.reslab_step("fast_resnet10", 1, x, y, "auto", True,
                                             recipe=recipe.replace(compile=True))
    start = time.perf_counter()
    compiled()
    first = time.perf_counter() - start
    rates = common.rates_interleaved(
        {"eager": bench_training.window(eager, 4, len(y)),
         "compiled": bench_training.window(compiled, 4, len(y))}, windows)
    return {"first_step_s": first, "precision": precision, "threads": torch.get_num_threads(),
            "images_per_s": {k: statistics.median(v) for k, v in rates.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:  # the child: print one JSON line
        print(json.dumps(measure(args.windows)))
        return
    from benchmarks import common

    runs = {}
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for label in ("empty cache", "cache of the first run"):
            out = subprocess.run([sys.executable, "-m", PROBE, "--probe",
                                  "--windows", str(args.windows)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            runs[label] = json.loads(out.strip().splitlines()[-1])
            rates = runs[label]["images_per_s"]
            print(f"{label}: first compiled step {runs[label]['first_step_s']:.1f} s; "
                  f"eager {rates['eager']:.0f} images/s, compiled {rates['compiled']:.0f} "
                  f"({rates['compiled'] / rates['eager']:.2f}x)", flush=True)
    print(f"written to {common.write('compile_cache', {'runs': runs})}")


if __name__ == "__main__":
    main()
