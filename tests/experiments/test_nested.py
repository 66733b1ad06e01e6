import pytest
import torch

from reslab.errors import ConfigError
from reslab.experiments import nested, run
from reslab.models import ResNetSpec, build, get_spec, grow

from .conftest import TINY, check_figure, check_report

CIFAR = get_spec("resnet14").replace(in_channels=1, widths=(4, 8, 16), stem_width=4)
BOTTLENECK = ResNetSpec(block="bottleneck", depths=(1, 2), widths=(4, 8), stem_width=8,
                        in_channels=1, num_classes=10, input_size=28)


def trained_like(spec: ResNetSpec, channels_last: bool = False) -> torch.nn.Module:
    """A net whose BN layers hold non-trivial statistics and affine weights, in eval mode."""
    torch.manual_seed(0)
    model = build(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 28, 28) * 2 + 0.5)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


@pytest.mark.parametrize("spec", [
    CIFAR,
    CIFAR.replace(ordering="relu_before_add"),
    CIFAR.replace(ordering="relu_preact"),
    CIFAR.replace(ordering="full_preact", shortcut="conv"),
    BOTTLENECK,
], ids=["original", "relu_before_add", "relu_preact", "full_preact", "bottleneck"])
@pytest.mark.parametrize("stage", [1, -1])
def test_grow_computes_exactly_the_same_function(spec, stage):
    model = trained_like(spec, channels_last=stage == -1)
    stage = len(spec.depths) if stage == -1 else stage
    x = torch.randn(16, 1, 28, 28)
    grown = grow(model, stage, 2)
    assert torch.equal(grown(x), model(x))
    depths = list(spec.depths)
    depths[stage - 1] += 2
    assert grown.spec == spec.replace(depths=tuple(depths))
    assert len(grown.units()) == len(model.units()) + 2 and not grown.training
    old = model.state_dict()
    assert all(torch.equal(grown.state_dict()[k], v) for k, v in old.items())
    # the grown model is a ResNet of its spec: a rebuilt one loads its weights as they are
    build(grown.spec).load_state_dict(grown.state_dict())


def test_grown_units_are_new_trainable_identities():
    model = trained_like(CIFAR)
    grown = grow(model, 2, 1)
    unit = grown.layer2[-1]
    assert unit.downsample is None and not unit.is_plain
    assert torch.count_nonzero(unit.bn2.weight) == 0 and torch.count_nonzero(unit.bn2.bias) == 0
    assert unit.conv1.weight.std() > 0  # the branch can still learn
    assert len(model.layer2) == 2  # the original is left as it was


def test_grow_without_shortcut_changes_the_function():
    model = trained_like(CIFAR)
    x = torch.randn(16, 1, 28, 28)
    grown = grow(model, 3, 2, shortcut=False)
    assert all(u.is_plain for u in grown.layer3[-2:])
    assert not torch.equal(grown(x), model(x))
    assert (grown(x) - model(x)).abs().max() > 1e-3
    assert grown.spec is None  # a residual net with plain units is no ResNetSpec
    plain = trained_like(CIFAR.replace(shortcut="none"))
    assert grow(plain, 1, 1, shortcut=False).spec.depths == (3, 2, 2)


def test_grow_refuses_what_it_cannot_do():
    model = trained_like(CIFAR)
    with pytest.raises(ConfigError, match="stage must be between 1 and 3"):
        grow(model, 4, 1)
    with pytest.raises(ConfigError, match="blocks must be from 1 to 1994"):
        grow(model, 1, 0)
    with pytest.raises(ConfigError, match=r"blocks must be .* \(at most 2,000 units in a network"):
        grow(model, 1, 10**9)  # refused before a billion units are built
    with pytest.raises(ConfigError, match="needs a reslab ResNet"):
        grow(torch.nn.Linear(2, 2), 1, 1)


