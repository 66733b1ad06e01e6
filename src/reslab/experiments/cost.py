"""ResNet vs ResNeXt vs wide ResNet: parameters, MACs and measured speed of the ImageNet
models, and accuracy per MAC of small versions (seed 000: grouped convolutions buy width).

The small nets are planned runs; the ImageNet models' timing is the ``measure`` step."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from reslab.data import Dataset
from reslab.experiments.common import paper_recipe, seeded, throughput
from reslab.experiments.protocol import (
    Analysis,
    Experiment,
    PlannedRun,
    RunResult,
    TrainingSettings,
    setting,
)
from reslab.experiments.report import (
    count,
    legend_outside,
    literal,
    markdown_table,
    new_figure,
    noise,
    percent,
)
from reslab.models import ResNetSpec, create_model, get_spec, list_models
from reslab.models.summary import format_count, summary
from reslab.runtime.device import resolve_device

log = logging.getLogger(__name__)
# Small bottleneck nets for Fashion-MNIST, the ImageNet trio in miniature: the 3x3 convs of
# the ResNeXt and the wide net are twice as wide (inner 2w); ResNeXt splits them in 8 groups.
SMALL = {
    "resnet": ("1 group, inner width w", dict()),
    "resnext": ("8 groups, inner width 2w", dict(groups=8, width_per_group=16)),
    "wide": ("1 group, inner width 2w", dict(width_per_group=128)),
}


@dataclass
class CostSettings(TrainingSettings):
    models: tuple[str, ...] = setting(("resnet50", "resnext50_32x4d", "wide_resnet50_2"),
                                      "zoo models to time (the first is the reference)")
    image_size: int = setting(224, "side of the timed models' input")
    inference_batch: int = setting(8, "images per timed forward pass")
    warmup: int = setting(2, "untimed forward passes first", low=0)
    iterations: int = setting(10, "timed forward passes")
    width: int = setting(16, "first-stage width w of the small nets (outputs 4w, 8w, 16w)")
    epochs: int = setting(5, "epochs of each small net")  # 27-67 min on 2 cores
    seed: int = setting(0, "of the small nets' weights and data order", low=0)


def images_per_second(model: torch.nn.Module, batch: int, shape: tuple[int, int, int],
                      warmup: int, iterations: int, device: torch.device) -> float:
    """Inference speed: ``iterations`` timed forward passes of a random (C, H, W) batch."""
    model = model.to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync(device)
        started = time.perf_counter()
        for _ in range(iterations):
            model(x)
        _sync(device)
    return batch * iterations / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def small_spec(kind: str, data: Dataset, width: int) -> ResNetSpec:
    channels, side, _ = data.image_shape
    return ResNetSpec(block="bottleneck", stem="cifar", stem_width=width, depths=(2, 2, 2),
                      widths=(width, 2 * width, 4 * width), in_channels=channels,
                      num_classes=len(data.classes), input_size=side, **SMALL[kind][1])


class Cost(Experiment):
    name = "cost"
    title = "Cost: ResNet vs ResNeXt vs wide ResNet"
    settings = CostSettings
    modes = {"quick": dict(warmup=1, iterations=2, epochs=3, batch_size=64, train_size=2048,
                           val_size=500, test_size=1000)}

    def plan(self, s: CostSettings, data: Dataset) -> list[PlannedRun]:
        for name in s.models:  # an unknown model is refused here, before any training
            if name not in list_models():
                get_spec(name)  # raises, naming the closest
        config = paper_recipe(s, data, seed=s.seed)
        return [PlannedRun(kind, kind, seeded(small_spec(kind, data, s.width), s.seed), config,
                           info=dict(net=kind, description=description))
                for kind, (description, _) in SMALL.items()]

    def measure(self, s: CostSettings, data: Dataset, runs: dict[str, RunResult]
                ) -> dict[str, Any]:
        device = resolve_device("auto")
        models = []
        for name in s.models:
            log.info("timing %s at %dx%d, batch %d", name, s.image_size, s.image_size,
                     s.inference_batch)
            info = summary(name, s.image_size)
            speed = images_per_second(create_model(name), s.inference_batch, info.input_shape,
                                      s.warmup, s.iterations, device)
            models.append({"model": name, "params": info.params, "macs": info.macs,
                           "images_per_s": speed})
        return {"device": device.type, "models": models}

    def analyse(self, s: CostSettings, data: Dataset, runs: dict[str, RunResult],
                measured: dict[str, Any]) -> Analysis:
        models, small = measured["models"], []
        for kind, result in runs.items():
            model = result.fit.model
            small.append({**result.info, "groups": small_spec(kind, data, s.width).groups,
                          "params": sum(p.numel() for p in model.parameters()),
                          "macs": summary(model, data.image_shape).macs,
                          "train_images_per_s": throughput(result.fit),
                          "test_error": result.test_error})
        first, base = models[0], small[0]
        table_models = markdown_table(
            ["model", "params", "MACs", "params vs first", "MACs vs first", "img/s", "GMAC/s"],
            [[m["model"], f"{m['params']:,}", format_count(m["macs"]),
              f"{m['params'] / first['params']:.2f}x", f"{m['macs'] / first['macs']:.2f}x",
              f"{m['images_per_s']:.1f}", f"{m['images_per_s'] * m['macs'] / 1e9:.1f}"]
             for m in models])
        table_small = markdown_table(
            ["small net", "3x3 convs", "params", "MACs", "MACs vs resnet", "train img/s",
             "test error %"],
            [[r["net"], r["description"], f"{r['params']:,}", format_count(r["macs"]),
              f"{r['macs'] / base['macs']:.2f}x", f"{r['train_images_per_s']:.0f}",
              percent(r["test_error"])] for r in small])
        table = (f"**ImageNet-size models at {s.image_size}x{s.image_size}** (inference, batch "
                 f"{s.inference_batch}, {count(s.iterations, 'timed iteration')}, "
                 f"{measured['device']})\n\n{table_models}\n\n*MACs: multiply-accumulates "
                 "per image (K, M, G: thousands, millions, billions). img/s: images per second "
                 "of inference on this machine, random inputs; GMAC/s: img/s x MACs, the "
                 "arithmetic rate reached. \"vs first\": as a multiple of the first model's.*"
                 f"\n\n**Small bottleneck nets on {data.name}** "
                 f"({count(s.epochs, 'epoch')}, the paper's CIFAR recipe)\n\n{table_small}"
                 "\n\n*MACs: per image. Train img/s: training images per second on this "
                 "machine. Test error: % of "
                 f"{len(data.test):,} test images wrong, with the weights of the epoch of best "
                 f"validation accuracy; one run each (seed {s.seed}), so no spread.*")
        description = (
            "Parameters and MACs (multiply-accumulates of conv and linear layers, "
            "torchvision's \"GFLOPS\") come from `reslab.summary`; speed is measured "
            "here. The small nets are CIFAR-style bottleneck nets (3 stages of 2 units, widths "
            f"{s.width}/{2 * s.width}/{4 * s.width}, outputs x4) with the same layout as the "
            "ImageNet trio."
        )
        return Analysis(
            description=description, table=table,
            findings=findings(models, small, len(data.test)),
            figures={"cost.png": (_plot(models, small, s, literal(data.name)),
                                  "Left: MACs and measured speed of the ImageNet-size models. "
                                  "Right: test error against MACs of the small nets")},
            shows=[f"Parameters and MACs of {', '.join(s.models)} (counted, exact) and their "
                   f"inference speed on this machine ({measured['device']}), so whether equal "
                   "MACs mean equal time here.",
                   f"Test error of three small bottleneck nets after {count(s.epochs, 'epoch')} "
                   f"on {len(data.train):,} {data.name} images, against their MACs."],
            does_not_show=[
                "Speed on another machine, batch size or backend (a GPU runs grouped "
                "convolutions at another relative cost), or training speed of the large models.",
                "The accuracy of the ImageNet models: only their cost is measured here.",
                "Whether groups buy accuracy in general: one seed of each small net, and a "
                "difference below the test set's sampling noise (in the findings) ranks nothing."],
            results={"device": measured["device"], "models": models, "small": small})


def findings(models: list[dict[str, Any]], small: list[dict[str, Any]], images: int
             ) -> list[str]:
    """Two or three sentences; ``images``: the test images the small nets' errors are over."""
    first = models[0]
    compared = "; ".join(
        f"{m['model']} has {m['params'] / first['params']:.2f}x its parameters and "
        f"{m['macs'] / first['macs']:.2f}x its MACs, and runs at "
        f"{m['images_per_s'] / first['images_per_s']:.2f}x its speed" for m in models[1:])
    sentences = [f"Against {first['model']}: {compared}."] if compared else []
    rate = {m["model"]: m["images_per_s"] * m["macs"] for m in models}
    slowest = min(rate, key=rate.get)
    if "resnext" in slowest:
        sentences.append(f"{slowest} does the fewest MACs per second: grouped convolutions "
                         "buy width at a matched MAC count, not at matched time, on this "
                         "machine.")
    by = {r["net"]: r for r in small}
    resnet, resnext, wide = by["resnet"], by["resnext"], by["wide"]
    gain = resnet["test_error"] - resnext["test_error"]
    margin = noise(resnet["test_error"], images)
    if abs(gain) <= margin:
        verdict = (f"the 1- and 8-group nets differ by less than the sampling noise of "
                   f"{images:,} test images (± {percent(margin)} points), so this run cannot "
                   "rank them")
    elif gain > 0:
        verdict = "the groups bought accuracy at close to the same compute"
    else:
        verdict = "the groups did not pay off at this scale"
    sentences.append(
        f"On the small scale the 8-group net reached {percent(resnext['test_error'])}% test "
        f"error at {resnext['macs'] / resnet['macs']:.2f}x the 1-group net's MACs "
        f"({percent(resnet['test_error'])}%), and the wide one {percent(wide['test_error'])}% "
        f"at {wide['macs'] / resnet['macs']:.2f}x: {verdict}.")
    return sentences


def _plot(models: list[dict], small: list[dict], s: CostSettings, data_name: str):
    figure, (left, right) = new_figure(2, size=(11, 4.2))
    for i, m in enumerate(models):
        left.scatter(m["macs"] / 1e9, m["images_per_s"], s=30 + m["params"] / 1e6, color=f"C{i}",
                     label=f"{m['model']} ({m['params'] / 1e6:.1f} M params)")
    left.set_xlabel(f"GMACs per image at {s.image_size}x{s.image_size}")
    left.set_ylabel(f"images/s (inference, batch {s.inference_batch}, this machine)")
    left.set_title("ImageNet-size models: compute vs measured speed")
    for i, r in enumerate(small):
        right.scatter(r["macs"] / 1e6, 100 * r["test_error"], s=60, color=f"C{i}", marker="s",
                      label=f"small {r['net']}: {r['description']}")
    right.set_xlabel("MMACs per image")
    right.set_ylabel("test error (%, test images)")
    right.set_title(f"small bottleneck nets on {data_name}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    legend_outside(figure, columns=2)  # filled by column: the left panel's, then the right's
    return figure


EXPERIMENT = Cost()
