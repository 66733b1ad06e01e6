import json

import pytest
import torch
from torch.overrides import TorchFunctionMode

from reslab.data import BatchLoader
from reslab.errors import ConfigError
from reslab.experiments import degradation, run
from reslab.experiments.common import cifar_spec, paper_recipe
from reslab.experiments.report import percent_pm
from reslab.models import build
from reslab.runtime.checkpoint import model_from_checkpoint
from reslab.runtime.evaluate import evaluate
from reslab.settings import problems

from .conftest import TINY, check_figure, check_report


class CountAdds(TorchFunctionMode):
    """Counts tensor additions: a shortcut is an addition, nothing else in a unit adds."""

    def __init__(self):
        super().__init__()
        self.adds = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("add", "__add__", "add_", "__iadd__"):
            self.adds += 1
        return func(*args, **(kwargs or {}))


def count_adds(model: torch.nn.Module) -> int:
    with torch.no_grad(), CountAdds() as counter:
        model.eval()(torch.zeros(1, 1, 28, 28))
    return counter.adds


def test_plain_nets_have_no_shortcut_and_residual_nets_one_per_unit(small_data):
    plain = build(cifar_spec(20, small_data, plain=True))
    residual = build(cifar_spec(20, small_data))
    assert count_adds(plain) == 0 and all(u.is_plain for u in plain.units())
    assert count_adds(residual) == len(residual.units()) == 9
    # the same layers, parameters and depth: only the shortcuts differ
    assert plain.spec.depth == residual.spec.depth == 20
    assert [p.shape for p in plain.parameters()] == [p.shape for p in residual.parameters()]


def test_cifar_depths_must_be_6n_plus_2(small_data):
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        cifar_spec(21, small_data)


def test_degradation_report_with_per_iteration_curves(tmp_path, small_data, figures):
    out = tmp_path / "degradation"
    results = run("degradation", out, quick=True, data=small_data, depths=(8, 14),
                  seeds=(0, 1), log_every=2, val_every=4, **TINY)
    check_report(out, results)
    check_figure(figures["curves.png"], "error (%): training (dashed) and validation (solid)")
    assert "Val error: after the last epoch, on 128 held-out training images" \
        in results["table"]
    assert [(r["net"], r["depth"], r["plain"], r["seeds"]) for r in results["rows"]] == [
        ("plain8", 8, True, [0, 1]), ("plain14", 14, True, [0, 1]),
        ("resnet8", 8, False, [0, 1]), ("resnet14", 14, False, [0, 1])]
    by = {r["net"]: r for r in results["rows"]}
    assert by["plain14"]["params"] == by["resnet14"]["params"]
    for row in results["rows"]:
        errors = row["train_errors"] + row["val_errors"] + row["test_errors"]
        assert len(errors) == 6 and all(0 <= e <= 1 for e in errors)
        assert percent_pm(row["test_errors"]) in results["table"]
    runs = {r["key"]: r for r in results["runs"]}
    assert sorted(runs) == sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        f"{net}-seed{seed}" for net in by for seed in (0, 1))
    # 256 images in batches of 32: 8 steps an epoch, 2 epochs; a training-error point every
    # 2 steps, validation every 4 (and at each epoch's end)
    for key, curve in results["curves"].items():
        assert [step for step, _ in curve["train"]] == list(range(2, 17, 2))
        assert [step for step, _ in curve["val"]] == [4, 8, 12, 16]
        # the windows of an epoch average to the epoch's own training error
        epoch1 = [error for step, error in curve["train"] if step <= 8]
        assert sum(epoch1) / 4 == pytest.approx(_epoch_error(out, key, 1))
        assert curve["val"][-1][1] == pytest.approx(runs[key]["val_error"])
    assert results["settings"]["train_size"] == 1280  # quick mode's; the data was smaller
    assert len(results["findings"]) == 3 and "over 2 seeds" in results["findings"][0]
    assert (out / "probes" / "resnet14-seed1.jsonl").is_file()
    # clean training error: the chosen weights on the training images as they are
    model, _ = model_from_checkpoint(out / "runs" / "plain14-seed1" / "checkpoints" /
                                     "best.safetensors")
    loader = BatchLoader(small_data.train, 64, train=False, mean=small_data.mean,
                         std=small_data.std)
    clean = 1 - evaluate(model, loader, len(small_data.classes)).accuracy
    assert by["plain14"]["clean_train_errors"][1] == pytest.approx(clean)
    assert results["measured"]["clean_train_errors"]["plain14-seed1"] == pytest.approx(clean)
    assert percent_pm(by["plain14"]["clean_train_errors"]) in results["table"]
    # a 2-epoch warm-up of a 16-step run, as the engine clips it: the last step at peak rate
    assert "rising linearly over the first 15 iterations (2 of the epochs" in \
        (out / "report.md").read_text()