def test_nested_experiment_report(tmp_path, small_data, figures):
    out = tmp_path / "nested"
    results = run("nested", out, quick=True, data=small_data,
                  **TINY | dict(depth=8, epochs=1, continue_epochs=2, seeds=(0, 1)))
    check_report(out, results)
    # the figure's axis names the split it shows, and the table says what its numbers are
    check_figure(figures["accuracy.png"], "validation accuracy (%, 128 held-out")
    assert "Test acc: % of the 128 test images" in results["table"]
    assert "cross-entropy in nats per image, raw (the recipe uses no label smoothing)" \
        in results["table"]
    assert "not a summed or smoothed loss but the eval-mode measurement" in results["table"]
    rows = {r["arm"]: r for r in results["rows"]}
    assert list(rows) == ["shallow", "grown", "grown_random", "grown_plain", "scratch"]
    shallow, grown, plain = rows["shallow"], rows["grown"], rows["grown_plain"]
    random, scratch = rows["grown_random"], rows["scratch"]
    # the invariants that hold whatever the data: same function and accuracy at step 0
    assert grown["identical"] == [True, True] and grown["max_abs_diff"] == [0.0, 0.0]
    assert grown["test_acc"]["step 0"] == shallow["test_acc"]["step 0"]
    assert grown["train_loss"]["step 0"] == shallow["train_loss"]["step 0"]
    assert not any(plain["identical"]) and min(plain["max_abs_diff"]) > 0
    # random-init growth (AutoGrow) changes the function at step 0; zero-init growth does not
    assert not any(random["identical"]) and min(random["max_abs_diff"]) > 0
    assert random["params"] == grown["params"] == scratch["params"]
    assert random["layers"] == grown["layers"] == scratch["layers"]
    assert grown["layers"] == plain["layers"] == shallow["layers"] + 4 == 12
    assert grown["params"] == plain["params"] > shallow["params"]
    for row in rows.values():  # step 0, after the first epoch, at the end; over 2 seeds
        assert row["seeds"] == [0, 1]
        assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in row["test_acc"].values())
        assert all(len(v) == 2 and all(x > 0 for x in v) for v in row["train_loss"].values())
        assert f"| {row['net']} " in results["table"]
    # 256 images in batches of 32: continued nets 2 epochs, scratch the whole budget of 3
    steps = {r["key"]: r["steps"] for r in results["runs"]}
    assert steps["base-seed1"] == 8 and steps["grown-random-seed1"] == 16
    assert steps["scratch-seed0"] == 24
    assert [len(c) for c in results["curves"]["grown"]] == [3, 3]  # step 0, two epochs
    assert [len(c) for c in results["curves"]["scratch"]] == [4, 4]
    assert "bit-for-bit unchanged in 2 seeds" in results["findings"][0]
    assert "the same units randomly initialised moved them" in results["findings"][0]
    assert "Against random-init growth (AutoGrow)" in results["findings"][2]
    assert "from scratch for the same total budget" in results["findings"][3]
    assert (out / "runs" / "grown-seed0" / "checkpoints" / "best.safetensors").exists()


def test_the_arms_grow_the_trained_net_as_they_say(small_data):
    """The plan's model builders, on a trained-like shallow net: zero-init growth keeps its
    outputs, random-init and plain growth change them, scratch starts anew."""
    from reslab.experiments.protocol import RunResult
    from reslab.training import FitResult

    experiment = nested.EXPERIMENT
    s = experiment.resolve("quick", dict(depth=8, width=4, seeds=(0,)))
    runs = {r.key: r for r in experiment.plan(s, small_data)}
    assert list(runs) == ["base-seed0", "shallow-seed0", "grown-seed0", "grown-random-seed0",
                          "grown-plain-seed0", "scratch-seed0"]
    base = trained_like(runs["base-seed0"].model({}).spec)
    done = {"base-seed0": RunResult(runs["base-seed0"], FitResult(None, [], None, {}, base),
                                    [])}
    x = torch.randn(16, 1, 28, 28)
    before = base(x)
    nets = {k: runs[k].model(done).eval() for k in runs if k != "base-seed0"}
    torch.testing.assert_close(nets["grown-seed0"](x), before, rtol=0, atol=1e-6)
    torch.testing.assert_close(nets["shallow-seed0"](x), before, rtol=0, atol=0)
    for changed in ("grown-random-seed0", "grown-plain-seed0", "scratch-seed0"):
        assert (nets[changed](x) - before).abs().max() > 1e-3, changed
    # the continued arms go on at the lower rate; scratch trains the whole budget at the full
    assert runs["grown-seed0"].config.lr == s.continue_lr
    assert runs["scratch-seed0"].config.epochs == s.epochs + s.continue_epochs
    assert runs["scratch-seed0"].config.lr == s.lr


