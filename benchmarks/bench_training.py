"""Training throughput: reslab's training step against the seed's eager fp32 code, same process.

    python -m benchmarks training [--quick] [--cases d2l-28,d2l-96,resnet18,resnet50]
    python -m benchmarks training --profile resnet50   # torch.profiler's top operators

For each case (model, input, batch) it times, on one fixed batch already in memory (the batch
pipeline is benchmarked on its own in ``pipeline``):

- the reference: ``reference_d2l.net`` trained as D2L's ``train_ch6`` does (fp32, NCHW, SGD);
- reslab's step exactly as ``fit`` runs it (``reslab.training.train_step`` on a
  ``TrainState``: the optimizer and schedule of the default config), by default and with
  each of its speed levers switched off, to show what each one pays.

Reported: the median images/s of several timed windows after a warm-up (the reference's and
every variant's windows taken in turn, so a drift in the machine's speed hits all), the ratio
to the reference, and the model FLOP utilisation (model FLOPs per image x images/s over the measured
matrix-multiply peak of the dtype the step computes in).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks import common, reference_d2l
from reslab import create_model
from reslab.io import atomic_write_text
from reslab.runtime.device import resolve_precision
from reslab.training import TrainConfig, TrainState, preset, train_step
from reslab.training.whitening import freeze_first_conv

# name -> (model, channels, side, batch, windows, steps per window)
CASES = {
    "d2l-28": ("d2l_resnet18", 1, 28, 256, 5, 4),
    "d2l-96": ("d2l_resnet18", 1, 96, 64, 5, 3),
    "resnet18": ("resnet18", 3, 224, 32, 3, 1),
    "resnet50": ("resnet50", 3, 224, 32, 3, 1),
}
# profiled only, with no seed-code twin to race: the step of `reslab train` (the fast preset)
PROFILED = CASES | {"fast": (TrainConfig.model, 1, 28, TrainConfig.batch_size)}
# reslab variants: label -> (precision, channels_last); "default" is what `reslab train` uses
VARIANTS = {
    "default": ("auto", True),
    "fp32 channels_last": ("fp32", True),
    "bf16 NCHW": ("bf16", False),
    "fp32 NCHW": ("fp32", False),
}


def batch(channels: int, side: int, size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, channels, side, side, generator=generator),
            torch.randint(0, 10, (size,), generator=generator))


def reference_step(model: str, channels: int, x, y):
    """The seed's training step (``reference_d2l``) on this batch."""
    torch.manual_seed(0)
    net = reference_d2l.net(model, channels)
    optimizer, loss = reference_d2l.trainer(net)
    return lambda: reference_d2l.train_step(net, optimizer, loss, x, y)


def reslab_step(model: str, channels: int, x, y, precision: str, channels_last: bool,
                recipe: TrainConfig | None = None):
    """reslab's training step as fit runs it, on this batch: (step function, precision).
    ``recipe``: the config the rest comes from (default: TrainConfig's plain one)."""
    torch.manual_seed(0)
    config = (recipe or TrainConfig()).replace(model=model, batch_size=len(y),
                                               precision=precision, channels_last=channels_last)
    device = torch.device("cpu")
    precision = resolve_precision(precision, device)
    net = create_model(model, num_classes=10, in_channels=channels)
    if config.whiten_stem:  # as in a run: the frozen first convolution takes no step
        freeze_first_conv(net)
    if channels_last:  # as fit does, and as BatchLoader delivers batches
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net.train()
    state = TrainState(net, config, total_steps=10_000, steps_per_epoch=100,
                       precision=precision)
    if config.compile:  # what the step calls, as a run's setup wraps it
        state.net = torch.compile(net)

    def step() -> None:
        train_step(state, x, y)

    return step, precision


def window(step, steps: int, images: int):
    """A timed window: ``steps`` calls of ``step``; returns the images they trained on."""
    def run() -> int:
        for _ in range(steps):
            step()
        return steps * images
    return run


def profile(case: str, steps: int = 3, rows: int = 15) -> str:
    """torch.profiler's table of the top operators (self CPU time) of reslab's default step."""
    model, channels, side, size, *_ = PROFILED[case]
    x, y = batch(channels, side, size)
    recipe = preset("fast") if case == "fast" else None  # its whitened, frozen first conv
    step, precision = reslab_step(model, channels, x, y, *VARIANTS["default"], recipe=recipe)
    step()  # warm-up: oneDNN primitives are created on the first call
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return f"{case} ({model} {channels}x{side}x{side} batch {size}, {precision}), " \
           f"{steps} steps\n{table}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short window per variant")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: "
                        + ", ".join(CASES))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated reslab variants: " + ", ".join(VARIANTS))
    parser.add_argument("--profile", metavar="CASE", default=None, choices=PROFILED,
                        help="instead, print and save the operator profile of one case: "
                        + ", ".join(PROFILED))
    args = parser.parse_args(argv)
    if args.profile:
        table = profile(args.profile)
        path = common.RESULTS / f"profile-{args.profile}.txt"
        atomic_write_text(path, table)
        print(f"{table}\nwrote {path}")
        return {"profile": table}
    measured_peaks = {kind: {dtype: measure(getattr(torch, name))
                             for dtype, name in (("fp32", "float32"), ("bf16", "bfloat16"))}
                      for kind, measure in (("torch.mm", common.matmul_peak),
                                            ("oneDNN 1x1 conv", common.conv_gemm_peak))}
    # MFU is over the faster of the two: what this machine has shown it can do
    peaks = {dtype: max(m[dtype] for m in measured_peaks.values()) for dtype in ("fp32", "bf16")}
    for kind, m in measured_peaks.items():
        print(f"matrix-multiply peak, {kind}: fp32 {m['fp32'] / 1e9:.0f} GFLOP/s, "
              f"bf16 {m['bf16'] / 1e9:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    results = []
    for case in args.cases.split(","):
        model, channels, side, size, windows, steps = CASES[case]
        if args.quick:
            windows, steps = 1, 1
        x, y = batch(channels, side, size)
        flops = common.training_flops_per_image(
            create_model(model, num_classes=10, in_channels=channels), (channels, side, side))
        runs = {"reference": window(reference_step(model, channels, x, y), steps, size)}
        dtypes = {}
        for label in args.variants.split(","):
            step, dtypes[label] = reslab_step(model, channels, x, y, *VARIANTS[label])
            runs[label] = window(step, steps, size)
        measured = common.rates_interleaved(runs, windows)
        reference = common.summary(measured.pop("reference"))
        row = {"case": case, "model": model, "input": [channels, side, side], "batch": size,
               "train_gflop_per_image": flops / 1e9, "reference": reference, "reslab": {}}
        mfu = reference["median"] * flops / peaks["fp32"]
        print(f"{case:<9} reference (eager fp32 NCHW) {reference['median']:8.1f} img/s  "
              f"MFU {mfu:5.1%} of fp32 peak")
        for label, rates in measured.items():
            stats = common.summary(rates)
            dtype = dtypes[label]
            stats |= {"precision": dtype, "speedup": stats["median"] / reference["median"],
                      "mfu": stats["median"] * flops / peaks[dtype]}
            row["reslab"][label] = stats
            print(f"{'':<9} reslab {label:<20} {stats['median']:8.1f} img/s  "
                  f"{stats['speedup']:4.2f}x  MFU {stats['mfu']:5.1%} of {dtype} peak")
        results.append(row)
    path = common.write("training", {"peak_flops": peaks, "measured_peaks": measured_peaks,
                                     "quick": args.quick,
                                     "results": results})
    print(f"wrote {path}")
    return {"results": results}


if __name__ == "__main__":
    main()
