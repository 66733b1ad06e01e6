"""A signal after the last training step — while the last epoch's files are written, or during
the final test — ends the run with the same kind of line as one mid-epoch (exit 130, saying
how to go on), and ``--resume`` then runs the test and finishes the run."""

import json
import os
import signal
import subprocess
import sys

import pytest

from .test_crash_resume import EPOCHS, TOTAL, start, train_args
from .test_crash_resume import wait_until as wait_for


def _stop_at(image_folder, out, pause, sig, monkeypatch):
    paused = out.with_suffix(".paused")
    monkeypatch.setenv("RESLAB_GO", str(out.with_suffix(".go")))
    process = start(train_args(image_folder, out), pause, paused)
    wait_for(process, paused.exists)
    process.send_signal(sig)
    out.with_suffix(".go").touch()
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize(("pause", "when"), [
    (f"after-checkpoint:{TOTAL},{EPOCHS}", "after the last epoch, before the test"),
    (f"evaluation:{EPOCHS + 1}", "during the test"),  # the validations, then the test
])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_training_says_so_and_resume_runs_the_test(pause, when, sig, tmp_path,
                                                                   image_folder, monkeypatch):
    out = tmp_path / "run"
    code, err = _stop_at(image_folder, out, pause, sig, monkeypatch)
    assert code == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"reslab: stopped by {sig.name} {when}; training is done and saved in {out}; continue "
        f"with: reslab train --resume {out} (runs the test)")
    assert not (out / "results.json").exists()
    assert not list(out.rglob(".*.part"))

    resumed = subprocess.run([sys.executable, "-m", "reslab", "train", "--resume", str(out)],
                             env=os.environ | {"OMP_NUM_THREADS": "1"}, text=True,
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == EPOCHS and results["steps"] == TOTAL
    assert len((out / "metrics.jsonl").read_text().splitlines()) == EPOCHS
