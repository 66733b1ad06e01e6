"""Nested function classes, and growth four ways: a trained net deepened by residual units
whose last BN is zero-initialised computes the same function (seeds 000 and 002), so
training it further need not make it worse. Beside it, the same units randomly initialised
(AutoGrow's growth, Wen et al. 2020, which argues it trains better), plain units, the shallow
net trained on, and the deep net trained from scratch for the same total budget; over
several seeds, with accuracy and training loss at step 0, after one epoch and at the end.

``reslab.models.grow(model, stage, blocks)`` does the deepening; ``reslab grow``
(``reslab.grow.grow_checkpoint``) does it to a checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reslab.data import BatchLoader, Dataset
from reslab.experiments.common import cifar_spec, net_name, paper_recipe, seeded
from reslab.experiments.protocol import (
    Analysis,
    Experiment,
    PlannedRun,
    Probe,
    RunResult,
    TrainingSettings,
    setting,
)
from reslab.experiments.report import (
    count,
    legend_outside,
    literal,
    markdown_table,
    mean_std,
    new_figure,
    noise,
    percent,
    percent_pm,
    spread,
)
from reslab.models import ResNet, grow
from reslab.runtime.evaluate import evaluate

# arm -> (what it is, shown after the shallow net's name)
ARMS = {
    "shallow": "(no growth)",
    "grown": "+ {blocks} residual units, zero-init last BN",
    "grown_random": "+ {blocks} residual units, random init",
    "grown_plain": "+ {blocks} plain units",
    "scratch": "+ {blocks} residual units' depth, trained from scratch",
}
PROBE_IMAGES = 5000  # training images the step-0/epoch-1/end training loss is measured on


@dataclass
class NestedSettings(TrainingSettings):
    depth: int = setting(14, "the shallow net, CIFAR-style 6n + 2", low=8)
    width: int = setting(16, "channels of the first stage")
    epochs: int = setting(15, "epochs training the shallow net")
    stage: int = setting(3, "where the new units go (the nets have 3 stages)", high=3)
    blocks: int = setting(2, "units added", high=64)
    continue_epochs: int = setting(10, "epochs every grown (and the shallow) net trains on")
    continue_lr: float = setting(0.01, "peak learning rate after growing: a trained net goes "
                                 "on from a lower rate")
    seeds: tuple[int, ...] = setting((0, 1, 2), "a shallow net and its growths per seed",
                                     low=0)
    arms: tuple[str, ...] = setting(tuple(ARMS), "which arms to train", choices=tuple(ARMS))

    def rules(self) -> list[str]:
        if "grown" not in self.arms:  # every comparison is against it
            return ["arms must include grown (the function-preserving growth), got "
                    f"{', '.join(self.arms)}"]
        return []


class GrowthProbe(Probe):
    """Test and validation accuracy and training loss (eval mode, the first
    ``PROBE_IMAGES`` training images, not augmented) at step 0, after epoch 1 and at the last
    epoch; at step 0 also how far the outputs moved from the shallow net's (``reference``,
    set by the arm's model builder)."""

    def __init__(self, data: Dataset, epochs: int):
        self.data, self.epochs = data, epochs
        self.reference: nn.Module | None = None

    def start(self, model: nn.Module, config) -> dict[str, Any]:
        row = {"epoch": 0, **self._measure(model)}
        if self.reference is not None:
            device = next(model.parameters()).device
            now, before = _outputs(model, self._loader("test", device)), \
                _outputs(self.reference, self._loader("test", device))
            row |= {"identical": torch.equal(now, before),
                    "max_abs_diff": float((now - before).abs().max())}
        return row

    def on_epoch_end(self, row: dict[str, Any], model: nn.Module) -> dict[str, Any] | None:
        if row["epoch"] in (1, self.epochs):
            return {"epoch": row["epoch"], **self._measure(model)}
        return None

    def _measure(self, model: nn.Module) -> dict[str, float]:
        device, classes = next(model.parameters()).device, len(self.data.classes)
        test, val, train = (evaluate(model, self._loader(split, device), classes, device=device)
                            for split in ("test", "val", "train"))
        return {"test_acc": test.accuracy, "val_acc": val.accuracy, "train_loss": train.loss}

    def _loader(self, split: str, device) -> BatchLoader:
        images = self.data.split(split)
        if split == "train" and len(images) > PROBE_IMAGES:
            images = images.subset(torch.arange(PROBE_IMAGES))
        return BatchLoader(images, 256, train=False, mean=self.data.mean, std=self.data.std,
                           device=device, channels_last=False)


