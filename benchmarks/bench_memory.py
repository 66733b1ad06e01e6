"""Peak memory (resident set size) of training runs, each in a fresh process.

    python -m benchmarks memory [--quick]

- ``reslab train --preset fast`` and ``--preset d2l`` on Fashion-MNIST, stopped after a few
  steps (``--max-steps``; the peak is reached in the first steps: the data set, the model,
  the optimizer state and one batch's activations);
- the baseline: the seed's eager fp32 network and D2L's step (``reference_d2l``) at the d2l
  preset's size (96x96, batch 256) on one random batch, with the same data set loaded.
- the floor: a process that imports torch and reslab and loads the data set.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap

from benchmarks import common

# VmHWM, the peak of this process's own memory: ru_maxrss would carry the forking parent's
# peak over exec
PEAK = """
print(*(line for line in open('/proc/self/status') if line.startswith('VmHWM:')))
"""
FLOOR = "from reslab.data import load_dataset; load_dataset('fashion-mnist')"
REFERENCE = textwrap.dedent("""
    import torch
    from benchmarks import reference_d2l
    from reslab.data import load_dataset
    load_dataset('fashion-mnist', val_size=0)
    net = reference_d2l.net('d2l_resnet18', 1)
    optimizer, loss = reference_d2l.trainer(net)
    x, y = torch.randn(256, 1, 96, 96), torch.randint(0, 10, (256,))
    for _ in range({steps}):
        reference_d2l.train_step(net, optimizer, loss, x, y)
""")


def peak_rss_mib(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code + "\n" + PEAK], capture_output=True,
                          text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024  # kB


def train_code(preset: str, steps: int, out: str) -> str:
    argv = ["train", "--preset", preset, "--max-steps", str(steps), "--quiet",
            "--out", out]
    return f"from reslab.cli import main; assert main({argv!r}) == 0"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps instead of 10")
    args = parser.parse_args(argv)
    steps = 2 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "floor (torch + reslab + Fashion-MNIST loaded)": FLOOR,
            "reference: seed's d2l net, D2L step, 96x96 batch 256": REFERENCE.format(
                steps=steps),
            "reslab train --preset d2l": train_code("d2l", steps, f"{tmp}/d2l"),
            "reslab train --preset fast": train_code("fast", steps, f"{tmp}/fast"),
        }
        results = {}
        for label, code in cases.items():
            results[label] = peak_rss_mib(code)
            print(f"{label:<55} {results[label]:8.0f} MiB")
    ratio = (results["reslab train --preset d2l"]
             / results["reference: seed's d2l net, D2L step, 96x96 batch 256"])
    print(f"reslab d2l preset / reference: {ratio:.2f}x")
    path = common.write("memory", {"quick": args.quick, "steps": steps,
                                   "peak_rss_mib": results, "d2l_vs_reference": ratio})
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
