import pytest
import torch
from torch.overrides import TorchFunctionMode

from reslab.errors import ConfigError
from reslab.experiments import degradation
from reslab.experiments.common import cifar_spec, paper_recipe
from reslab.models import build

from .conftest import TINY, check_report


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


def test_degradation_report(tmp_path, small_data):
    out = tmp_path / "degradation"
    results = degradation.run(out, quick=True, data=small_data, depths=(8, 14), **TINY)
    check_report(out, results)
    assert [(r["net"], r["depth"], r["plain"]) for r in results["rows"]] == [
        ("plain8", 8, True), ("plain14", 14, True), ("resnet8", 8, False),
        ("resnet14", 14, False)]
    for row in results["rows"]:
        assert 0 <= row["train_error"] <= 1 and 0 <= row["test_error"] <= 1
        curve = results["curves"][row["net"]]
        assert [p["step"] for p in curve] == [8, 16]  # 256 images in batches of 32, 2 epochs
        assert curve[-1]["train_error"] == row["train_error"]
    by = {r["net"]: r for r in results["rows"]}
    assert by["plain14"]["params"] == by["resnet14"]["params"]
    assert results["settings"]["train_size"] == 2560  # quick mode's; the data was smaller
    assert len(results["findings"]) == 3
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(by)


def test_findings_follow_the_numbers_either_way():
    def rows(plain20, plain56, res20, res56):
        make = lambda net, depth, plain, error: {  # noqa: E731
            "net": net, "depth": depth, "plain": plain, "train_error": error,
            "test_error": error}
        return [make("plain20", 20, True, plain20), make("plain56", 56, True, plain56),
                make("resnet20", 20, False, res20), make("resnet56", 56, False, res56)]

    paper = degradation.findings(rows(0.10, 0.15, 0.08, 0.06), 10_000)
    assert "plain56 ended with higher training error than plain20 (15.00% vs 10.00%)" in paper[0]
    assert "as He et al. 2015 report" in paper[0]
    assert "deeper net trains better" in paper[1] and "lowered test error" in paper[2]
    other = degradation.findings(rows(0.15, 0.10, 0.06, 0.12), 10_000)
    assert "lower training error" in other[0] and "unlike" in other[0]
    assert "has not overtaken" in other[1] and "did not help" in other[2]
    # 2 points apart on 100 test images is noise, and the report says so
    assert "level within the sampling noise of 100 test images" in \
        degradation.findings(rows(0.15, 0.10, 0.06, 0.12), 100)[2]


def test_settings_are_checked(tmp_path, small_data):
    with pytest.raises(ConfigError, match="unknown experiment setting 'depth'.*depths"):
        degradation.run(tmp_path / "a", data=small_data, depth=20)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.md").write_text("old")
    with pytest.raises(ConfigError, match="not empty"):
        degradation.run(tmp_path / "b", data=small_data)


def test_the_recipe_trains_in_the_precision_asked_for(small_data):
    settings = degradation.DegradationSettings()
    assert paper_recipe(settings, small_data).precision == "auto"  # bf16 where it is fast
    fp32 = degradation.DegradationSettings(precision="fp32")
    recipe = paper_recipe(fp32, small_data)
    assert (recipe.precision, recipe.lr, recipe.batch_size, recipe.epochs) == ("fp32", 0.1, 128, 6)
    with pytest.raises(ConfigError, match="precision must be one of"):
        paper_recipe(degradation.DegradationSettings(precision="fp17"), small_data)


def test_an_interrupted_experiment_continues_without_retraining_finished_runs(
        tmp_path, small_data, monkeypatch):
    import reslab.experiments.common as common

    calls, real_fit = [], common.fit

    def fit_until_the_third(model, data, config, **options):
        calls.append(config.model)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C twice, during the third net
        return real_fit(model, data, config, **options)

    monkeypatch.setattr(common, "fit", fit_until_the_third)
    out, settings = tmp_path / "report", dict(depths=(8, 14), **TINY)
    with pytest.raises(KeyboardInterrupt):
        degradation.run(out, quick=True, data=small_data, **settings)
    finished = {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/results.json")}
    assert sorted(finished) == ["plain14", "plain8"]
    calls.clear()
    results = degradation.run(out, quick=True, data=small_data, **settings)
    assert calls == ["resnet8", "resnet14"]  # the finished plain nets were read back
    assert all((out / "runs" / n / "results.json").read_bytes() == b
               for n, b in finished.items())
    check_report(out, results)
    assert {r["net"] for r in results["rows"]} == {"plain8", "plain14", "resnet8", "resnet14"}
    with pytest.raises(ConfigError, match=r"other settings \(epochs\)"):
        degradation.run(out, quick=True, data=small_data, **(settings | {"epochs": 3}))