@pytest.mark.parametrize(("settings", "message"), [
    (dict(stage=4), "setting stage must be an integer from 1 to 3, got 4"),
    (dict(arms=("grown", "sideways")), "setting arms must be a non-empty list of names (one "
                                       "of shallow, grown, grown_random, grown_plain, scratch)"),
    (dict(arms=("shallow",)), "setting arms must include grown"),
    (dict(seeds="0,x"), "setting seeds must be a non-empty list of integers >= 0, got"),
])
def test_settings_are_refused_before_any_work(tmp_path, small_data, settings, message):
    with pytest.raises(ConfigError) as error:
        run("nested", tmp_path / "out", quick=True, data=small_data, **settings)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def arm(name, step0, epoch1, end, identical=False, diff=3.0):
    return {"arm": name, "seeds": [0, 1], "identical": [identical] * 2,
            "max_abs_diff": [0.0 if identical else diff] * 2,
            "test_acc": {"step 0": step0, "epoch 1": epoch1, "end": end}}


def test_findings_weigh_differences_against_the_noise():
    def rows(shallow, grown, random, scratch):
        return [arm("shallow", [0.8, 0.8], [0.8, 0.8], shallow),
                arm("grown", [0.8, 0.8], [0.81, 0.81], grown, identical=True),
                arm("grown_random", [0.5, 0.6], [0.75, 0.77], random),
                arm("grown_plain", [0.1, 0.1], [0.5, 0.5], [0.8, 0.8]),
                arm("scratch", [0.1, 0.1], [0.3, 0.3], scratch)]

    level = nested.findings(rows([0.85, 0.85], [0.845, 0.85], [0.85, 0.84], [0.85, 0.85]),
                            "resnet14", 2, 2000)
    assert "bit-for-bit unchanged in 2 seeds (test accuracy 80.00 ± 0.00% at step 0)" in level[0]
    assert "randomly initialised moved them by up to 3 and took test accuracy to " \
        "55.00 ± 7.07%" in level[0] and "plain units moved them" in level[0]
    assert "no worse, as nested function classes promise" in level[1]
    assert "after one epoch 81.00 ± 0.00% vs 76.00 ± 1.41% (above)" in level[2]
    assert "function-preserving growth does not matter here" in level[2]
    assert "growing saved nothing and cost nothing" in level[3]
    better = nested.findings(rows([0.80, 0.80], [0.90, 0.90], [0.80, 0.80], [0.95, 0.95]),
                             "resnet14", 2, 2000)
    assert "better, as nested function classes allow" in better[1]
    assert "helps here, against AutoGrow's claim" in better[2]
    assert "training the deep net from the start did better" in better[3]
    worse = nested.findings(rows([0.90, 0.90], [0.80, 0.80], [0.90, 0.90], [0.70, 0.70]),
                            "resnet14", 2, 2000)
    assert "worse: the larger class did not pay off" in worse[1]
    assert "hurts here, as AutoGrow claims" in worse[2]
    assert "beat training the deep one from the start" in worse[3]
    # with a wide seed spread a 5-point gap is not resolved
    noisy = nested.findings(rows([0.80, 0.80], [0.75, 0.95], [0.80, 0.80], [0.85, 0.85]),
                            "resnet14", 2, 2000)
    assert "(noise ± 14.14 points): no worse" in noisy[1]