@torch.no_grad()
def _outputs(model: nn.Module, loader: BatchLoader) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x).float().cpu() for x, _ in loader])
    finally:
        model.train(was_training)


class Nested(Experiment):
    name = "nested"
    title = "Nested function classes: growing a trained network, four ways and from scratch"
    settings = NestedSettings
    # 3 seeds x (the shallow net + 5 arms) on a subset: about half an hour of 2 fp32 cores
    modes = {"full": dict(train_size=3000, val_size=1000),
             "quick": dict(epochs=2, continue_epochs=2, batch_size=64, train_size=1536,
                           val_size=500, test_size=1000, seeds=(0, 1))}

    def plan(self, s: NestedSettings, data: Dataset) -> list[PlannedRun]:
        shallow = cifar_spec(s.depth, data, width=s.width)
        depths = list(shallow.depths)
        depths[s.stage - 1] += s.blocks
        deep = shallow.replace(depths=tuple(depths))  # the grown nets' (and scratch's) spec
        base_name = net_name(s.depth, plain=False)
        runs = []
        for seed in s.seeds:
            base = f"base-seed{seed}"
            runs.append(PlannedRun(base, base_name, seeded(shallow, seed),
                                   paper_recipe(s, data, seed=seed),
                                   info=dict(arm="base", seed=seed)))
            for arm in s.arms:
                label = f"{base_name} {ARMS[arm].format(blocks=s.blocks)}"
                if arm == "scratch":  # the same total budget, from the start, at the full rate
                    epochs = s.epochs + s.continue_epochs
                    model, config = seeded(deep, seed), paper_recipe(s, data, seed=seed,
                                                                     epochs=epochs)
                    probe = GrowthProbe(data, epochs)
                else:
                    probe = GrowthProbe(data, s.continue_epochs)
                    model = _grown(arm, base, s, seed, probe)
                    config = paper_recipe(s, data, seed=seed, epochs=s.continue_epochs,
                                          lr=s.continue_lr)
                runs.append(PlannedRun(f"{arm.replace('_', '-')}-seed{seed}", label, model,
                                       config, probe=probe, info=dict(arm=arm, seed=seed)))
        return runs

    def analyse(self, s: NestedSettings, data: Dataset, runs: dict[str, RunResult],
                measured: dict[str, Any]) -> Analysis:
        base_name = net_name(s.depth, plain=False)
        rows = [_row(arm, [r for r in runs.values() if r.info["arm"] == arm], s)
                for arm in s.arms]
        bases = [r for r in runs.values() if r.info["arm"] == "base"]
        curves = {"base": [[h["val_acc"] for h in r.fit.history] for r in bases]} | {
            row["arm"]: row["val_curves"] for row in rows}

        def change(r: dict[str, Any]) -> str:
            if r["arm"] == "scratch":
                return "- (new weights)"
            return "0 (identical)" if all(r["identical"]) else f"{max(r['max_abs_diff']):.3g}"

        points = ("step 0", "epoch 1", "end")
        probed = min(PROBE_IMAGES, len(data.train))
        table = markdown_table(
            ["network", "layers", "params", "max abs output change at step 0",
             *(f"test acc % {p}" for p in points), *(f"train loss {p}" for p in points)],
            [[r["net"], r["layers"], f"{r['params']:,}", change(r),
              *(percent_pm(r["test_acc"][p]) for p in points),
              *(_pm(r["train_loss"][p]) for p in points)] for r in rows]) + "\n\n" + (
            f"*Mean ± standard deviation over {count(len(s.seeds), 'seed')}. Test acc: % of "
            f"the {len(data.test):,} test images classified right, in eval mode. Train loss: "
            "cross-entropy in nats per image, raw (the recipe uses no label smoothing), of "
            f"the first {probed:,} training images, not augmented, in eval mode (batch norm "
            "using its running statistics), so it is not the loss the optimiser saw. Step 0: "
            "right after growing (for the from-scratch net: its random initial weights); "
            "epoch 1 and end: after the first and the last epoch of that network's own "
            "training. " + _EVAL_MODE_LOSS + "*")
        description = (
            f"{base_name} is trained on {data.name} ({len(data.train):,} images, "
            f"{count(s.epochs, 'epoch')}, the paper's recipe), then deepened by "
            f"{count(s.blocks, 'unit')} at the end of stage {s.stage}: residual units whose "
            "last BN is zero-initialised (each computes x -> x: the function is preserved), the "
            "same residual units as build initialises them (AutoGrow's random-init growth), "
            "or the same units without the shortcut. These and the shallow net itself (for a "
            f"fair budget) train {count(s.continue_epochs, 'more epoch')} from lr "
            f"{s.continue_lr}; the deep net is also trained from scratch for the same total, "
            f"{count(s.epochs + s.continue_epochs, 'epoch')} at lr {s.lr}. All of it once per "
            f"seed ({', '.join(map(str, s.seeds))}), mean ± std over the seeds. Test accuracy "
            "and training loss (cross-entropy in eval mode on the first "
            f"{min(PROBE_IMAGES, len(data.train)):,} training images, not augmented) are "
            "measured right after growth (step 0), after the first epoch and at the end. "
            "\"Output change\" is the largest absolute difference of the logits from the "
            f"trained {base_name}'s over the test set, in eval mode."
        )
        return Analysis(
            description=description, table=table,
            findings=findings(rows, base_name, s.continue_epochs, len(data.test)),
            figures={"accuracy.png": (
                _plot(curves, rows, s.epochs, literal(data.name), len(data.val)),
                f"Validation accuracy ({len(data.val):,} held-out training images; the table "
                "gives test accuracy) after each epoch, mean over seeds: the shallow net "
                "training, then each arm after growing it (the dotted line; its points there are "
                "the step-0 networks), and the deep net from scratch. Left the whole run, "
                "right the epochs after growth on a narrower scale. The shallow net trained "
                "on (hollow squares) and its zero-init growth (dots) compute the same function "
                "at first, so their points coincide: each dot inside a square is both")},
            shows=_shows(rows, s, len(data.train)),
            does_not_show=_does_not_show(s, len(data.train)),
            results={"rows": rows, "curves": curves})


