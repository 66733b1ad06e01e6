"""Plain vs residual nets of the same depths, both halves of He et al. 2015's Fig. 6: deeper
plain nets train worse, deeper residual nets train better. Each net is trained with several
seeds; training error is logged as a running average every few iterations and validation
error at intervals, and drawn against iterations as the figure does."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from reslab.data import BatchLoader, Dataset
from reslab.experiments.common import cifar_spec, net_name, paper_recipe, seeded, throughput
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
    resized,
    spread,
)
from reslab.runtime.evaluate import evaluate
from reslab.training import TrainConfig
from reslab.training.optim import peak_step


@dataclass
class DegradationSettings(TrainingSettings):
    depths: tuple[int, ...] = setting((20, 56), "CIFAR-style depths 6n + 2 (20, 32, 44, 56, "
                                      "110...)", low=8)
    width: int = setting(16, "channels of the first stage (the paper's 16)")
    # a lower side cuts each image's cost 4x at 14 (benchmarks/degradation_cost.py), so the
    # budget buys the iterations on all training images where depth, not data, limits training
    side: int | None = setting(None, "input side the images are resized to (none: as they are)",
                               low=8)
    epochs: int = setting(80, "epochs of each run")
    # measured: without it resnet56 sits at 85% training error for its first 38 iterations
    # (resnet20: 55%); with it the two are level after 150
    warmup_epochs: float = setting(2.0, "epochs of linear learning-rate warm-up (0: the "
                                   "paper's constant start)", low=0)
    seeds: tuple[int, ...] = setting((0, 1), "a run of each net per seed (weights and data "
                                     "order)", low=0)
    log_every: int = setting(5, "iterations per point of the running-average training error")
    val_every: int = setting(0, "iterations between validation points (0: epoch ends only)",
                             low=0)


class IterationCurve(Probe):
    """Fig. 6's curves: training error averaged over the last ``every`` steps (augmented
    batches in training mode, as the paper plots it), and validation error every ``val_every``
    steps. A resumed run starts its first window afresh."""

    def __init__(self, data: Dataset, every: int, val_every: int, side: int | None = None):
        self.data, self.every, self.val_every, self.side = data, every, val_every, side
        self.window = [0.0, 0, 0]  # loss sum, correct, images since the last point
        self.loader: BatchLoader | None = None

    def on_step(self, state, loss: float, correct: int, images: int) -> dict[str, Any] | None:
        w, step, row = self.window, state.counters.step, {}
        w[0], w[1], w[2] = w[0] + loss * images, w[1] + correct, w[2] + images
        if step % self.every == 0:
            row = {"train_error": 1 - w[1] / w[2], "train_loss": w[0] / w[2]}
            self.window = [0.0, 0, 0]
        if self.val_every and step % self.val_every == 0:
            row["val_error"] = 1 - evaluate(  # evaluate restores the model's training mode
                state.evaluated, self._val(state), len(self.data.classes), device=state.device,
                precision=state.precision, tta_flip=state.config.tta_flip).accuracy
        return row or None

    def _val(self, state) -> BatchLoader:
        if self.loader is None:
            self.loader = BatchLoader(self.data.val, 256, train=False, mean=self.data.mean,
                                      std=self.data.std, resize=self.side, device=state.device,
                                      channels_last=state.config.channels_last)
        return self.loader


class Degradation(Experiment):
    name = "degradation"
    title = "Degradation: plain vs residual networks of the same depth"
    settings = DegradationSettings
    modes = {
        # measured (AVX2, fp32, one core per seed): nets a quarter as wide on images half the
        # side, all 55,000 of them, so capacity, not data, bounds training error; both halves
        # of Fig. 6 show on both seeds, 28 min each. Width 16 on 2,500 images (108 min) showed
        # only the plain half: both residual nets sat at the floor of augmented training error
        "full": dict(width=4, side=14, epochs=10, warmup_epochs=1.0),
        # two seeds of four nets: half the images of a one-seed smoke test, for the same time
        "quick": dict(epochs=4, batch_size=64, train_size=1280, val_size=500, test_size=1000,
                      log_every=4, val_every=20),
        # the paper's schedule: 64k iterations (149 epochs of 429) on all training images
        "long": dict(epochs=149, log_every=100),
    }

    def plan(self, s: DegradationSettings, data: Dataset) -> list[PlannedRun]:
        runs = []
        for seed in s.seeds:
            for plain in (True, False):
                for depth in sorted(set(s.depths)):
                    name = net_name(depth, plain)
                    # the paper warms ResNet-110 up at lr 0.01: at 0.1 it does not converge
                    warm = dict(warmup_lr=0.01) if depth >= 110 else {}
                    runs.append(PlannedRun(
                        f"{name}-seed{seed}", name,
                        seeded(cifar_spec(depth, data, plain=plain, width=s.width,
                                          side=s.side), seed),
                        paper_recipe(s, data, seed=seed, resize=s.side, **warm),
                        probe=IterationCurve(data, s.log_every, s.val_every, s.side),
                        info=dict(net=name, depth=depth, plain=plain, seed=seed)))
        return runs

    def measure(self, s: DegradationSettings, data: Dataset, runs: dict[str, RunResult]
                ) -> dict[str, Any]:
        """Each net's error on the training images as they are (eval mode, no augmentation):
        whether it can fit them, without the noise of augmented batches and moving weights."""
        loader = BatchLoader(data.train, 256, train=False, mean=data.mean, std=data.std,
                             resize=s.side)
        return {"clean_train_errors": {
            key: 1 - evaluate(r.fit.model, loader, len(data.classes)).accuracy
            for key, r in runs.items()}}

    def analyse(self, s: DegradationSettings, data: Dataset, runs: dict[str, RunResult],
                measured: dict[str, Any]) -> Analysis:
        nets: dict[str, list[RunResult]] = defaultdict(list)
        for result in runs.values():
            nets[result.info["net"]].append(result)
        rows = [_row(group, measured["clean_train_errors"]) for group in nets.values()]
        curves = {key: _curve(r) for key, r in runs.items()}
        first = next(iter(runs.values()))
        steps = first.last["step"]
        pool = _pooled(s.log_every, steps)
        table = markdown_table(
            ["net", "depth", "params", "train error %", "clean train error %", "val error %",
             "test error %", "train img/s"],
            [[r["net"], r["depth"], f"{r['params']:,}", percent_pm(r["train_errors"]),
              percent_pm(r["clean_train_errors"]), percent_pm(r["val_errors"]),
              percent_pm(r["test_errors"]),
              f"{r['images_per_s']:.0f}"] for r in rows]) + "\n\n" + (
            "*Errors in % of images wrong, mean ± standard deviation over "
            f"{count(len(s.seeds), 'seed')}. Train error: the last epoch's "
            f"{len(data.train):,} training images, counted while training on them (augmented, "
            "training mode, the weights still moving), as the paper plots it. Clean train "
            "error: the same images as they are, re-evaluated in eval mode with the weights "
            "the test error uses. Val error: after the last epoch, on "
            f"{len(data.val):,} held-out training images. Test error: on {len(data.test):,} "
            "test images, with the weights of the epoch of best validation accuracy. Train "
            "img/s: training images per second on this machine, over the whole run.*")
        description = (
            f"Plain and residual CIFAR-style networks (He et al. 2015, section 4.2; option-A "
            f"shortcuts, widths {s.width}/{2 * s.width}/{4 * s.width}) trained on {data.name} "
            f"({len(data.train):,} training images{resized(s.side)}) with one recipe: SGD lr "
            f"{s.lr}, momentum 0.9, weight decay 1e-4, batch {s.batch_size}, "
            f"{count(s.epochs, 'epoch')} "
            f"({count(steps, 'iteration')}), {_warmup(first.run.config, steps)}lr / 10 at "
            f"50% and 75% of them; each net once per seed ({', '.join(map(str, s.seeds))}), "
            "the table giving mean ± standard deviation over the seeds. Training error is the "
            "last epoch's, averaged while training (augmented images), as the paper plots it; "
            "validation error is measured on held-out training images; test error is the test "
            "set's, for the epoch with the best validation accuracy."
        )
        return Analysis(
            description=description, table=table, findings=findings(rows, len(data.test)),
            figures={"curves.png": (_plot(curves, runs, literal(data.name), len(s.seeds), pool),
                                    "Training error (thin dashed: a running average over "
                                    f"{count(s.log_every * pool, 'iteration')} of augmented "
                                    "batches) and validation error (bold solid: "
                                    f"{len(data.val):,} held-out training images) against "
                                    "iterations, mean over seeds, in the style of He et al. "
                                    "2015, Fig. 6; plain nets left, residual right, on the "
                                    "same scale")},
            shows=_shows(rows, s, steps, len(data.train)),
            does_not_show=_does_not_show(s, steps, len(data.train)),
            results={"rows": rows, "curves": curves})


def _shows(rows: list[dict[str, Any]], s: DegradationSettings, steps: int, images: int
           ) -> list[str]:
    depths = sorted({r["depth"] for r in rows})
    return [f"How plain and residual nets of depths {', '.join(map(str, depths))} train on "
            f"{images:,} images in {count(steps, 'iteration')} "
            f"with one recipe, {count(len(s.seeds), 'seed')} each: whether the deeper plain "
            "net ends with higher training error than the shallower one (the plain half of "
            "Fig. 6), and whether the deeper residual net ends lower (the residual half), each "
            "gap weighed against the seeds' spread in the findings.",
            "At the deepest depth, what the shortcuts alone change in test error: the plain and "
            "residual nets have the same layers and parameters."]


def _does_not_show(s: DegradationSettings, steps: int, images: int) -> list[str]:
    return [f"The paper's regime: He et al. train 64k iterations on 50,000 CIFAR-10 images "
            f"of 32x32 with 16 channels in the first stage; here {count(steps, 'iteration')} on "
            f"{images:,} Fashion-MNIST images{resized(s.side)}, {s.width} channels. Where the "
            "nets can fit the images (wide nets, few images) both residual nets reach the floor "
            "of augmented training error and depth no longer shows: a residual half missing "
            "in such a setting is not evidence against it.",
            "Why deep plain nets train worse: these curves show that they do, not whether "
            "gradients, conditioning or the schedule is the cause (the gradients experiment "
            "looks at the first).",
            "A gap within the seeds' spread, either way: with "
            f"{count(len(s.seeds), 'seed')} the spread itself is a rough estimate."]


def _warmup(config: TrainConfig, steps: int) -> str:
    """The warm-up in words, its length in steps as the engine counts it."""
    ramp = peak_step(config, steps, steps // config.epochs)
    if not ramp:
        return ""
    return (f"the rate rising linearly over the first {count(ramp, 'iteration')} "
            f"({config.warmup_epochs:g} of the epochs; the paper starts at 0.1), ")


def _row(group: list[RunResult], clean: dict[str, float]) -> dict[str, Any]:
    """One net over its seeds; ``clean``: each run's clean training error, by key."""
    info = group[0].info
    return {
        "net": info["net"], "plain": info["plain"], "depth": info["depth"],
        "params": sum(p.numel() for p in group[0].fit.model.parameters()),
        "seeds": [r.info["seed"] for r in group],
        "train_errors": [1 - r.last["train_acc"] for r in group],
        "clean_train_errors": [clean[r.run.key] for r in group],
        "val_errors": [1 - r.last["val_acc"] for r in group],
        "test_errors": [r.test_error for r in group],
        "images_per_s": mean_std([throughput(r.fit) for r in group])[0],
    }


