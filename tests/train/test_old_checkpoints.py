"""Checkpoints written by an older reslab (format ``reslab-checkpoint/1``, kept in
tests/fixtures/checkpoints/, see its make_fixtures.py) load with today's: eval, predict,
summary and resume, run as a user types them, give the numbers that reslab gave."""

import json
import shutil
from pathlib import Path

import pytest
from tests.fixtures.checkpoints.make_fixtures import write_images

from reslab.cli import main

FIXTURES = Path(__file__).parent.parent / "fixtures" / "checkpoints"
# what eval, predict and the resumed run gave when the fixtures were written
EVAL_BEST = {"accuracy": 0.1, "loss": 2.3047579447428386}  # the run's results.json too
EVAL_LAST = {"accuracy": 0.16666666666666666, "loss": 2.2530441284179688}
PREDICTED = ["data/test/class3/13.png: class2 0.118, class5 0.113, class4 0.111",
             "data/test/class0/0.png: class2 0.116, class5 0.115, class4 0.113"]
RESUMED_EPOCH_4_TRAIN_LOSS = 2.240369987487793


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """A copy of the old run beside the images it trained on (its config names them as
    ``folder:data``, relative to where it ran)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    write_images(tmp_path / "data")
    return tmp_path / "run"


def test_the_old_files_are_the_old_format_with_and_without_training_state():
    from reslab.models import read_metadata

    last = read_metadata(FIXTURES / "run" / "checkpoints" / "last.safetensors")
    best = read_metadata(FIXTURES / "run" / "checkpoints" / "best.safetensors")
    assert last["format"] == best["format"] == "reslab-checkpoint/1"
    assert "train_state" in last and "train_state" not in best


def test_eval_gives_the_old_accuracy_and_loss(old_run, capsys):
    for target, expected in (("run", EVAL_BEST), ("run/checkpoints/last.safetensors",
                                                  EVAL_LAST)):
        assert main(["eval", target, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["images"] == 30 and got["accuracy"] == expected["accuracy"]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_predict_gives_the_old_probabilities(old_run, capsys):
    images = [line.split(":")[0] for line in PREDICTED]
    assert main(["predict", "run/checkpoints/best.safetensors", *images, "--top-k", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == PREDICTED


def test_summary_describes_the_old_network(old_run, capsys):
    for checkpoint in ("best", "last"):
        assert main(["summary", f"run/checkpoints/{checkpoint}.safetensors", "--json"]) == 0
        total = json.loads(capsys.readouterr().out)["total"]
        assert total == {"params": 5122, "flops": 1085760, "macs": 542880}


def test_an_old_run_resumes_and_trains_on_as_it_did(old_run, capsys):
    assert main(["train", "--resume", "run", "--epochs", "4", "--quiet"]) == 0
    rows = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] == pytest.approx(RESUMED_EPOCH_4_TRAIN_LOSS, rel=1e-6)
    results = json.loads((old_run / "results.json").read_text())
    assert results["steps"] == 40 and results["best_epoch"] == 1
    assert results["loss"] == pytest.approx(EVAL_BEST["loss"], rel=1e-6)
