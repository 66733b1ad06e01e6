"""`reslab runs`: the runs of a folder with their state, --json, --compare's figure, and
`reslab export --folder` refusing the ONNX-only options."""

import contextlib
import io
import json
import os
import shutil

import pytest
from PIL import Image

import reslab.training.listing as LISTING
from reslab.cli import main
from reslab.runtime.run_folder import RunFolder


def run_cli(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder):
    """One real tiny run, trained by `reslab train`."""
    out = tmp_path_factory.mktemp("trained") / "run"
    code, _, err = run_cli("train", "--model", "resnet14", "--data", f"folder:{image_folder}",
                           "--image-size", "16", "--channels", "1", "--epochs", "2",
                           "--train-subset", "96", "--batch-size", "32", "--val-size", "40",
                           "--precision", "fp32", "--quiet", "--out", str(out))
    assert code == 0, err
    return out


def _copy(run, folder, name, started):
    """A copy of ``run`` as ``folder/name``, said to have started at ``started``."""
    copy = folder / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard", "*.png"))
    record = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(record | {"started": started}))
    return copy


@pytest.fixture
def runs(trained, tmp_path):
    """A folder of runs in every state, and two folders that are no run."""
    folder = tmp_path / "runs"
    folder.mkdir()
    _copy(trained, folder, "finished", "2024-12-04T10:00:00+00:00")
    interrupted = _copy(trained, folder, "interrupted", "2024-12-04T09:00:00+00:00")
    (interrupted / "results.json").unlink()
    (interrupted / ".lock").unlink()  # the listing's probe must not create it
    running = _copy(trained, folder, "running", "2024-12-04T11:00:00+00:00")
    (running / "results.json").unlink()
    damaged = _copy(trained, folder, "damaged", "2024-12-04T08:00:00+00:00")
    (damaged / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 2.0}\n{"epoch": 2, "tr')
    (folder / "photos").mkdir()
    (folder / "photos" / "cat.png").write_bytes(b"not a run")
    model = folder / "exported"  # a timm model folder: a config.json, but not a run's
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    (model / "model.safetensors").write_bytes(b"")
    lock = RunFolder(running).lock()  # as a training process holds it
    yield folder
    lock.unlock()


def test_the_listing_gives_each_runs_state_and_numbers_oldest_first(trained, runs):
    results = json.loads((trained / "results.json").read_text())
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    listing = LISTING.list_runs(runs)
    assert [(r.name, r.state) for r in listing.runs] == [
        ("damaged", "damaged"), ("interrupted", "interrupted"), ("finished", "finished"),
        ("running", "running")]
    assert listing.skipped == ["exported", "photos"] and listing.not_read == 0
    damaged, interrupted, finished, running = listing.runs
    assert damaged.problem == "metrics.jsonl line 2 is not JSON"
    assert (finished.model, finished.epochs_done, finished.epochs_planned) == ("resnet14", 2, 2)
    assert finished.data.startswith("folder:")
    assert finished.test_acc == results["accuracy"]
    assert finished.best_val_acc == results["best_val_acc"]
    assert finished.train_seconds == pytest.approx(results["train_seconds"])
    # without results.json, the best validation accuracy and time come from metrics.jsonl
    assert interrupted.test_acc is None and interrupted.epochs_done == 2
    assert interrupted.best_val_acc == max(row["val_acc"] for row in metrics)
    assert interrupted.train_seconds == pytest.approx(sum(row["seconds"] for row in metrics))
    assert running.started == "2024-12-04T11:00:00+00:00"
    assert not (runs / "interrupted" / ".lock").exists()


def test_the_table_has_one_row_per_run_and_a_line_per_note(runs):
    code, out, err = run_cli("runs", str(runs))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "state", "model", "data", "started", "epochs", "best",
                                "val", "test", "time"]
    rows = {line.split()[0]: line.split() for line in lines[2:6]}
    assert list(rows) == ["damaged", "interrupted", "finished", "running"]
    assert rows["finished"][1:3] == ["finished", "resnet14"] and "2/2" in rows["finished"]
    assert rows["interrupted"][-3] == "-"  # no test accuracy
    assert "damaged: damaged: metrics.jsonl line 2 is not JSON" in lines
    assert "skipped 2 folders that hold no reslab run: exported, photos" in lines


def test_json_gives_the_same_listing(runs):
    code, out, _ = run_cli("runs", str(runs), "--json")
    assert code == 0
    listing = json.loads(out)
    assert listing == json.loads(json.dumps(LISTING.list_runs(runs).to_dict()))
    assert [r["state"] for r in listing["runs"]] == ["damaged", "interrupted", "finished",
                                                     "running"]
    assert listing["runs"][2]["epochs_done"] == 2 and listing["skipped"] == ["exported",
                                                                               "photos"]


