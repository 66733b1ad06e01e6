"""Ctrl-C (SIGINT) or SIGTERM mid-epoch: the step finishes, ``last`` is written with the
loader's position, one line says how to continue, and ``--resume`` ends bitwise where an
uninterrupted run ends. A second Ctrl-C stops at once and leaves the last checkpoint alone."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from reslab.models import read_metadata
from reslab.runtime.checkpoint import load_checkpoint

from .test_crash_resume import STEPS_PER_EPOCH, TIMING, finish, metrics, start, train_args
from .test_crash_resume import wait_until as wait_for


def paused_run(image_folder, out, step, *extra):
    paused = out.with_suffix(".paused")
    args = train_args(image_folder, out)
    at = args.index("--checkpoint-every")
    del args[at:at + 2]  # the signal, not a schedule, decides where the checkpoint is
    process = start([*args, *extra], f"after-step:{step}", paused)
    wait_for(process, paused.exists)
    return process


def go(out):
    out.with_suffix(".go").touch()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_saves_the_step_and_resume_ends_bitwise_equal(tmp_path, image_folder,
                                                                          monkeypatch, sig):
    reference_dir, out = tmp_path / "reference", tmp_path / "stopped"
    reference = start(train_args(image_folder, reference_dir))
    monkeypatch.setenv("RESLAB_GO", str(out.with_suffix(".go")))
    stopped = paused_run(image_folder, out, 2)  # inside epoch 1 (4 steps), no checkpoint yet
    assert not (out / "checkpoints" / "last.safetensors").exists()
    stopped.send_signal(sig)
    go(out)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line == (f"reslab: stopped by {sig.name} at epoch 1, step 2 (batch 2/"
                    f"{STEPS_PER_EPOCH} of the epoch), saved in {out}; continue with: "
                    f"reslab train --resume {out}")
    saved = read_metadata(out / "checkpoints" / "last.safetensors")
    assert (saved["step"], saved["epoch"]) == (2, 0)

    resumed = subprocess.run([sys.executable, "-m", "reslab", "train", "--resume", str(out)],
                             env=os.environ | {"OMP_NUM_THREADS": "1"}, text=True,
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    finish(reference, "reference")
    expected = load_checkpoint(reference_dir / "checkpoints" / "last.safetensors").weights
    got = load_checkpoint(out / "checkpoints" / "last.safetensors").weights
    assert all(torch.equal(t, got[k]) for k, t in expected.items())
    for row, expected_row in zip(metrics(out), metrics(reference_dir), strict=True):
        assert {k: v for k, v in row.items() if k not in TIMING} == \
            {k: v for k, v in expected_row.items() if k not in TIMING}


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_the_last_checkpoint(tmp_path, image_folder,
                                                                      monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("RESLAB_GO", str(out.with_suffix(".go")))
    # a checkpoint at every step: step 2's is on disk while the run waits inside step 3
    process = paused_run(image_folder, out, 3, "--checkpoint-every", "1")
    last = out / "checkpoints" / "last.safetensors"
    assert read_metadata(last)["step"] == 2
    before = last.read_bytes()
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals sent at once could arrive as one
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "reslab: interrupted"
    assert "Traceback" not in err
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*.part"))
