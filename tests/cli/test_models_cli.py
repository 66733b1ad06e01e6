import json

import pytest

import reslab
from reslab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_prints_the_seed_listing(capsys):
    code, out, err = run(capsys, "summary", "d2l_resnet18", "--input", "1x224x224")
    assert code == 0 and err == ""
    assert out.startswith("d2l_resnet18 at 1x224x224")
    for shape in ("64x56x56", "128x28x28", "256x14x14", "512x7x7", "512x1x1"):
        assert shape in out
    assert "11,178,378" in out and "1.73 G" in out and "FLOPs = 2 x MACs" in out


def test_summary_json(capsys):
    code, out, _ = run(capsys, "summary", "resnet18", "--json")
    data = json.loads(out)
    assert code == 0 and data["model"] == "resnet18" and data["input"] == [3, 224, 224]
    assert data["total"]["macs"] / 1e9 == pytest.approx(1.81, rel=0.01)
    assert [row["name"] for row in data["rows"]][:2] == ["stem", "layer1"]


def test_compare(capsys):
    code, out, _ = run(capsys, "summary", "--compare", "resnet50", "resnext50_32x4d")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["resnet50", "resnext50_32x4d"]
    assert "25,557,032" in out and "25,028,904 (-2.1%)" in out and "4.23 G (+3.5%)" in out
    # NAME plus --compare, as JSON
    code, out, _ = run(capsys, "summary", "resnet50", "--compare", "resnext50_32x4d", "--json")
    assert [m["model"] for m in json.loads(out)["models"]] == ["resnet50", "resnext50_32x4d"]


def test_models_lists_the_whole_zoo(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    zoo = reslab.list_models()
    assert [line.split()[0] for line in out.splitlines()[2 : 2 + len(zoo)]] == zoo
    resnet18 = next(line for line in out.splitlines() if line.startswith("resnet18 "))
    assert resnet18.split() == ["resnet18", "basic", "18", "11,689,512", "1.81", "G",
                                "3x224x224"]


def test_models_pattern_and_json(capsys):
    code, out, _ = run(capsys, "models", "resnext*", "--json")
    data = json.loads(out)
    assert [m["name"] for m in data] == reslab.list_models("resnext*")
    assert data[0]["input"] == [3, 224, 224]


@pytest.mark.parametrize("argv, message", [
    (["summary", "resnt50"], "closest: resnet50"),
    (["summary", "resnet18", "--input", "1x224"], "not CxHxW"),
    (["summary", "resnet18", "--input", "1x224x224"], "takes 3-channel images"),
    (["summary", "lenet_bn", "--input", "32"], "exactly 1x28x28"),
    (["summary"], "needs a model name"),
    (["models", "nothing*"], "no model matches"),
])
def test_errors_are_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("reslab: error: ") and message in err
    assert err.count("\n") == 1


def test_the_kept_zoo_figures_are_what_summary_computes():
    # `reslab models` reads them instead of building every network; after a change to a
    # spec or a unit, `python -m benchmarks.zoo_figures` rewrites them
    from benchmarks.zoo_figures import computed_table
    from reslab.zoo_figures_table import FIGURES

    assert computed_table() == FIGURES


def test_models_lists_timms_family_with_its_figures(capsys):
    code, out, _ = run(capsys, "models", "resnetrs*")
    rows = [line.split() for line in out.splitlines()[2:4]]
    # depth: 3 stem convs and the stem's strided conv, 3 per unit, the classifier
    assert rows == [["resnetrs50", "bottleneck", "53", "35,691,912", "2.28", "G", "3x160x160"],
                    ["resnetrs101", "bottleneck", "104", "63,618,696", "6.01", "G",
                     "3x192x192"]]
