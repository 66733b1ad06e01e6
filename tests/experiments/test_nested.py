import pytest
import torch

from reslab.errors import ConfigError
from reslab.experiments import nested
from reslab.experiments.nested import grow
from reslab.models import ResNetSpec, build, get_spec

from .conftest import TINY, check_report

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


def test_nested_experiment_report(tmp_path, small_data):
    results = nested.run(tmp_path / "nested", quick=True, data=small_data,
                         **TINY | dict(depth=8, epochs=1, continue_epochs=1))
    check_report(tmp_path / "nested", results)
    rows = {r["key"]: r for r in results["rows"]}
    assert list(rows) == ["shallow", "grown", "grown_random", "grown_plain"]
    shallow, grown, plain = rows["shallow"], rows["grown"], rows["grown_plain"]
    random = rows["grown_random"]
    # the invariants that hold whatever the data: same function and accuracy at step 0
    assert grown["identical_at_step0"] and grown["max_abs_diff_at_step0"] == 0
    assert grown["test_acc_at_step0"] == shallow["test_acc_at_step0"]
    assert not plain["identical_at_step0"] and plain["max_abs_diff_at_step0"] > 0
    # random-init growth (AutoGrow) changes the function at step 0; zero-init growth does not
    assert not random["identical_at_step0"] and random["max_abs_diff_at_step0"] > 0
    assert random["params"] == grown["params"] and random["layers"] == grown["layers"]
    assert "randomly initialised changed the function" in results["findings"][3]
    assert grown["layers"] == plain["layers"] == shallow["layers"] + 4 == 12
    assert grown["params"] == plain["params"] > shallow["params"]
    assert [len(results["curves"][k]) for k in rows] == [2, 2, 2, 2]  # step 0, one epoch
    assert "bit-for-bit unchanged" in results["findings"][0]
    assert (tmp_path / "nested" / "runs" / "grown" / "checkpoints" / "best.safetensors").exists()


def test_findings_weigh_differences_against_sampling_noise():
    def rows(shallow, grown, plain):
        def row(key, after, step0=0.8, identical=True):
            return {"key": key, "test_acc_at_step0": step0, "test_acc_after": after,
                    "identical_at_step0": identical, "max_abs_diff_at_step0": 0.0 if identical
                    else 3.0}
        return [row("shallow", shallow), row("grown", grown),
                row("grown_plain", plain, step0=0.1, identical=False)]

    level = nested.findings(rows(0.85, 0.845, 0.80), "resnet14", 2, 2000)
    assert "bit-for-bit unchanged (test accuracy 80.00% before and 80.00% after)" in level[0]
    assert "level within the sampling noise of 2,000 test images" in level[1]
    assert "from 80.00% to 10.00%" in level[2] and "(below the residual growth's 84.50%)" \
        in level[2]
    assert "better" in nested.findings(rows(0.85, 0.90, 0.90), "resnet14", 2, 2000)[1]
    worse = nested.findings(rows(0.90, 0.85, 0.85), "resnet14", 2, 2000)
    assert "worse beyond sampling noise" in worse[1] and "level with" in worse[2]