def test_degradation_at_a_lower_side_trains_and_validates_on_resized_images(
        tmp_path, small_data, monkeypatch):
    from reslab.models.build import ResNet

    seen = set()
    forward = ResNet.forward
    monkeypatch.setattr(ResNet, "forward",
                        lambda self, x: seen.add(tuple(x.shape[1:])) or forward(self, x))
    out = tmp_path / "degradation"
    run("degradation", out, quick=True, data=small_data, depths=(8,), seeds=(0,), side=14,
        log_every=2, val_every=4, **TINY)
    assert seen == {(1, 14, 14)}  # training, the probe's validation points and the test
    assert "(256 training images, resized to 14x14)" in (out / "report.md").read_text()
    config = json.loads((out / "runs" / "resnet8-seed0" / "config.json").read_text())["config"]
    assert config["resize"] == 14 and config["crop_padding"] == 2  # crops at 28, then resizes
    plan = degradation.Degradation().plan(
        degradation.DegradationSettings(depths=(20,), seeds=(0,), side=14), small_data)
    assert {run.config.resize for run in plan} == {14}
    assert problems(degradation.DegradationSettings(side=4)) == [
        "side must be an integer >= 8, got 4"]


def _epoch_error(out, key, epoch):
    rows = [json.loads(line) for line in
            (out / "runs" / key / "metrics.jsonl").read_text().splitlines()]
    return 1 - rows[epoch - 1]["train_acc"]


def make_rows(plain20, plain56, res20, res56):
    """Rows of four nets, each a list of errors over seeds (train and test alike)."""
    def make(net, depth, plain, errors):
        return {"net": net, "depth": depth, "plain": plain, "train_errors": errors,
                "clean_train_errors": [e / 2 for e in errors], "test_errors": errors}
    return [make("plain20", 20, True, plain20), make("plain56", 56, True, plain56),
            make("resnet20", 20, False, res20), make("resnet56", 56, False, res56)]


def test_findings_state_both_halves_against_the_seed_spread():
    paper = degradation.findings(make_rows([0.10, 0.10], [0.15, 0.15], [0.08, 0.08],
                                           [0.06, 0.06]), 10_000)
    assert ("plain56 ended with higher training error than plain20 (15.00 ± 0.00% vs "
            "10.00 ± 0.00% over 2 seeds): deeper plain nets degrade, as He et al. 2015 report; "
            "the gap of 5.00 points exceeds the seed-to-seed spread (0.00)") in paper[0]
    assert paper[0].endswith("Re-evaluated clean: 7.50 ± 0.00% vs 5.00 ± 0.00%.")
    assert "deeper net trains better" in paper[1] and "exceeds" in paper[1]
    assert "lowered test error" in paper[2]
    other = degradation.findings(make_rows([0.15, 0.15], [0.10, 0.10], [0.06, 0.06],
                                           [0.12, 0.12]), 10_000)
    assert "lower training error" in other[0] and "unlike" in other[0]
    assert "has not overtaken" in other[1] and "did not help" in other[2]
    # a gap smaller than the seeds' spread is said to be so
    noisy = degradation.findings(make_rows([0.10, 0.14], [0.13, 0.15], [0.08, 0.12],
                                           [0.10, 0.16]), 10_000)
    assert "is within the seed-to-seed spread" in noisy[0] and "2 seeds cannot tell" in noisy[0]
    assert "level within the noise" in noisy[2]
    one = degradation.findings(make_rows([0.10], [0.15], [0.08], [0.06]), 10_000)
    assert "one seed, so no seed-to-seed spread" in one[0]
    # 2 points apart on 100 test images is noise, and the report says so
    assert "sampling noise of 100 test images" in degradation.findings(
        make_rows([0.15], [0.10], [0.06], [0.12]), 100)[2]


def test_long_training_curves_are_pooled_to_a_readable_number_of_points():
    # two seeds' running averages at steps 5..50; pooled 3 at a time, placed at the last step
    seeds = [[(5 * i, 0.1 * i) for i in range(1, 11)], [(5 * i, 0.3 * i) for i in range(1, 11)]]
    steps, errors = degradation._mean_curve(seeds, pool=3)
    assert steps == [15, 30, 45]  # the 10th point, not a whole pool, is left out
    assert errors == pytest.approx([40.0, 100.0, 160.0])  # 100 * mean of (0.2i) over each three
    assert degradation._pooled(log_every=5, steps=4290) == 5  # 858 points -> 171 plotted
    assert degradation._pooled(log_every=4, steps=80) == 1  # quick runs: every point