# Measured (quick mode, seed 0, the from-scratch net after epoch 1): eval-mode loss 13.98 at
# 19.8% accuracy; the same weights normalised by each batch's statistics 1.61, and in eval
# mode again after re-estimating BN's running statistics on those images 1.61 at 41.8%.
_EVAL_MODE_LOSS = (
    "A training loss far above ln 10 = 2.30 (a uniform guess) after epoch 1 of the net trained "
    "from scratch is not a summed or smoothed loss but the eval-mode measurement: an epoch at "
    "lr 0.1 from random weights moves the weights faster than batch norm's running statistics "
    "follow, so in eval mode the activations are normalised with stale statistics and the "
    "logits grow large and confidently wrong. Measured once (quick mode, seed 0): 13.98 in "
    "eval mode, 1.61 for the same weights normalised by each batch's own statistics as in "
    "training, and 1.61 in eval mode once the running statistics are re-estimated on those "
    "images. The grown nets start trained and go on at a tenth of the rate, so theirs keep up.")


def _shows(rows: list[dict[str, Any]], s: NestedSettings, images: int) -> list[str]:
    grown = next(r for r in rows if r["arm"] == "grown")
    exact = ("leave the trained net's outputs bit-for-bit unchanged" if all(grown["identical"])
             else f"change the trained net's outputs by up to {max(grown['max_abs_diff']):.3g}")
    return [f"That zero-initialised residual units {exact} at step 0, in "
            f"{count(len(grown['seeds']), 'seed')}: an exact check, as true of a small run as "
            "of a large one, beside how far random-init and plain units move them.",
            f"How the arms compare after {count(s.continue_epochs, 'more epoch')} on "
            f"{images:,} images at lr {s.continue_lr}, each difference weighed against the "
            "seeds' spread and the test set's sampling noise in the findings."]


def _does_not_show(s: NestedSettings, images: int) -> list[str]:
    return [f"Whether growing pays off on more data or longer training: {images:,} training "
            f"images, {count(s.epochs, 'epoch')} before growing and "
            f"{count(s.continue_epochs, 'epoch')} after, {count(len(s.seeds), 'seed')}.",
            "Why the deep net trained from scratch ends where it does against the grown one: "
            f"it trains {count(s.epochs + s.continue_epochs, 'epoch')} at lr {s.lr}, the grown "
            f"ones {count(s.continue_epochs, 'epoch')} at lr {s.continue_lr} after a shallow "
            "start, so schedule and initialisation differ at once.",
            "AutoGrow's claim in its own setting: it grows many times during training on "
            f"CIFAR; here one growth step of {count(s.blocks, 'unit')} on Fashion-MNIST.",
            "A difference within the noise stated in the findings, either way."]


