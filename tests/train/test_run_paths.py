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
