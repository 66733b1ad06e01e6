import json

import pytest

from reslab.errors import UnknownNameError
from reslab.experiments import cost, run
from reslab.models import build, create_model

from .conftest import TINY, check_figure, check_report

# torchvision's parameter counts (DESIGN.md), which reslab's zoo reproduces
TORCHVISION = {"resnet50": 25_557_032, "resnext50_32x4d": 25_028_904,
               "wide_resnet50_2": 68_883_240}


def test_cost_report(tmp_path, small_data, figures):
    out = tmp_path / "cost"
    results = run("cost", out, quick=True, data=small_data, image_size=32, inference_batch=1,
                  warmup=0, iterations=1, **TINY | dict(epochs=1))
    check_report(out, results)
    check_figure(figures["cost.png"], "images/s (inference", "test error (%, test images)")
    # the timings are kept: a continued experiment does not measure again
    assert json.loads((out / "measured.json").read_text())["models"] == results["models"]
    models = results["models"]
    assert [m["model"] for m in models] == list(TORCHVISION)
    for m in models:
        assert m["params"] == TORCHVISION[m["model"]]
        assert m["params"] == sum(p.numel() for p in create_model(m["model"]).parameters())
        assert m["images_per_s"] > 0 and f"{m['params']:,}" in results["table"]
    # MACs at 32x32 are (32/224)^2 of those at 224 up to the stem's rounding
    assert models[0]["macs"] / 4.089e9 == pytest.approx((32 / 224) ** 2, rel=0.25)
    small = {r["net"]: r for r in results["small"]}
    assert list(small) == ["resnet", "resnext", "wide"]
    assert small["resnext"]["groups"] == 8 and small["resnet"]["groups"] == 1
    # ResNeXt's grouped 3x3 convs are twice as wide at close to the same MACs; the wide net's
    # cost over twice as much
    assert small["resnext"]["macs"] / small["resnet"]["macs"] < 1.5
    assert small["wide"]["macs"] / small["resnet"]["macs"] > 2
    for r in small.values():
        spec = cost.small_spec(r["net"], small_data, TINY["width"])
        assert r["params"] == sum(p.numel() for p in build(spec).parameters())
        assert 0 <= r["test_error"] <= 1


def test_an_unknown_model_is_refused_before_any_work(tmp_path, small_data):
    with pytest.raises(UnknownNameError, match="unknown model 'resnet5O'; closest: .*resnet50"):
        run("cost", tmp_path / "cost", data=small_data, models="resnet50,resnet5O")
    assert not (tmp_path / "cost").exists()


def test_findings_compare_speed_and_accuracy():
    models = [{"model": "resnet50", "params": 25.6e6, "macs": 4.1e9, "images_per_s": 8.0},
              {"model": "resnext50_32x4d", "params": 25.0e6, "macs": 4.2e9,
               "images_per_s": 6.0}]

    def small(resnext_error):
        return [{"net": "resnet", "test_error": 0.10, "macs": 1.0},
                {"net": "resnext", "test_error": resnext_error, "macs": 1.2},
                {"net": "wide", "test_error": 0.09, "macs": 2.7}]

    found = cost.findings(models, small(0.08), 10_000)
    assert "resnext50_32x4d has 0.98x its parameters and 1.02x its MACs, and runs at 0.75x" \
        in found[0]
    assert "resnext50_32x4d does the fewest MACs per second" in found[1]
    assert "bought accuracy" in found[2]
    assert "did not pay off" in cost.findings(models, small(0.12), 10_000)[2]
    assert "cannot rank them" in cost.findings(models, small(0.11), 1000)[2]
