"""Run the benchmarks: ``python -m benchmarks [NAME ...] [OPTIONS]`` (all of them by default).

NAME: pipeline, training, inference, time_to_accuracy, memory, finetune, startup, report.
Each one prints its figures and writes benchmarks/results/NAME.json; ``report`` rewrites the
tables in docs/benchmarks.md from those files.
"""

import importlib
import sys

NAMES = ("pipeline", "training", "inference", "time_to_accuracy", "memory", "finetune",
         "startup", "report")


def main(argv: list[str]) -> int:
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first_option], [a for a in argv[first_option:] if a != "--"]
    for name in names or NAMES:
        if name not in NAMES:
            print(f"benchmarks: unknown benchmark {name!r}; choose from {', '.join(NAMES)}",
                  file=sys.stderr)
            return 2
    for name in names or NAMES:
        module = "report" if name == "report" else f"bench_{name}"
        print(f"== {name}")
        importlib.import_module(f"benchmarks.{module}").main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
