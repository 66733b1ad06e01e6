"""Throughput of the batch pipeline alone (no model) on one CPU thread.

    python -m benchmarks pipeline [--quick]

Fashion-MNIST-shaped data (60,000 random uint8 28x28 images) through BatchLoader: shuffle,
slice, random crop (padding 3) + flip, normalise, channels_last; then the same resized to 96x96
(the D2L recipe). Reports the median images/s of several timed windows after a warm-up and
writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator

import torch

from benchmarks import common
from reslab.data import AugmentConfig, BatchLoader, Split

TARGET_28 = 20_000  # images/s the 28x28 crop+flip pipeline must reach on one core


def endless(loader: BatchLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure(loader: BatchLoader, windows: int, batches: int) -> list[float]:
    """images/s of each timed window of ``batches`` batches, after one warm-up window."""
    stream = endless(loader)
    return common.rates(lambda: sum(len(next(stream)[0]) for _ in range(batches)), windows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer, shorter windows.")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    windows, batches = (3, 5) if args.quick else (7, 40)

    generator = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8,
                                generator=generator),
                  torch.randint(0, 10, (60_000,), generator=generator))
    augment = AugmentConfig(crop_padding=3, flip=True)
    cases = {
        "28x28 crop+flip": {"resize": None},
        "28x28 crop+flip, resize 96": {"resize": 96},
        "28x28 no augmentation": {"resize": None, "augment": None},
    }
    results = []
    for name, options in cases.items():
        options = {"augment": augment, **options}
        loader = BatchLoader(split, args.batch_size, train=True, mean=(0.286,), std=(0.353,),
                             **options)
        rates = measure(loader, windows, batches)
        results.append({"case": name, "images_per_s": round(statistics.median(rates)),
                        "windows": [round(r) for r in rates], "batch_size": args.batch_size})
        print(f"{name:<28} {statistics.median(rates):>10,.0f} images/s (median of {windows})")
    report = {"quick": args.quick, "target_28x28": TARGET_28, "results": results}
    print(f"wrote {common.write('pipeline', report)}")
    return report


if __name__ == "__main__":
    main()
