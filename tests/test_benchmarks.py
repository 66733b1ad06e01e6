"""The benchmarks' baseline is the seed's network at reslab's size; the report renders."""

import json

import pytest
import torch

from benchmarks import bench_training, reference_d2l, report
from benchmarks.__main__ import main as run_benchmarks
from reslab import create_model


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "channels", "tolerance"), [
    ("d2l_resnet18", 1, 0.0),  # the seed's network is reslab's d2l_resnet18 exactly
    ("resnet18", 3, 0.001),  # the seed's convs have biases where torchvision's have none
    ("resnet50", 3, 0.001),
])
def test_the_reference_has_the_size_of_reslabs_model(name, channels, tolerance):
    reference = reference_d2l.net(name, channels)
    ours = create_model(name, num_classes=10, in_channels=channels)
    assert abs(_params(reference) / _params(ours) - 1) <= tolerance
    x = torch.randn(2, channels, 64, 64)
    assert reference(x).shape == ours(x).shape == (2, 10)


def test_the_reference_step_learns_a_fixed_batch():
    torch.manual_seed(0)
    net = reference_d2l.net("d2l_resnet18", 1)
    optimizer, loss = reference_d2l.trainer(net, lr=0.05)
    x, y = torch.randn(16, 1, 32, 32), torch.arange(16) % 10
    first = loss(net(x), y).item()
    correct = [reference_d2l.train_step(net, optimizer, loss, x, y) for _ in range(15)]
    assert loss(net(x), y).item() < first / 2 and correct[-1] > correct[0]


def test_report_fills_the_tables_between_the_markers(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    machine = {"cpu": "Test CPU", "cores": 2, "threads": 2, "torch": "2.x",
               "cpu_capability": "AVX512"}
    (results / "memory.json").write_text(json.dumps({
        "benchmark": "memory", "date": "2026-11-24 12:00:00", "machine": machine,
        "steps": 10, "peak_rss_mib": {"floor": 300.0, "reference": 1500.0},
        "d2l_vs_reference": 1.1}))
    doc = tmp_path / "benchmarks.md"
    doc.write_text("intro\n<!-- BEGIN memory -->\nold table\n<!-- END memory -->\nafter\n")
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "DOC", doc)
    report.main([])
    text = doc.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "| floor | 300 |" in text and "| reference | 1,500 |" in text and "1.10x" in text
    report.main([])  # idempotent
    assert doc.read_text() == text