def _curve(result: RunResult) -> dict[str, list]:
    """A run's curves: running-average training error at its logged steps; validation error
    at its intervals and at each epoch's end."""
    train = [(r["step"], r["train_error"]) for r in result.probe if "train_error" in r]
    val = {r["step"]: r["val_error"] for r in result.probe if "val_error" in r}
    val |= {r["step"]: 1 - r["val_acc"] for r in result.fit.history}
    return {"train": train, "val": sorted(val.items())}


def findings(rows: list[dict[str, Any]], images: int) -> list[str]:
    """A sentence for each half of Fig. 6 and one on the deepest nets' test errors, each
    difference weighed against the seeds' spread; ``images``: the test images."""
    sentences = []
    for plain in (True, False):
        nets = sorted((r for r in rows if r["plain"] == plain), key=lambda r: r["depth"])
        if len(nets) < 2:
            continue
        shallow, deep = nets[0], nets[-1]
        a, b = shallow["train_errors"], deep["train_errors"]
        gap, margin = mean_std(b)[0] - mean_std(a)[0], spread(a, b)
        if plain:
            verdict = ("deeper plain nets degrade, as He et al. 2015 report" if gap > 0 else
                       "no degradation here, unlike He et al. 2015's Fig. 6 (longer training "
                       "may be needed to see it)")
        else:
            verdict = ("with shortcuts the deeper net trains better, as the paper reports"
                       if gap < 0 else "the deeper residual net has not overtaken the "
                       "shallower one, unlike in the paper (it may need a longer schedule)")
        relation = "higher" if gap > 0 else "lower" if gap < 0 else "the same"
        seeds = count(len(a), "seed")
        if len(a) < 2:
            weight = "one seed, so no seed-to-seed spread to weigh the gap against"
        elif abs(gap) > margin:
            weight = (f"the gap of {percent(abs(gap))} points exceeds the seed-to-seed spread "
                      f"({percent(margin)})")
        else:
            weight = (f"the gap of {percent(abs(gap))} points is within the seed-to-seed "
                      f"spread ({percent(margin)}), so {seeds} cannot tell")
        clean = [percent_pm(r["clean_train_errors"]) for r in (deep, shallow)]
        sentences.append(f"{deep['net']} ended with {relation} training error than "
                         f"{shallow['net']} ({percent_pm(b)}% vs {percent_pm(a)}% over {seeds}): "
                         f"{verdict}; {weight}. Re-evaluated clean: {clean[0]}% vs {clean[1]}%.")
    depth = max(r["depth"] for r in rows)
    plain = next(r for r in rows if r["plain"] and r["depth"] == depth)
    residual = next(r for r in rows if not r["plain"] and r["depth"] == depth)
    p, q = plain["test_errors"], residual["test_errors"]
    gap = mean_std(q)[0] - mean_std(p)[0]
    margin = spread(p, q, noise(mean_std(p)[0], images))
    if abs(gap) <= margin:
        sentences.append(f"At depth {depth} the plain and residual nets' test errors "
                         f"({percent_pm(p)}% and {percent_pm(q)}%) are level within the noise "
                         f"(± {percent(margin)} points: the seeds' spread, and the sampling "
                         f"noise of {images:,} test images).")
    elif gap < 0:
        sentences.append(f"At depth {depth} the shortcuts lowered test error from "
                         f"{percent_pm(p)}% to {percent_pm(q)}% with the same layers and "
                         "parameters.")
    else:
        sentences.append(f"At depth {depth} the residual net's test error ({percent_pm(q)}%) "
                         f"was not below the plain net's ({percent_pm(p)}%): here the shortcuts "
                         "did not help.")
    return sentences


