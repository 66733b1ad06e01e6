"""Nested function classes: a net deepened by identity-initialised residual units computes the
same function, so training it further need not make it worse (seeds 000 and 002).

``reslab.models.grow(model, stage, blocks)`` does the deepening; ``reslab grow``
(``reslab.deploy.grow_checkpoint``) does it to a checkpoint.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.data import BatchLoader, Dataset
from reslab.errors import ConfigError
from reslab.experiments.common import (
    TrainingSettings,
    cifar_spec,
    net_name,
    paper_recipe,
    prepare_data,
    prepare_out,
    resolve_settings,
    train_net,
)
from reslab.experiments.report import (
    count,
    markdown_table,
    new_figure,
    noise,
    percent,
    save_figure,
    write_report,
)
from reslab.models import ResNet, build, grow
from reslab.training.evaluate import evaluate

log = logging.getLogger(__name__)
TITLE = "Nested function classes: deepening a trained network by identity units"


@dataclass
class NestedSettings(TrainingSettings):
    depth: int = 14  # the shallow net, CIFAR-style 6n + 2
    width: int = 16
    epochs: int = 15  # training the shallow net
    stage: int = 3  # where the new units go (1-based)
    blocks: int = 2
    continue_epochs: int = 10  # training every net after the growth
    continue_lr: float = 0.01  # a trained net goes on from a lower rate

    def check(self) -> None:
        if not 1 <= self.stage <= 3:  # the CIFAR-style nets grown here have three stages
            raise ConfigError(f"setting stage must be 1, 2 or 3 (the network's stages), got "
                              f"{self.stage}")


QUICK = dict(epochs=3, continue_epochs=2, batch_size=64, train_size=2560, val_size=1000,
             test_size=2000)


@torch.no_grad()
def _outputs(model: nn.Module, loader: BatchLoader) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x).float().cpu() for x, _ in loader])
    finally:
        model.train(was_training)


def run(out_dir: str | Path, quick: bool = False, data: Dataset | None = None,
        **settings: Any) -> dict[str, Any]:
    s = resolve_settings(NestedSettings, quick, QUICK, settings)
    started = time.perf_counter()
    out = prepare_out(out_dir, "nested", s)
    data = prepare_data(s, data)
    base_name = net_name(s.depth, plain=False)
    torch.manual_seed(s.seed)
    base = train_net(build(cifar_spec(s.depth, data, width=s.width)), data,
                     paper_recipe(s, data), out / "runs" / "base", base_name)
    trained = base.model
    nets = {
        "shallow": (f"{base_name} (no growth)", copy.deepcopy(trained)),
        "grown": (f"{base_name} + {s.blocks} residual units", grow(trained, s.stage, s.blocks)),
        "grown_random": (f"{base_name} + {s.blocks} residual units, random init",
                         grow(trained, s.stage, s.blocks, identity=False)),
        "grown_plain": (f"{base_name} + {s.blocks} plain units",
                        grow(trained, s.stage, s.blocks, shortcut=False)),
    }
    config = paper_recipe(s, data, epochs=s.continue_epochs, lr=s.continue_lr)
    device = next(trained.parameters()).device
    loaders = {split: BatchLoader(data.split(split), 256, train=False, mean=data.mean,
                                  std=data.std, device=device,
                                  channels_last=config.channels_last)
               for split in ("val", "test")}
    reference = _outputs(trained, loaders["test"])
    rows, curves = [], {"base": [r["val_acc"] for r in base.history]}
    for key, (label, model) in nets.items():
        outputs = _outputs(model, loaders["test"])
        step0 = {split: evaluate(model, loader, len(data.classes), device=device).accuracy
                 for split, loader in loaders.items()}
        result = train_net(model, data, config, out / "runs" / key.replace("_", "-"), label)
        curves[key] = [step0["val"], *(r["val_acc"] for r in result.history)]
        rows.append({
            "key": key, "net": label, "layers": _depth(model),
            "params": sum(p.numel() for p in model.parameters()),
            "identical_at_step0": torch.equal(outputs, reference),
            "max_abs_diff_at_step0": float((outputs - reference).abs().max()),
            "test_acc_at_step0": step0["test"], "test_acc_after": result.test["accuracy"],
        })
    _plot(curves, rows, s, out / "accuracy.png", data.name)
    table = markdown_table(
        ["network", "layers", "params", "max abs output change at step 0",
         "test acc % at step 0", f"test acc % after {count(s.continue_epochs, 'epoch')}"],
        [[r["net"], r["layers"], f"{r['params']:,}",
          "0 (identical)" if r["identical_at_step0"] else f"{r['max_abs_diff_at_step0']:.3g}",
          percent(r["test_acc_at_step0"]), percent(r["test_acc_after"])] for r in rows])
    description = (
        f"{base_name} is trained on {data.name} ({len(data.train):,} images, "
        f"{count(s.epochs, 'epoch')}, the paper's recipe), then deepened by {s.blocks} units "
        f"at the end of stage {s.stage}: residual units whose last BN is zero-initialised "
        "(each computes x -> x), the same residual units left as build initialises them "
        "(AutoGrow's random-init growth), or the same units without the shortcut, freshly "
        "initialised. The four networks (the shallow one too, for a fair budget) then train "
        f"{count(s.continue_epochs, 'more epoch')} from lr {s.continue_lr}. \"Output change\" "
        f"is the largest absolute difference of the logits from the trained {base_name}'s, "
        "over the test set, in eval mode."
    )
    return write_report(
        out, name="nested", title=TITLE, description=description, table=table,
        findings=findings(rows, base_name, s.continue_epochs, len(data.test)),
        figures={"accuracy.png": "Validation accuracy while training the shallow net, then "
                                 "after growing it (epoch 0 = the step-0 networks)"},
        results={"data": data.name, "test_images": len(data.test), "rows": rows,
                 "curves": curves}, settings=s, quick=quick,
        seconds=time.perf_counter() - started)


def _depth(model: ResNet) -> int:
    """Weighted layers on the main path, as the papers count them (shortcut convs are not)."""
    return sum(isinstance(m, nn.Conv2d | nn.Linear) for name, m in model.named_modules()
               if "downsample" not in name)


def findings(rows: list[dict[str, Any]], base_name: str, epochs: int, images: int
             ) -> list[str]:
    """Three sentences from the numbers; ``images``: the test images accuracies are over."""
    by = {r["key"]: r for r in rows}
    shallow, grown, plain = by["shallow"], by["grown"], by["grown_plain"]
    random_init = by.get("grown_random")
    before = shallow["test_acc_at_step0"]
    if grown["identical_at_step0"]:
        same = (f"left its outputs bit-for-bit unchanged (test accuracy {percent(before)}% "
                f"before and {percent(grown['test_acc_at_step0'])}% after)")
    else:
        same = (f"changed its outputs by at most {grown['max_abs_diff_at_step0']:.3g} (test "
                f"accuracy {percent(before)}% before, {percent(grown['test_acc_at_step0'])}% "
                "after)")
    a, b = shallow["test_acc_after"], grown["test_acc_after"]
    margin = noise(a, images)
    if abs(b - a) <= margin:
        verdict = (f"level within the sampling noise of {images:,} test images "
                   f"(± {percent(margin)} points), so no worse, as nested function classes "
                   "promise")
    elif b > a:
        verdict = "better, as nested function classes allow"
    else:
        verdict = ("worse beyond sampling noise: the larger function class did not pay off "
                   "within this budget")
    c = plain["test_acc_after"]
    versus = ("level with" if abs(c - b) <= noise(b, images) else
              "below" if c < b else "above")
    plain_change = (f"changed the function (outputs moved by up to "
                    f"{plain['max_abs_diff_at_step0']:.3g}) and took test accuracy from "
                    f"{percent(before)}% to {percent(plain['test_acc_at_step0'])}%")
    sentences = [
        f"Growing {base_name} by zero-initialised residual units {same}.",
        f"After {count(epochs, 'more epoch')} the grown network reached {percent(b)}% test "
        f"accuracy against {percent(a)}% for the shallow one trained as long: {verdict}.",
        f"Inserting the same units without shortcuts {plain_change}; after "
        f"{count(epochs, 'epoch')} it reached {percent(plain['test_acc_after'])}% "
        f"({versus} the residual growth's {percent(b)}%).",
    ]
    if random_init is not None:  # AutoGrow: random-init growth beats function-preserving
        r = random_init["test_acc_after"]
        compared = ("level with" if abs(r - b) <= noise(b, images) else
                    "below" if r < b else "above")
        sentences.append(
            f"The same residual units left randomly initialised changed the function (outputs "
            f"moved by up to {random_init['max_abs_diff_at_step0']:.3g}, test accuracy "
            f"{percent(random_init['test_acc_at_step0'])}% at step 0) and reached {percent(r)}%: "
            f"{compared} the function-preserving growth's {percent(b)}% in this run.")
    return sentences


def _plot(curves: dict[str, list[float]], rows: list[dict], s: NestedSettings, path: Path,
          data_name: str) -> None:
    figure, ax = new_figure(size=(7, 4))
    base = curves["base"]
    ax.plot(range(1, len(base) + 1), [100 * v for v in base], "k-", linewidth=2,
            label="shallow net, before growing")
    for style, colour, row in zip(("--", "-", "-.", "-"), ("C0", "C2", "C1", "C3"), rows,
                                  strict=True):
        values = curves[row["key"]]
        ax.plot(range(len(base), len(base) + len(values)), [100 * v for v in values], style,
                marker="o", color=colour, markersize=3, label=row["net"])
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.axvline(len(base), color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch (growth after the dotted line)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"Growing a trained network on {data_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(figure, path)