def test_settings_are_checked(tmp_path, small_data):
    with pytest.raises(ConfigError, match="unknown experiment setting 'depth'.*depths"):
        run("degradation", tmp_path / "a", data=small_data, depth=20)
    with pytest.raises(ConfigError, match="setting seeds must be a non-empty list of integers "
                       ">= 0, got"):
        run("degradation", tmp_path / "a", data=small_data, seeds=())
    with pytest.raises(ConfigError, match="CIFAR-style depths are 6n"):
        run("degradation", tmp_path / "a", data=small_data, depths=(20, 21))
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.md").write_text("old")
    with pytest.raises(ConfigError, match="not empty"):
        run("degradation", tmp_path / "b", data=small_data)


def test_modes():
    experiment = degradation.EXPERIMENT
    assert experiment.mode_names() == ["full", "quick", "long"]
    full, long = experiment.resolve("full", {}), experiment.resolve("long", {"seeds": "0,1,2"})
    assert (full.epochs, full.seeds, full.depths, full.train_size) == (10, (0, 1), (20, 56), None)
    assert (full.width, full.side, full.warmup_epochs) == (4, 14, 1.0)  # the measured setting
    assert long.epochs > full.epochs and long.seeds == (0, 1, 2) and long.train_size is None
    assert (long.width, long.side) == (16, None)  # the paper's nets on the images as they are
    with pytest.raises(ConfigError, match="degradation has modes full, quick, long; got 'fast'"):
        experiment.resolve("fast", {})


def test_the_recipe_trains_in_the_precision_asked_for(small_data):
    settings = degradation.DegradationSettings()
    assert paper_recipe(settings, small_data).precision == "auto"  # bf16 where it is fast
    fp32 = degradation.DegradationSettings(precision="fp32")
    recipe = paper_recipe(fp32, small_data, seed=3)
    assert (recipe.precision, recipe.lr, recipe.batch_size, recipe.epochs, recipe.seed) == \
        ("fp32", 0.1, 128, 80, 3)
    odd = paper_recipe(degradation.DegradationSettings(precision="fp17"), small_data)
    assert problems(odd) == ["precision must be one of auto, fp32, bf16, fp16, got 'fp17'"]


def test_every_net_warms_up_alike_and_resnet110_also_as_the_paper_does(small_data):
    experiment = degradation.EXPERIMENT
    plan = experiment.plan(experiment.resolve("full", {"depths": (20, 110), "seeds": (0,)}),
                           small_data)
    warmups = {r.key: (r.config.warmup_epochs, r.config.warmup_lr) for r in plan}
    assert warmups == {"plain20-seed0": (1.0, None), "plain110-seed0": (1.0, 0.01),
                       "resnet20-seed0": (1.0, None), "resnet110-seed0": (1.0, 0.01)}
    paper = experiment.plan(experiment.resolve("full", {"warmup_epochs": 0}), small_data)
    assert {r.config.warmup_epochs for r in paper} == {0.0}


def test_an_interrupted_experiment_continues_without_retraining_finished_runs(
        tmp_path, small_data, monkeypatch):
    import reslab.experiments.executor as executor

    calls, real_fit = [], executor.fit

    def fit_stopped_in_the_second(model, data, config, *, on_step=None, **options):
        calls.append((config.model, options["resume"]))

        def step(state, *outcome):
            on_step(state, *outcome)
            if len(calls) == 2 and state.counters.step == 11:
                raise KeyboardInterrupt  # Ctrl-C twice, in resnet8's second epoch

        return real_fit(model, data, config, on_step=step, **options)

    monkeypatch.setattr(executor, "fit", fit_stopped_in_the_second)
    out = tmp_path / "report"
    settings = dict(depths=(8,), seeds=(0,), log_every=2, val_every=4, **TINY)
    with pytest.raises(KeyboardInterrupt):
        run("degradation", out, quick=True, data=small_data, **settings)
    first = out / "runs" / "plain8-seed0"
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in
            (first / "results.json", first / "checkpoints" / "best.safetensors",
             out / "probes" / "plain8-seed0.jsonl")}
    assert not (out / "runs" / "resnet8-seed0" / "results.json").exists()
    calls.clear()
    results = run("degradation", out, quick=True, data=small_data, **settings)
    # the finished plain net was read back, not trained; the half-done one resumed
    assert calls == [("resnet8", True)]
    assert all((p.read_bytes(), p.stat().st_mtime_ns) == v for p, v in kept.items())
    check_report(out, results)
    assert {r["net"] for r in results["rows"]} == {"plain8", "resnet8"}
    # the resumed run's curve: the rows up to its checkpoint (step 8), then the rest, once
    curve = results["curves"]["resnet8-seed0"]
    assert [s for s, _ in curve["train"]] == list(range(2, 17, 2))
    assert [s for s, _ in curve["val"]] == [4, 8, 12, 16]
    with pytest.raises(ConfigError, match=r"other settings \(epochs\)"):
        run("degradation", out, quick=True, data=small_data, **(settings | {"epochs": 3}))
