"""The degradation experiment's cost model: which plain-vs-residual settings fit a budget.

    python -m benchmarks.degradation_cost [--measure] [--hours 2] [--seeds 2]

Fig. 6 of He et al. needs nets whose capacity, not the data, bounds their training error:
all 55,000 training images, depths 20 and 56 (110 where it fits), each plain and residual,
over >= 2 seeds. Per candidate (first-stage width w, input side) it gives the training FLOPs
of one image (3 x FlopCounterMode's forward), and with ``--measure`` the images/s of
reslab's training step (batch 128, one batch in memory, the precision ``auto`` picks here),
hence the seconds of one epoch of 55,000 images per net and how many epochs of the whole plan
(seeds x plain/residual x depths) the budget buys. Measure with the CPU to itself.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from reslab.experiments.common import cifar_spec
from reslab.io import atomic_write_text
from reslab.models import build
from reslab.runtime.device import resolve_precision
from reslab.training import TrainConfig, TrainState, train_step

IMAGES = 55_000  # Fashion-MNIST's training images less the 5,000 held out for validation
WIDTHS = (4, 8, 16)
SIDES = (14, 28)
DEPTHS = (20, 56, 110)


def spec(depth: int, width: int, side: int, plain: bool):
    """The degradation experiment's own net, for Fashion-MNIST's images at ``side``."""
    shape = SimpleNamespace(image_shape=(1, side, side), classes=range(10))
    return cifar_spec(depth, shape, plain=plain, width=width)


def train_flops(depth: int, width: int, side: int) -> float:
    """FLOPs of training on one image: forward x 3 (the backward costs about twice)."""
    model = build(spec(depth, width, side, plain=False)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, side, side))
    return 3.0 * counter.get_total_flops()


def images_per_second(depth: int, width: int, side: int, batch: int = 128,
                      seconds: float = 3.0) -> float:
    """reslab's training step on one batch in memory, as the experiment's runs take it."""
    torch.manual_seed(0)
    config = TrainConfig(model="resnet20", batch_size=batch, lr=0.1, optimizer="sgd",
                         schedule="multistep", milestones=(), whiten_stem=False)
    net = build(spec(depth, width, side, plain=False)).to(memory_format=torch.channels_last)
    net.train()
    precision = resolve_precision("auto", torch.device("cpu"))
    state = TrainState(net, config, total_steps=10_000, steps_per_epoch=100,
                       precision=precision)
    x = torch.randn(batch, 1, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    train_step(state, x, y)  # oneDNN builds its primitives on the first call
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        train_step(state, x, y)
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="time each candidate's step")
    parser.add_argument("--hours", type=float, default=2.0, help="the plan's budget")
    parser.add_argument("--seeds", type=int, default=2, help="runs of each net")
    parser.add_argument("--depths", default="20,56", help="the plan's depths")
    args = parser.parse_args(argv)
    depths = tuple(int(d) for d in args.depths.split(","))
    nets = args.seeds * 2 * len(depths)  # seeds x (plain, residual) x depths
    lines = [f"plan: {args.seeds} seeds x plain/residual x depths {depths} = {nets} runs on "
             f"{IMAGES:,} images, budget {args.hours:g} h", ""]
    head = "| width | side | depth | MFLOP per trained image | TFLOP per epoch |"
    if args.measure:
        m = common.machine()
        lines.insert(0, f"machine: {m}")
        head += " images/s | s per epoch |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    plan_seconds: dict[tuple[int, int], float] = {}
    for width in WIDTHS:
        for side in SIDES:
            for depth in DEPTHS:
                flops = train_flops(depth, width, side)
                row = f"| {width} | {side} | {depth} | {flops / 1e6:.1f} | " \
                      f"{flops * IMAGES / 1e12:.2f} |"
                if args.measure:
                    rate = images_per_second(depth, width, side)
                    row += f" {rate:,.0f} | {IMAGES / rate:,.0f} |"
                    if depth in depths:  # plain nets cost the same as residual ones
                        key = (width, side)
                        plan_seconds[key] = plan_seconds.get(key, 0) + \
                            args.seeds * 2 * IMAGES / rate
                lines.append(row)
    if plan_seconds:
        lines += ["", "| width | side | s per epoch of the plan | epochs in budget |",
                  "|---|---|---|---|"]
        for (width, side), seconds in plan_seconds.items():
            lines.append(f"| {width} | {side} | {seconds:,.0f} | "
                         f"{args.hours * 3600 / seconds:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.measure:
        atomic_write_text(common.RESULTS / "degradation_cost.md", text + "\n")
    return text


if __name__ == "__main__":
    main()