def test_a_damaged_config_shows_as_damaged_and_a_run_folder_alone_lists_itself(trained,
                                                                                tmp_path):
    run = _copy(trained, tmp_path, "broken", "2024-12-04T08:00:00+00:00")
    (run / "config.json").write_text("{not json")
    [info] = LISTING.list_runs(run).runs
    assert (info.name, info.state, info.problem) == ("broken", "damaged",
                                                      "config.json is not valid JSON")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_pipe_in_place_of_a_runs_file_is_damaged_not_waited_on(trained, tmp_path):
    run = _copy(trained, tmp_path, "piped", "2024-12-04T08:00:00+00:00")
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")  # read_text would block here forever
    [info] = LISTING.list_runs(run).runs
    assert (info.state, info.problem) == ("damaged", "metrics.jsonl is not a regular file of "
                                          "at most 16 MB, as reslab writes it")


def test_only_the_most_recent_folders_are_opened_past_the_limit(trained, tmp_path, monkeypatch):
    for i in range(30):
        (tmp_path / f"other{i:02d}").mkdir()
    os.utime(_copy(trained, tmp_path, "newest", "2024-12-04T08:00:00+00:00"))  # changed now
    opened = []
    is_run = LISTING.is_run
    monkeypatch.setattr(LISTING, "is_run", lambda path: opened.append(path) or is_run(path))
    listing = LISTING.list_runs(tmp_path, limit=5)
    assert opened[0] == tmp_path and len(opened[1:]) == 5 and listing.not_read == 26
    assert [r.name for r in listing.runs] == ["newest"]
    code, out, _ = run_cli("runs", str(tmp_path), "--limit", "5")
    assert code == 0
    assert "not read: 26 older folders" in out and "--limit N opens more" in out


def test_a_missing_folder_and_a_bad_limit_are_refused_in_one_line(tmp_path):
    code, _, err = run_cli("runs", str(tmp_path / "nowhere"))
    assert code == 1 and err.count("\n") == 1 and "is no folder" in err
    code, _, err = run_cli("runs", str(tmp_path), "--limit", "0")
    assert code == 1 and "--limit must be at least 1" in err
    code, out, _ = run_cli("runs", str(tmp_path))
    assert code == 0 and out == f"no reslab runs in {tmp_path}\n"


def test_compare_draws_the_runs_curves_in_one_png(runs, tmp_path):
    out = tmp_path / "curves.png"
    code, stdout, err = run_cli("runs", str(runs), "--compare", "finished", "interrupted",
                                str(runs / "running"), "--out", str(out))
    assert code == 0, err
    assert stdout == (f"wrote {out}: training loss and validation accuracy of 3 runs "
                      "(finished, interrupted, running)\n")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 300


@pytest.mark.parametrize("bad, message", [
    ("finished/curves.png", "is inside"),  # in a run it reads
    ("curves.jpg", "must end in .png"),
    ("figures.png", "is a folder"),
])
def test_compare_refuses_a_bad_output_before_reading_a_run(runs, monkeypatch, bad, message):
    (runs / "figures.png").mkdir()
    monkeypatch.setattr(LISTING, "read_history", lambda run: pytest.fail("read a run"))
    code, _, err = run_cli("runs", str(runs), "--compare", "finished", "interrupted",
                           "--out", str(runs / bad))
    assert code == 1 and message in err and err.count("\n") == 1
    assert not (runs / "finished" / "curves.png").exists()


def test_compare_refuses_what_it_cannot_draw(runs, tmp_path):
    out = str(tmp_path / "c.png")
    for argv, message in [
        (["damaged"], "run " + str(runs / "damaged") + " is damaged: metrics.jsonl line 2"),
        (["photos"], "is no reslab run"),
        (["nothing"], "no such run folder"),
        ([], "give the runs to compare"),
    ]:
        compare = ["--compare", "finished", *argv, "--out", out] if argv else ["--out", out]
        code, _, err = run_cli("runs", str(runs), *compare)
        assert code == 1 and message in err, err
    code, _, err = run_cli("runs", str(runs), "--compare", "finished")
    assert code == 1 and "--out curves.png" in err
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("options, named", [
    (["--opset", "13"], "--opset shapes"),
    (["--include-normalization"], "--include-normalization shapes"),
    (["--no-tta"], "--tta shapes"),
    (["--tta", "--opset", "18"], "--opset, --tta shape"),
])
def test_export_folder_refuses_the_onnx_only_options(trained, tmp_path, options, named):
    code, _, err = run_cli("export", str(trained), "--folder", str(tmp_path / "m"), *options)
    assert code == 1 and err.count("\n") == 1
    assert f"{named} an ONNX graph; --folder writes the weights as they are" in err
    assert not (tmp_path / "m").exists()


def test_config_json_keeps_the_start_time_when_a_run_is_extended(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_config({"epochs": 2})
    started = json.loads(run.config.read_text())["started"]
    record = json.loads(run.config.read_text()) | {"started": "2024-12-04T08:00:00+00:00"}
    run.config.write_text(json.dumps(record))
    run.write_config({"epochs": 4})  # --resume --epochs 4 rewrites it
    record = json.loads(run.config.read_text())
    assert record["started"] == "2024-12-04T08:00:00+00:00" and record["config"]["epochs"] == 4
    assert started[:2] == "20" and "T" in started