def _grown(arm: str, base: str, s: NestedSettings, seed: int, probe: GrowthProbe):
    """An arm's model builder: the seed's trained shallow net, grown as the arm grows it."""
    def model(done: dict[str, RunResult]) -> nn.Module:
        trained = done[base].fit.model
        probe.reference = trained
        torch.manual_seed(seed)  # the new units' weights: the same draw in every arm
        if arm == "shallow":
            return copy.deepcopy(trained)
        return grow(trained, s.stage, s.blocks, shortcut=arm != "grown_plain",
                    identity=arm == "grown")
    return model


def _row(arm: str, group: list[RunResult], s: NestedSettings) -> dict[str, Any]:
    """An arm over its seeds: at step 0, after epoch 1 and at the end."""
    model = group[0].fit.model
    probes = [{p["epoch"]: p for p in r.probe} for r in group]
    last = max(probes[0], default=0)
    at = {"step 0": 0, "epoch 1": 1, "end": last}
    start = [p.get(0, {}) for p in probes]
    return {
        "arm": arm, "net": group[0].run.label, "layers": _depth(model),
        "params": sum(p.numel() for p in model.parameters()),
        "seeds": [r.info["seed"] for r in group],
        "identical": [p.get("identical", False) for p in start],
        "max_abs_diff": [p.get("max_abs_diff", float("nan")) for p in start],
        "test_acc": {k: [p.get(e, {}).get("test_acc", float("nan")) for p in probes]
                     for k, e in at.items()},
        "train_loss": {k: [p.get(e, {}).get("train_loss", float("nan")) for p in probes]
                       for k, e in at.items()},
        "val_curves": [[p.get(0, {}).get("val_acc", float("nan")),
                        *(h["val_acc"] for h in r.fit.history)] for p, r in zip(probes, group,
                                                                             strict=True)],
    }


def _pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def _depth(model: ResNet) -> int:
    """Weighted layers on the main path, as the papers count them (shortcut convs are not)."""
    return sum(isinstance(m, nn.Conv2d | nn.Linear) for name, m in model.named_modules()
               if "downsample" not in name)


def _versus(a: list[float], b: list[float], images: int) -> tuple[str, float]:
    """How ``a``'s mean accuracy stands to ``b``'s: above, below or level within the noise."""
    gap = mean_std(a)[0] - mean_std(b)[0]
    margin = spread(a, b, noise(1 - mean_std(b)[0], images))
    return ("level with" if abs(gap) <= margin else "above" if gap > 0 else "below"), margin