POINTS = 150  # per plotted training curve: more is noise the eye cannot read


def _pooled(log_every: int, steps: int) -> int:
    """How many logged points each plotted training point averages (1 for short runs)."""
    return max(1, steps // log_every // POINTS)


def _mean_curve(curves: list[list[tuple[int, float]]], pool: int = 1
                ) -> tuple[list[int], list[float]]:
    """The seeds' curves averaged at the steps they all have, then ``pool`` consecutive
    points averaged into one (placed at the last of them)."""
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
    values = [dict(c) for c in curves]
    mean = [100 * sum(v[s] for v in values) / len(values) for s in steps]
    ends = range(pool - 1, len(steps), pool)
    return [steps[i] for i in ends], [sum(mean[i - pool + 1:i + 1]) / pool for i in ends]


MARKERS = "osD^vP"  # one per depth, so depths differ without colour too


def _plot(curves: dict[str, dict], runs: dict[str, RunResult], data_name: str, seeds: int,
          pool: int):
    figure, axes = new_figure(2, size=(11, 4.8), sharey=True)
    finals = []
    depths = sorted({r.info["depth"] for r in runs.values()})
    colours = {d: f"C{i}" for i, d in enumerate(depths)}
    for ax, plain in zip(axes, (True, False), strict=True):
        for i, depth in enumerate(depths):
            keys = [k for k, r in runs.items()
                    if r.info["plain"] == plain and r.info["depth"] == depth]
            for part, style, width, label in (("train", "--", 0.8, "training (augmented)"),
                                              ("val", "-", 2.2, "validation")):
                steps, errors = _mean_curve([curves[k][part] for k in keys],
                                            pool if part == "train" else 1)
                finals.append(errors[-1])
                ax.plot(steps, errors, style, color=colours[depth], linewidth=width,
                        marker=MARKERS[i % len(MARKERS)], markersize=4 if part == "val" else 3,
                        markevery=max(len(steps) // 12, 1),
                        label=f"depth {depth}, {label} error")  # alike in both panels
        ax.set_title(f"{'plain' if plain else 'residual'} networks on {data_name}"
                     + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%): training (dashed) and validation (solid)")
    # the end of training, where the halves of Fig. 6 are read, fills the height (the paper
    # plots 0-20%); the first iterations' errors near 90% run off the top
    axes[0].set_ylim(0, min(100, 10 * math.ceil(1.5 * max(finals) / 10)))
    legend_outside(figure, columns=4)
    return figure


EXPERIMENT = Degradation()
