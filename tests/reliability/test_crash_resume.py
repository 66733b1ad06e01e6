"""A run SIGKILLed at any point and resumed ends bitwise where an uninterrupted run ends.

Every run is the real CLI in a subprocess (``pausing_cli.py`` is ``reslab`` that can wait at an
exact point: mid-checkpoint-write, in evaluation...). The reference and the interrupted runs go
side by side, one thread each.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reslab.errors import WeightsError
from reslab.models import read_metadata
from reslab.runtime.checkpoint import load_checkpoint

PAUSING_CLI = str(Path(__file__).with_name("pausing_cli.py"))
STEPS_PER_EPOCH, EPOCHS = 4, 2  # 128 images / batch 32
TOTAL = STEPS_PER_EPOCH * EPOCHS
TIMING = {"seconds", "images_per_s"}  # the only fields of a metrics row that may differ


def train_args(image_folder, out) -> list[str]:
    return ["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
            "--image-size", "16", "--channels", "1", "--epochs", str(EPOCHS),
            "--train-subset", "128", "--batch-size", "32", "--val-size", "40",
            "--ema-decay", "0.9",  # EMA state has to survive the kill too
            "--deterministic", "--checkpoint-every", "1", "--threads", "1",
            "--quiet", "--out", str(out)]


def start(args, pause=None, paused=None) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    if pause is not None:
        env |= {"RESLAB_PAUSE": pause, "RESLAB_PAUSED": str(paused)}
    return subprocess.Popen([sys.executable, PAUSING_CLI, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until(process, arrived, timeout=240.0):
    """Poll ``arrived()`` until it returns something true; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := arrived():
            return found
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (rc {process.returncode}) before the kill point:\n{err}")
        time.sleep(0.02)
    pytest.fail(f"the run did not reach the kill point within {timeout} s")


def checkpoint_at_step(last: Path, step: int):
    def arrived():
        try:
            meta = read_metadata(last)
        # not written yet; or replaced by the next checkpoint while safe_open read it (it opens
        # the file twice: header, then size, so a rename in between reads as a size mismatch)
        except (WeightsError, RuntimeError):
            return None
        return meta["step"] >= step

    return arrived


def finish(process, name, timeout=300) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{name} run: exit code {process.returncode}\n{err}"
    assert "Traceback" not in err, f"{name} run:\n{err}"
    return out, err


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_where_an_uninterrupted_run_ends(tmp_path, image_folder):
    reference_dir = tmp_path / "reference"
    reference = start(train_args(image_folder, reference_dir))
    # name -> the pause point (see pausing_cli.py), or None to kill while training runs on
    kill_points = {
        "mid-epoch": None,  # as soon as a checkpoint at step >= 2 is there
        # half of the checkpoint that closes epoch 1 written (after validation, after best)
        "during a checkpoint write": f"mid-checkpoint:{STEPS_PER_EPOCH},1",
        "during evaluation": "evaluation:2",  # validating epoch 2, after its last step
        # after the last epoch's checkpoint, before metrics.jsonl and results.json are written
        "after the last epoch": f"after-checkpoint:{TOTAL},{EPOCHS}",
    }
    runs, killed_at, partial = {}, {}, {}
    try:
        for name, pause in kill_points.items():
            out = tmp_path / name.replace(" ", "-")
            paused = out.with_suffix(".paused")  # pausing_cli.py creates it when it waits
            runs[name] = (out, start(train_args(image_folder, out), pause, paused))
        for name, (out, process) in runs.items():
            last = out / "checkpoints" / "last.safetensors"
            if kill_points[name] is None:
                wait_until(process, checkpoint_at_step(last, 2))
            else:
                wait_until(process, out.with_suffix(".paused").exists)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
            assert process.returncode == -signal.SIGKILL
            killed_at[name] = read_metadata(last)  # what the killed run left behind
            partial[name] = [p.stat().st_size for p in last.parent.glob(".*.part")]
        resumed = {name: subprocess.Popen(
            [sys.executable, "-m", "reslab", "train", "--resume", str(out)],
            env=os.environ | {"OMP_NUM_THREADS": "1"}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, (out, _) in runs.items()}
        reference_out, _ = finish(reference, "reference")
        logs = {name: finish(process, f"resumed {name}") for name, process in resumed.items()}
    finally:
        for process in [reference, *(p for _, p in runs.values())]:
            if process.poll() is None:
                process.kill()
                process.communicate()

    # the kill points are where they were meant to be
    assert 2 <= killed_at["mid-epoch"]["step"] < STEPS_PER_EPOCH  # inside epoch 1
    assert killed_at["mid-epoch"]["epoch"] == 0
    # the interrupted write left half a temporary file; last.safetensors is the one before it
    # (step 4's in-epoch checkpoint: the epoch's last step, before validation)
    assert len(partial["during a checkpoint write"]) == 1
    assert partial["during a checkpoint write"][0] > 1000
    assert (killed_at["during a checkpoint write"]["step"],
            killed_at["during a checkpoint write"]["epoch"]) == (STEPS_PER_EPOCH, 0)
    # the last step's checkpoint is in, the epoch is not closed yet
    assert (killed_at["during evaluation"]["step"],
            killed_at["during evaluation"]["epoch"]) == (TOTAL, 1)
    assert (killed_at["after the last epoch"]["step"],
            killed_at["after the last epoch"]["epoch"]) == (TOTAL, EPOCHS)

    expected = load_checkpoint(reference_dir / "checkpoints" / "last.safetensors")
    expected_best = load_checkpoint(reference_dir / "checkpoints" / "best.safetensors").weights
    expected_rows = metrics(reference_dir)
    expected_results = json.loads((reference_dir / "results.json").read_text())
    assert [r["epoch"] for r in expected_rows] == [1, 2]
    assert expected.meta.step == TOTAL
    assert "run directory:" in reference_out

    for name, (out, _) in runs.items():
        _, err = logs[name]
        step, epoch = killed_at[name]["step"], killed_at[name]["epoch"]
        assert re.search(rf"resumed .* at epoch {epoch}, step {step}\b", err), (name, err)
        got = load_checkpoint(out / "checkpoints" / "last.safetensors")
        assert got.weights.keys() == expected.weights.keys()
        differing = [k for k, t in expected.weights.items() if not torch.equal(t, got.weights[k])]
        assert differing == [], f"{name}: {len(differing)} tensors differ, e.g. {differing[:3]}"
        # the optimizer's momentum buffers too, and the EMA model chosen as best
        for index, buffer in expected.train_state["optimizer"]["state"].items():
            assert torch.equal(buffer["momentum_buffer"],
                               got.train_state["optimizer"]["state"][index]["momentum_buffer"])
        best = load_checkpoint(out / "checkpoints" / "best.safetensors").weights
        assert all(torch.equal(t, best[k]) for k, t in expected_best.items()), name
        # each epoch once, with exactly the reference's losses and accuracies
        rows = metrics(out)
        assert [r["epoch"] for r in rows] == [1, 2], name
        for row, expected_row in zip(rows, expected_rows, strict=True):
            assert {k: v for k, v in row.items() if k not in TIMING} == \
                {k: v for k, v in expected_row.items() if k not in TIMING}, name
        results = json.loads((out / "results.json").read_text())
        assert results["steps"] == TOTAL and results["epochs"] == EPOCHS
        assert results["accuracy"] == expected_results["accuracy"]
        assert results["confusion"] == expected_results["confusion"]
        assert not list((out / "checkpoints").glob(".*.part")), name  # the resume cleaned up
