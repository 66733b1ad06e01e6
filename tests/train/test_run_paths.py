"""What a user meets around a run: the start line tells what is trained on (a subset, one
epoch, one step), and resuming a finished run refuses without touching a file of it."""

import contextlib
import hashlib
import io

import pytest

import reslab
from reslab.cli import main

OPTIONS = dict(model="resnet14", image_size=16, channels=1, val_size=40, batch_size=32,
               train_subset=32, epochs=1, precision="fp32", lr=0.05)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, image_folder):
    """A finished run of 1 epoch of 1 step on 32 of the folder's 260 training images, and
    the progress it showed."""
    out = tmp_path_factory.mktemp("paths") / "run"
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        reslab.train(data=f"folder:{image_folder}", out=str(out), **OPTIONS)
    return out, shown.getvalue()


def test_the_start_line_shows_the_subset_trained_on_and_singular_counts(finished):
    _, shown = finished
    start = next(line for line in shown.splitlines() if line.startswith("resnet14: "))
    assert ": 32 train (subset of 260) / 40 val / 60 test images, 1x16x16 |" in start
    assert "| 1 epoch of 1 step |" in start


def _hashes(run):
    return {p.relative_to(run): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra", [[], ["--epochs", "1"]])
def test_resuming_a_finished_run_refuses_and_leaves_every_file_as_it_was(finished, capsys,
                                                                         extra):
    run, _ = finished
    before = _hashes(run)
    assert main(["train", "--resume", str(run), "--quiet", *extra]) == 1
    err = capsys.readouterr().err
    assert err == (f"reslab: error: {run} already finished its 1 epoch; `--epochs M` (M > 1) "
                   "extends it\n")
    assert _hashes(run) == before


def test_init_from_takes_a_run_folder_as_eval_and_predict_do(finished, image_folder, tmp_path):
    run, _ = finished
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        result = reslab.train(data=f"folder:{image_folder}", out=str(tmp_path / "next"),
                              init_from=str(run), **OPTIONS)
    best = run / "checkpoints" / "best.safetensors"
    assert f"init: weights from {best} (reslab checkpoint of resnet14" in shown.getvalue()
    assert result.test["images"] == 60


@pytest.mark.parametrize("where", ["run", "run/inside", "checkpoint in run"])
def test_a_new_run_may_not_go_into_the_run_it_starts_from(finished, image_folder, capsys,
                                                          where):
    run, _ = finished
    source = run / "checkpoints" / "best.safetensors" if where.startswith("checkpoint") else run
    out = run / "inside" if where == "run/inside" else run
    before = _hashes(run)
    assert main(["train", "--init-from", str(source), "--out", str(out), "--data",
                 f"folder:{image_folder}", "--model", "resnet14", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"reslab: error: --out {out} is inside ") and "an input of this run" \
        in err and err.count("\n") == 1
    assert _hashes(run) == before and not (run / "inside").exists()