def findings(rows: list[dict[str, Any]], base_name: str, epochs: int, images: int
             ) -> list[str]:
    """Up to four sentences: growth at step 0; function-preserving growth against the
    shallow net, against random-init growth (AutoGrow's claim), and against training the deep
    net from scratch. ``images``: the test images accuracies are over."""
    by = {r["arm"]: r for r in rows}
    grown = by["grown"]
    acc = grown["test_acc"]
    start = (f"left its outputs bit-for-bit unchanged in {count(len(grown['seeds']), 'seed')}"
             if all(grown["identical"]) else
             f"changed its outputs by at most {max(grown['max_abs_diff']):.3g}")
    others = [f"{'the same units randomly initialised' if arm == 'grown_random' else 'plain units'}"
              f" moved them by up to {max(by[arm]['max_abs_diff']):.3g} and took test accuracy "
              f"to {percent_pm(by[arm]['test_acc']['step 0'])}%"
              for arm in ("grown_random", "grown_plain") if arm in by]
    sentences = [f"Growing {base_name} by zero-initialised residual units {start} (test "
                 f"accuracy {percent_pm(acc['step 0'])}% at step 0)"
                 + (f"; {' and '.join(others)}." if others else ".")]
    if "shallow" in by:
        a, b = acc["end"], by["shallow"]["test_acc"]["end"]
        where, margin = _versus(a, b, images)
        verdict = {"level with": "no worse, as nested function classes promise, and no better",
                   "above": "better, as nested function classes allow",
                   "below": "worse: the larger class did not pay off within this budget"}[where]
        sentences.append(f"After {count(epochs, 'more epoch')} the grown net reached "
                         f"{percent_pm(a)}% test accuracy against {percent_pm(b)}% for the "
                         f"shallow one trained as long (noise ± {percent(margin)} points): "
                         f"{verdict}.")
    if "grown_random" in by:
        r = by["grown_random"]["test_acc"]
        first, _ = _versus(acc["epoch 1"], r["epoch 1"], images)
        end, margin = _versus(acc["end"], r["end"], images)
        verdict = {"level with": "function-preserving growth does not matter here",
                   "above": "function-preserving growth helps here, against AutoGrow's claim",
                   "below": "function-preserving growth hurts here, as AutoGrow claims"}[end]
        sentences.append(f"Against random-init growth (AutoGrow): after one epoch "
                         f"{percent_pm(acc['epoch 1'])}% vs {percent_pm(r['epoch 1'])}% "
                         f"({first}), at the end {percent_pm(acc['end'])}% vs "
                         f"{percent_pm(r['end'])}% ({end}, noise ± {percent(margin)} points): "
                         f"{verdict}.")
    if "scratch" in by:
        c = by["scratch"]["test_acc"]["end"]
        where, margin = _versus(acc["end"], c, images)
        verdict = {"level with": "growing saved nothing and cost nothing",
                   "above": "growing a trained net beat training the deep one from the start",
                   "below": "training the deep net from the start did better"}[where]
        sentences.append(f"The deep net trained from scratch for the same total budget reached "
                         f"{percent_pm(c)}%, the grown one {percent_pm(acc['end'])}% ({where} "
                         f"it, noise ± {percent(margin)} points): {verdict}.")
    return sentences


# arm -> (line style, marker, colour): no two alike, so lines that coincide (the shallow net
# and its zero-init growth are the same function) still show both; hollow markers show through
STYLES = {"shallow": ("--", "s", "C0"), "grown": ("-", "o", "C2"),
          "grown_random": ("-.", "^", "C1"), "grown_plain": (":", "v", "C3"),
          "scratch": ((0, (5, 2, 1, 2)), "D", "C4")}


def _plot(curves: dict[str, list[list[float]]], rows: list[dict], epochs: int, data_name: str,
          val_images: int):
    """Validation accuracy over the whole run (left) and after growth, zoomed (right)."""
    figure, (whole, after) = new_figure(2, size=(11, 4.6))

    def mean(runs: list[list[float]]) -> list[float]:
        return [100 * mean_std(list(values))[0] for values in zip(*runs, strict=False)]

    base = mean(curves["base"])
    lines = {"base": (list(range(1, len(base) + 1)), base)}
    for row in rows:
        values = mean(curves[row["arm"]])
        first = 0 if row["arm"] == "scratch" else epochs  # scratch starts with the base net
        lines[row["arm"]] = (list(range(first, first + len(values))), values)
    late = [v for arm, (x, y) in lines.items() if arm != "base"
            for e, v in zip(x, y, strict=True) if e > epochs]
    for ax in (whole, after):
        x, y = lines["base"]
        ax.plot(x, y, "k-", linewidth=2.5, alpha=0.35, label="shallow net, before growing")
        for row in rows:
            style, marker, colour = STYLES[row["arm"]]
            hollow = row["arm"] == "shallow"  # drawn first, under the zero-init growth
            ax.plot(*lines[row["arm"]], linestyle=style, marker=marker, color=colour,
                    markersize=8 if hollow else 4, linewidth=1.4,
                    markerfacecolor="none" if hollow else colour, label=row["net"])
        ax.axvline(epochs, color="grey", linestyle=":", linewidth=1)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(f"epoch (growth at epoch {epochs}: the dotted line)")
        ax.grid(alpha=0.3)
        ax.set_ylabel(f"validation accuracy (%, {val_images:,} held-out training images)")
    whole.set_title(f"Growing a trained network on {data_name}")
    after.set_xlim(epochs - 0.5, max(max(x) for x, _ in lines.values()) + 0.5)
    if late:  # from the first epoch after growth: where the arms are close
        low, high = min(late), max(late)
        after.set_ylim(low - 0.1 * (high - low) - 0.5, high + 0.1 * (high - low) + 0.5)
    after.set_title("after growth, zoomed (step-0 points may lie below)")
    legend_outside(figure)
    return figure


EXPERIMENT = Nested()
