"""torchrun with 2 CPU processes (gloo): the same global batch, one writer, identical replicas."""

import json
import os
import socket
import subprocess
import sys

import pytest

from reslab.runtime.checkpoint import load_checkpoint

ARGS = ["--model", "resnet14", "--image-size", "16", "--channels", "1", "--epochs", "2",
        "--train-subset", "128", "--batch-size", "32", "--val-size", "40", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, image_folder):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    ddp_cwd, single_cwd = tmp_path / "ddp", tmp_path / "single"
    ddp_cwd.mkdir()
    single_cwd.mkdir()
    data = ["--data", f"folder:{image_folder}"]
    # no --out: each rank would pick its own runs/<model>-<time>, so one folder = one writer
    ddp = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "reslab", "train", *ARGS, *data],
        cwd=ddp_cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    single = subprocess.Popen(
        [sys.executable, "-m", "reslab", "train", *ARGS, *data, "--threads", "1"],
        cwd=single_cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = ddp.communicate(timeout=300)
        single_out, single_err = single.communicate(timeout=300)
    finally:
        for process in (ddp, single):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert ddp.returncode == 0, err
    assert single.returncode == 0, single_err
    assert "Traceback" not in err
    # rank 0 logs through the CLI's logging set-up onto stderr, and prints the result once
    assert "weights identical on all 2 ranks at the start" in err
    assert "weights identical on all 2 ranks after training" in err
    assert out.count("test accuracy") == 1 and out.count("run directory:") == 1

    # only rank 0 wrote: one run directory, nothing else in the working directory
    assert [p.name for p in ddp_cwd.iterdir()] == ["runs"]
    (run,) = (ddp_cwd / "runs").iterdir()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.safetensors", "last.safetensors"]
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.meta.config["batch_size"] == 32  # the global batch, as given

    # --batch-size is the global batch: 2 ranks x 16 images take as many steps as 1 x 32
    (single_run,) = (single_cwd / "runs").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    single_rows = [json.loads(line)
                   for line in (single_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in single_rows] == [4, 8]
    # the epoch's training figures cover both ranks' shards, not rank 0's alone
    assert [r["train_images"] for r in rows] == [r["train_images"] for r in single_rows] \
        == [128, 128]
    assert last.meta.step == 8
    results = json.loads((run / "results.json").read_text())
    assert results["images"] == 60 and results["steps"] == 8
