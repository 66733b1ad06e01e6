"""Every preset of ``reslab train --preset P``, end to end on tiny data: it runs, finishes,
prints the test-accuracy line and leaves a run folder whose results.json says the same."""

import json
import re

import pytest

from reslab.training.config import PRESETS

from .conftest import cli

# the data each preset trains on (paper-cifar: CIFAR-10; the others Fashion-MNIST)
DATA = {name: "cifar10" if name == "paper-cifar" else "fashion-mnist" for name in PRESETS}
# d2l resizes to 96x96: 32 keeps the same network (its adaptive pool) at a ninth of the cost
# (d2l keeps its own val_size 0: all training images, as D2L)
SHRINK = {"d2l": ["--resize", "32"]}


def test_the_matrix_covers_every_preset():
    assert set(DATA) == {"fast", "accurate", "best", "d2l", "paper-cifar"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_trains_end_to_end(name, fixtures, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--preset", name, "--data-dir", fixtures[DATA[name]],
                 "--train-subset", 64, "--batch-size", 32, "--max-steps", 2,
                 *SHRINK.get(name, ["--val-size", 20]), "--quiet", "--out", out)
    assert result.code == 0, result
    results = json.loads((out / "results.json").read_text())
    match = re.search(r"^test accuracy (\d\.\d{4}) on (\d+) images", result.out, re.M)
    assert match, result
    assert float(match[1]) == round(results["accuracy"], 4)
    assert int(match[2]) == results["images"] == (24 if name == "paper-cifar" else 40)
    assert f"run directory: {out}" in result.out
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["model"] == PRESETS[name].get("model", "fast_resnet10")
    assert (out / "checkpoints" / "last.safetensors").exists()