def test_an_unknown_benchmark_is_refused(capsys):
    assert run_benchmarks(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_the_profile_names_the_top_operators_of_the_fast_step():
    table = bench_training.profile("fast", steps=1, rows=5)
    assert table.startswith("fast (fast_resnet10 1x28x28 batch 256")
    assert "Self CPU" in table and "convolution" in table


def test_an_unknown_profile_case_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_training.main(["--profile", "nope"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nope' (choose from 'd2l-28'" in capsys.readouterr().err


def test_time_to_accuracy_counts_time_and_compute_to_each_target():
    from benchmarks import bench_time_to_accuracy as tta
    from reslab.training import preset

    # 2 FLOPs per multiply-add of the convolutions and the classifier: 12.68 M MACs
    assert tta.forward_flops(preset("fast"), 1, 28, 10) == 2 * 12_684_800
    runs = [{"train_flops_per_image": 1e6, "epochs": [
        {"epoch": e, "wall_s": 30.0 * e, "images": 50_000 * e, "test_acc": acc}
        for e, acc in enumerate(accs, 1)]} for accs in ([0.92, 0.931], [0.935, 0.94], [0.9, 0.91])]
    result = tta.time_to(runs, 0.93)
    assert [r and r["epoch"] for r in result["per_seed"]] == [2, 1, None]
    assert result["median_s"] == 60.0 and result["median_tflop"] == 100_000 * 1e6 / 1e12
    # the goal is every seed: the third never got there
    assert result["seeds_reached"] == 2 and result["every_seed_tflop"] is None
    assert tta.time_to(runs, 0.94)["median_s"] is None  # 1 of 3 got there
    # seconds are the machine's own: nothing normalised
    assert "normalised_s" not in result["per_seed"][0]
    every = tta.time_to(runs[:2], 0.93)  # both got there: by the slower one's compute
    assert every["every_seed_tflop"] == 100_000 * 1e6 / 1e12 and every["seeds_reached"] == 2
    # epochs whose test accuracy was not measured (--test-every) are passed over
    runs[0]["epochs"][1]["test_acc"] = None
    skipped = tta.time_to(runs, 0.93)
    assert [r and r["epoch"] for r in skipped["per_seed"]] == [None, 1, None]
    assert skipped["median_s"] is None
    assert tta.time_to(runs[1:2], 0.93)["median_s"] == 30.0


def test_the_machine_kind_comes_from_the_cpu_flags():
    from benchmarks import common

    flags = "processor\t: 0\nflags\t\t: fpu sse avx2 {}\n"
    assert common.cpu_kind(flags.format("avx512f avx512_bf16 amx_bf16 amx_tile")) == "AMX"
    assert common.cpu_kind(flags.format("avx512f avx512_bf16")) == "AVX-512 bf16"
    assert common.cpu_kind(flags.format("avx512f")) == "AVX-512"
    assert common.cpu_kind(flags.format("")) == "AVX2"
    assert common.cpu_kind("flags : neon asimd") == "other"


def test_the_time_to_accuracy_table_renders(tmp_path):
    run = {"seed": 0, "final_test_acc": 0.9312}
    when = {"epoch": 3, "seconds": 100.0, "tflop": 9.5}
    results = {"presets": {"fast": {
                   "machine": {"cpu": "Test CPU"},
                   "peak": {"precision": "bf16", "cpu_kind": "AMX", "bf16_peak": 1_881e9,
                            "fp32_peak": 330e9, "peak": 1_881e9},
                   "runs": [run], "targets": [
                   {"target": 0.93, "per_seed": [when], "median_s": 100.0, "median_tflop": 9.5,
                    "seeds_reached": 1, "every_seed_tflop": 9.5},
                   {"target": 0.94, "per_seed": [None], "median_s": None, "seeds_reached": 0,
                    "every_seed_tflop": None}]}},
               "ablation": {"preset": "fast", "rows": [
                   {"without": "whiten_stem", "value": False, "final_test_acc": 0.925,
                    "reached": {"0.93": None, "0.94": None}}]}}
    text = report.time_to_accuracy(results)
    assert "| `fast` | 0 | 0.9312 | 3, 100 s, 9.5 | never |" in text
    assert "| | **median** | | **100 s, 9.5** | never |" in text.replace("|  |", "| |")
    assert "**every seed** |  | **all 1 by 9.5 TFLOP** | 0 of 1 |" in text
    assert "`whiten_stem=False`" in text and "normalised" not in text
    assert ("- `fast`: AMX machine, bf16 `torch.mm` 1,881 GFLOP/s, fp32 `torch.mm` 330 "
            "GFLOP/s; trained in bf16; Test CPU") in text
    # a preset measured on another day, on an AVX2 machine whose bf16 is emulated, and an
    # entry kept from before the machine's kind was recorded: each its own line
    results["presets"]["best"] = {
        "date": "2026-12-03 18:00:00", "machine": {"cpu": "AVX2 CPU"}, "test_every": 3,
        "peak": {"precision": "fp32", "fp32_peak": 118e9, "bf16_peak": 1.4e9,
                 "normalise_by": None},
        "runs": [run], "targets": [
            {"target": 0.93, "per_seed": [when | {"normalised_s": None}], "median_s": 100.0,
             "median_normalised_s": None, "median_tflop": 9.5},
            {"target": 0.94, "per_seed": [None], "median_s": None}]}
    text = report.time_to_accuracy(results)
    assert "| `best` | 0 | 0.9312 | 3, 100 s, 9.5 | never |" in text
    assert text.count("| **all 1 by 9.5 TFLOP** | 0 of 1 |") == 2
    assert ("- `best`: bf16 `torch.mm` 1.4 GFLOP/s, fp32 `torch.mm` 118 GFLOP/s; trained in "
            "fp32; AVX2 CPU") in text
    assert "measured 2026-12-03 18:00:00. Test accuracy measured every 3 epochs" in text


def test_time_to_accuracy_keeps_the_presets_it_does_not_measure(tmp_path, monkeypatch):
    import json

    from benchmarks import bench_time_to_accuracy as tta
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert tta.previous(quick=False) == {}
    old = {"date": "2026-12-02 16:04:00", "machine": {"cpu": "AVX512 CPU"}, "bf16_peak": 381e9,
           "presets": {"fast": {"runs": [], "targets": []}}, "ablation": {"rows": []}}
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps(old))
    kept = tta.previous(quick=False)
    # an entry from before presets carried their own machine gets the file's
    assert kept["presets"]["fast"]["machine"] == {"cpu": "AVX512 CPU"}
    assert kept["presets"]["fast"]["peak"]["bf16_peak"] == 381e9
    assert kept["presets"]["fast"]["date"] == "2026-12-02 16:04:00"
    assert kept["ablation"] == {"rows": []} and tta.previous(quick=True) == {}


def test_time_to_accuracy_goes_on_from_an_unfinished_measurement(tmp_path, monkeypatch):
    from benchmarks import bench_time_to_accuracy as tta
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    peak = {"precision": "fp32", "cpu_kind": "AVX2", "peak": 1e11, "fp32_peak": 1e11,
            "bf16_peak": 1e9}
    monkeypatch.setattr(tta, "measure_peak", lambda name, quick: peak)
    monkeypatch.setattr(tta, "step_utilisation", lambda *args, **kwargs: {
        "images_per_s": 800.0, "utilisation": 0.6, "precision": "fp32"})
    trained, cut_at = [], [2]

    def one_run(name, seed, overrides, test_every=1, progress=False):
        trained.append(seed)
        if len(trained) == cut_at[0]:
            raise KeyboardInterrupt  # the session ends during the second seed
        return {"seed": seed, "final_test_acc": 0.94 + seed / 100, "wall_s": 60.0,
                "precision": "fp32", "train_flops_per_image": 1e6, "epochs": [
                    {"epoch": 1, "wall_s": 60.0, "images": 1000, "val_acc": 0.9,
                     "test_acc": 0.94 + seed / 100}]}

    monkeypatch.setattr(tta, "one_run", one_run)

    def saved():
        return json.loads((tmp_path / "time_to_accuracy.json").read_text())

    with pytest.raises(KeyboardInterrupt):
        tta.main(["--presets", "best", "--seeds", "0,1"])
    entry = saved()["presets"]["best"]
    assert entry["unfinished"] and [run["seed"] for run in entry["runs"]] == [0]
    assert entry["targets"][1]["per_seed"][0]["epoch"] == 1  # seed 0's figures are kept

    cut_at[0] = None
    tta.main(["--presets", "best", "--seeds", "0,1"])  # the same command goes on
    assert trained == [0, 1, 1]
    entry = saved()["presets"]["best"]
    assert not entry["unfinished"] and [run["seed"] for run in entry["runs"]] == [0, 1]
    assert entry["targets"][2]["seeds_reached"] == 1  # seed 1 reached 95%

    # a finished measurement is measured afresh; so is an unfinished one made another way
    tta.main(["--presets", "best", "--seeds", "0,1"])
    assert trained == [0, 1, 1, 0, 1]
    unfinished = dict(entry, unfinished=True, test_every=3)
    assert tta.unfinished_runs(unfinished, "best", peak, test_every=1) == {}
    assert tta.unfinished_runs(unfinished, "best", peak | {"cpu_kind": "AMX"}, 3) == {}
    assert tta.unfinished_runs(unfinished, "fast", peak, test_every=3) == {}
    assert list(tta.unfinished_runs(unfinished, "best", peak, test_every=3)) == [0, 1]


def test_the_degradation_cost_model_counts_what_the_candidates_cost():
    from benchmarks import degradation_cost as cost

    f = {(w, s, d): cost.train_flops(d, w, s) for w in (8, 16) for s in (14, 28) for d in (20, 56)}
    # convolutions dominate: 4x the pixels and 2x the width both cost about 4x
    assert 3.5 < f[16, 28, 20] / f[16, 14, 20] < 4.0 and 3.5 < f[16, 28, 20] / f[8, 28, 20] < 4.1
    # 27 units against 9: about 3x
    assert 2.9 < f[16, 28, 56] / f[16, 28, 20] < 3.2
    # the paper's resnet20 at 28x28: 3 x 2 FLOPs per multiply-add of its ~32 M MACs
    assert 180e6 < f[16, 28, 20] < 190e6
    table = cost.main(["--depths", "20,56"])
    assert table.count("\n| ") == 1 + 18 and "8 runs on 55,000 images" in table


@pytest.fixture
def zoo_left_as_found(monkeypatch):
    """The lever trials register their networks (and a norm) in the zoo: undo it after."""
    from reslab.models import layers, zoo

    monkeypatch.setattr(zoo, "SPECS", dict(zoo.SPECS))
    monkeypatch.setattr(layers.NORMS, "_factories", dict(layers.NORMS._factories))


def test_each_lever_trial_spends_the_same_compute(zoo_left_as_found):
    """A trial's steps come from the 10-TFLOP budget (a cheaper network trains for longer), or
    are whole epochs of its batch size."""
    from benchmarks import levers
    from benchmarks.bench_time_to_accuracy import forward_flops
    from reslab.training import preset

    for name, trial in levers.TRIALS.items():
        config = preset(levers.BASE, **levers.overrides_for(name))
        steps_per_epoch = levers.TRAIN_SPLIT // config.batch_size
        if "epochs" in trial:
            assert config.max_steps == trial["epochs"] * steps_per_epoch, name
        else:
            flops = 3 * forward_flops(config, 1, 28, 10) * config.max_steps * config.batch_size
            budget = trial.get("tflop", 10) * 1e12
            assert 0.99 * budget < flops <= budget, name
        assert (config.epochs - 1) * steps_per_epoch < config.max_steps
        assert config.max_steps <= config.epochs * steps_per_epoch
    assert not any("," in name for name in levers.TRIALS)  # --trials is comma-separated
    assert levers.overrides_for("10 TFLOP")["max_steps"] == 513  # fast_resnet10: 2.4 epochs
    assert levers.overrides_for("3 stages 16/32/64")["max_steps"] == 711
    assert levers.overrides_for("batch 128 at lr 0.42 for 3 epochs")["max_steps"] == 1287  # 3 x 429
    assert levers.overrides_for("16.7 TFLOP")["max_steps"] == 856  # 4 epochs of 214 steps
    assert levers.overrides_for("batch 128 at lr 0.42 for 4 epochs")["max_steps"] == 1716
    spec = levers.overrides_for("zero-init residual")
    assert spec["whiten_stem"] and spec["lr"] == 0.6  # the network's tuned levers stay on
    assert levers.overrides_for("batch 64 at lr 0.3")["lr"] == 0.3
    assert levers.overrides_for("batch 1024 at lr 1.2 + Nesterov 0.85")["max_steps"] == 128
    assert levers.overrides_for("3 stages 24/48/96")["max_steps"] == 341  # wider: fewer steps
    assert levers.overrides_for("batch 128 at lr 0.42 for 9 epochs")["max_steps"] == 9 * 429
    forty = levers.overrides_for("batch 128 at lr 0.42 for 40 TFLOP")
    assert forty["max_steps"] == 4105 and forty["epochs"] == 10  # 9.6 epochs


def test_the_compiled_step_calls_torch_compile_as_a_run_does(monkeypatch):
    from reslab.training import preset

    wrapped = []
    monkeypatch.setattr(torch, "compile", lambda net: wrapped.append(net) or net)
    x, y = bench_training.batch(1, 28, 8)
    step, _ = bench_training.reslab_step("fast_resnet10", 1, x, y, "fp32", True,
                                         recipe=preset("fast", compile=True))
    step()
    assert len(wrapped) == 1 and type(wrapped[0]).__name__ == "ResNet"
    bench_training.reslab_step("fast_resnet10", 1, x, y, "fp32", True, recipe=preset("fast"))
    assert len(wrapped) == 1  # eager unless asked


def test_the_lever_table_shows_validation_only():
    from benchmarks import levers

    rows = [{"trial": t, "seed": s, "changes": c, "val_acc": v, "test_acc": 0.5,
             "images": 100, "train_flops_per_image": 1e10}
            for t, c, s, v in [("a", "(the recipe)", 0, 0.93), ("a", "(the recipe)", 1, 0.91),
                               ("b", "lr=1", 1, 0.92), ("b", "lr=1", 2, 0.90)]]
    text = levers.table(rows)  # the means are over seed 1 only, the seed both trials have
    assert "| mean (seeds 1) | lowest (seeds 1) |" in text
    assert "| a | (the recipe) | 1.0 | 0.9300 | 0.9100 |  | 0.9100 | 0.9100 |" in text
    assert "| b | lr=1 | 1.0 |  | 0.9200 | 0.9000 | 0.9200 | 0.9200 |" in text
    assert "0.5000" not in text
    budgets = levers.report(rows + [dict(rows[0], trial="c", images=200)])
    assert budgets.index("At 1 TFLOP:") < budgets.index("| a |") < budgets.index("At 2 TFLOP:")
    assert budgets.index("At 2 TFLOP:") < budgets.index("| c |")
