"""Start-up: how long ``reslab`` takes to answer commands that need no training.

    python -m benchmarks startup [--runs 7] [--src DIR]

Each command runs as a whole process (``python -m reslab ...``), ``--runs`` times; reported:
median and minimum wall seconds. ``--src`` times another checkout's ``src`` (say, an older
commit's, for a before/after) with the same interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from benchmarks import common

COMMANDS = {
    "--version": ["--version"],
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "models": ["models"],
    "summary resnet50": ["summary", "resnet50"],
}


def seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reslab", *argv], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks startup")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--src", default=None, help="time this src folder instead")
    options = parser.parse_args(argv)
    env = dict(os.environ)
    if options.src:
        env["PYTHONPATH"] = options.src
    results = {}
    for name, command in COMMANDS.items():
        times = [seconds(command, env) for _ in range(options.runs)]
        results[name] = {"median_s": statistics.median(times), "min_s": min(times)}
        print(f"{name:<18} median {results[name]['median_s']:.3f} s, "
              f"min {results[name]['min_s']:.3f} s")
    if options.src is None:
        print(f"wrote {common.write('startup', {'runs': options.runs, 'commands': results})}")
