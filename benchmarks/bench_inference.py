"""Inference: latency at batch 1 and throughput at batch 64, reslab against the seed's eager code.

    python -m benchmarks inference [--quick] [--models resnet18,resnet50]

The reference is ``reference_d2l.net`` in eval mode under ``torch.no_grad()`` (fp32, NCHW).
reslab is ``reslab.inference.InferenceModel`` (what ``reslab predict`` and ``reslab eval`` run):
by default, and with its levers switched off one at a time. 3x224x224 input, 1000 classes.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from benchmarks import common, reference_d2l
from reslab import create_model
from reslab.inference import InferenceModel

SIDE, CLASSES = 224, 1000
# label -> InferenceModel options; "default" is what reslab runs
VARIANTS = {
    "default": {},
    "bf16 autocast": {"bf16_weights": False},
    "fp32": {"precision": "fp32"},
    "bf16 unfused": {"fuse_bn": False},
    "bf16 NCHW": {"channels_last": False},
    "compiled": {"compile": True},  # an option: the first call compiles (seconds)
}


def timings(model, batch_size: int, windows: int, calls: int) -> list[float]:
    x = torch.randn(batch_size, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))

    def window() -> int:
        for _ in range(calls):
            model(x)
        return calls * batch_size

    return common.rates(window, windows, warmup=2)


def measure(make, quick: bool) -> dict:
    """``make()`` gives the model to time; one per batch size, so that a compiled model is
    compiled for that shape (the warm-up calls compile it)."""
    model = make()
    latency = timings(model, 1, 3 if quick else 7, 1 if quick else 5)  # images/s at batch 1
    throughput = timings(make(), 64, 1 if quick else 3, 1)
    got = {"latency_ms": common.summary([1000 / r for r in latency]),
           "batch64_images_per_s": common.summary(throughput)}
    if isinstance(model, InferenceModel):
        got["precision"] = model.precision
    return got


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter windows")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated: " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    results = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        reference = reference_d2l.net(name, 3, CLASSES).eval()

        def eager(x, net=reference):
            with torch.no_grad():
                return net(x)

        ref = measure(lambda: eager, args.quick)
        row = {"model": name, "reference": ref, "reslab": {}}
        print(f"{name:<9} reference (eager fp32 NCHW)  batch 1 "
              f"{ref['latency_ms']['median']:7.1f} ms   batch 64 "
              f"{ref['batch64_images_per_s']['median']:6.1f} img/s")
        model = create_model(name, num_classes=CLASSES)
        for label in args.variants.split(","):
            got = measure(partial(InferenceModel, model, **VARIANTS[label]), args.quick)
            got["latency_ratio"] = got["latency_ms"]["median"] / ref["latency_ms"]["median"]
            got["throughput_speedup"] = (got["batch64_images_per_s"]["median"]
                                         / ref["batch64_images_per_s"]["median"])
            row["reslab"][label] = got
            print(f"{'':<9} reslab {label:<21} batch 1 {got['latency_ms']['median']:7.1f} ms "
                  f"({got['latency_ratio']:4.2f}x)  batch 64 "
                  f"{got['batch64_images_per_s']['median']:6.1f} img/s "
                  f"({got['throughput_speedup']:4.2f}x)")
        results.append(row)
    path = common.write("inference", {"quick": args.quick, "input": [3, SIDE, SIDE],
                                      "results": results})
    print(f"wrote {path}")
    return {"results": results}


if __name__ == "__main__":
    main()
