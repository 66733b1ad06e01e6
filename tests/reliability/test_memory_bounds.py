"""Sizes that pass every option's own range but not the machine: a checkpoint's spec through
--resume, a checkpoint's input size through eval and summary, a grow, a resize, an
experiment's depths and widths. Each runs the real command in a child under an address-space
cap and a time limit, and ends in one line naming the figure and the fix (or, for eval, a
lowered batch), within seconds and a few hundred MB, with every input byte-identical and
nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reslab
from reslab.models import ResNetSpec

from . import hostile

CAP = 4_000_000_000  # bytes of address space each child may take (ulimit -v 4000000)
# only a guard against a child that hangs: a busy machine (a benchmark beside the suite) has
# taken eval's child past 60 s; what a child may build is bounded by CAP and its peak RSS
LIMIT_S = 300

_WRAPPER = r"""
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), resource.RLIM_INFINITY))
peak_file, sys.argv = sys.argv[2], ["reslab", *sys.argv[3:]]
try:
    runpy.run_module("reslab", run_name="__main__", alter_sys=True)
finally:
    with open(peak_file, "w") as out:
        out.write(next(line.split()[1] for line in open("/proc/self/status")
                       if line.startswith("VmHWM:")))
"""


def reslab_capped(argv: list[str], tmp_path: Path, cap: int = CAP) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in MB) of ``python -m reslab ARGV`` under an
    address-space cap and the time limit."""
    peak = tmp_path / "peak-kb"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, str(cap), str(peak), *argv],
                          capture_output=True, text=True, timeout=LIMIT_S, env=env,
                          cwd=tmp_path)
    seconds = time.perf_counter() - started
    rss = int(peak.read_text()) / 1024 if peak.exists() else float("nan")
    peak.unlink(missing_ok=True)
    return done.returncode, done.stderr, seconds, rss


def refused_in_one_line(result, *needles: str) -> str:
    code, err, seconds, rss = result
    assert code in (1, 2), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reslab: error: "), err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert seconds < 30 and rss < 1500, (seconds, rss, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "folder" for p in sorted(root.rglob("*")) if p.name != "peak-kb"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """An image folder of the tiny checkpoint's ten classes (grey, 16x16)."""
    root = tmp_path_factory.mktemp("images") / "pets"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in hostile.CLASSES:
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
                    root / split / label / f"{i}.png")
    return root


def edited_run(root: Path, folder: Path, **spec_changes) -> Path:
    """A run directory whose last.safetensors holds the tiny network's weights and a spec
    edited by ``spec_changes``, as an attacker or a bad disk would leave it."""
    run = root / "run"
    meta_spec = hostile.TINY.to_dict() | spec_changes
    config = {"data": f"folder:{folder}", "channels": 1, "image_size": 16, "seed": 0,
              "epochs": 2, "batch_size": 8, "val_size": 4}
    path = hostile.write_checkpoint(run / "checkpoints" / "last.safetensors", train_state=True,
                                    config=config)
    meta = reslab.models.read_metadata(path) | {"spec": meta_spec}
    data = path.read_bytes()
    header, body = hostile.safetensors_parts(data)
    header["__metadata__"]["reslab"] = json.dumps(meta)
    path.write_bytes(hostile.safetensors_join(header, body))
    return run


@pytest.mark.parametrize(("change", "needle"), [
    ({"depths": [1_000_000, 2, 2], "widths": [16, 32, 64]}, "1,000,004 residual units"),
    ({"depths": [1, 1, 1], "widths": [16, 32, 200_000]}, "parameters"),
], ids=["a-million-units", "a-200000-width"])
def test_resume_bounds_the_checkpoint_spec_as_eval_does(change, needle, tmp_path, folder):
    """--resume built the spec unchecked: 7.3 GB and still running at 120 s for a million
    units, a 1.44 TB allocation and a traceback for the width."""
    run = edited_run(tmp_path, folder, **change)
    before = snapshot(tmp_path)
    line = refused_in_one_line(reslab_capped(["train", "--resume", str(run)], tmp_path),
                               "last.safetensors", needle)
    assert "damaged or was edited" in line or "lower" in line
    assert snapshot(tmp_path) == before


def zoo_checkpoint(path: Path, input_size: list[int], model: str = "resnet20") -> Path:
    """A checkpoint of a zoo name (no spec: built as create_model builds it)."""
    torch.manual_seed(0)
    net = reslab.create_model(model, num_classes=10, in_channels=1)
    return reslab.runtime.checkpoint.save_checkpoint(
        path, net.state_dict(), hostile.checkpoint_metadata(spec=None, model=model,
                                                            input_size=input_size))


@pytest.mark.parametrize("side", [4000, 100_000])
def test_summary_of_a_checkpoint_at_any_input_costs_no_memory(side, tmp_path):
    """A checkpoint's summary ran its real network: 5.2 GB and 63 s at 1x4000x4000, a
    traceback from torch.zeros at 1x100000x100000. Now shapes only, on the meta device."""
    ckpt = zoo_checkpoint(tmp_path / "zoo.safetensors", [1, 32, 32])
    code, err, seconds, rss = reslab_capped(["summary", str(ckpt), "--input",
                                             f"1x{side}x{side}"], tmp_path)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert seconds < 30 and rss < 1500, (seconds, rss)


def test_summary_of_a_module_refuses_an_input_it_cannot_hold():
    """Through the API a real network computes: an input past the memory is refused."""
    from reslab.memory import MemoryBudgetError
    from reslab.models.summary import summary

    with pytest.raises(MemoryBudgetError, match=r"needs ~.* available: give a smaller --input"):
        summary(reslab.build(hostile.TINY), (1, 100_000, 100_000))


def test_eval_lowers_its_batch_to_what_fits(tmp_path, folder):
    """A checkpoint whose input is 1x2048x2048 made eval build 4.3 GB batches of 256."""
    spec = hostile.TINY.replace(input_size=2048)
    ckpt = hostile.write_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors", spec,
                                    data=f"folder:{folder}",
                                    config={"seed": 0, "channels": 1, "image_size": 16})
    (tmp_path / "run" / "config.json").write_text(
        json.dumps({"config": {"data": f"folder:{folder}"}}))
    before = snapshot(tmp_path)
    code, err, seconds, rss = reslab_capped(["eval", str(ckpt), "--data", f"folder:{folder}"],
                                            tmp_path, cap=3_000_000_000)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "batch lowered from 256" in err, err
    # it evaluates every image at 2048x2048, so its time is the machine's; its memory is not
    assert rss < 2500, (seconds, rss)
    assert snapshot(tmp_path) == before


def test_grow_refuses_what_the_grown_network_would_need(tmp_path):
    """A 45 MB resnet18 grown by 1,990 units needs ~37 GB of weights (three copies: 110)."""
    ckpt = tmp_path / "r18.safetensors"
    torch.manual_seed(0)
    net = reslab.create_model("resnet18", num_classes=10, in_channels=1)
    reslab.runtime.checkpoint.save_checkpoint(
        ckpt, net.state_dict(), hostile.checkpoint_metadata(
            net.spec, model="resnet18", input_size=[1, 32, 32]))
    before = snapshot(tmp_path)
    refused_in_one_line(reslab_capped(["grow", str(ckpt), "--stage", "4", "--blocks", "1990",
                                       "--out", str(tmp_path / "grown.safetensors")], tmp_path),
                        "needs ~", "available: lower --blocks")
    assert snapshot(tmp_path) == before


def test_train_refuses_a_resize_whitening_cannot_hold(tmp_path, folder):
    """--resize 2048 asked whitening for 84 GB."""
    before = snapshot(tmp_path)
    refused_in_one_line(reslab_capped(["train", "--data", f"folder:{folder}", "--image-size",
                                       "16", "--channels", "1", "--resize", "2048", "--epochs",
                                       "1", "--batch-size", "8", "--val-size", "4",
                                       "--whiten-stem", "--out", str(tmp_path / "new")],
                                      tmp_path), "needs ~", "lower")
    assert snapshot(tmp_path) == before


def test_data_show_refuses_a_grid_it_cannot_hold(tmp_path, folder):
    """--resize 2048 --count 256 took 4.3 GB (and more for the figure)."""
    root = tmp_path / "many"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(128):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / label / f"{i}.png")
    before = snapshot(tmp_path)
    refused_in_one_line(reslab_capped(["data", "show", f"folder:{root}", "--resize", "2048",
                                       "--count", "256", "--out", str(tmp_path / "grid.png")],
                                      tmp_path), "needs ~", "lower --count or --resize")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("setting", "needle"), [
    ("depths=6000002", "residual units"), ("width=100000", "needs ~"),
], ids=["six-million-layers", "width-100000"])
def test_an_experiment_past_the_machine_is_refused_before_its_folder(setting, needle, tmp_path):
    """depths=6000002: 7.3 GB then a traceback after 85 s; width=100000: a 360 GB
    allocation; both left a report folder behind."""
    out = tmp_path / "report"
    argv = ["experiment", "degradation", "--set", setting, "train_size=64", "batch_size=8",
            "--out", str(out)]
    refused_in_one_line(reslab_capped(argv, tmp_path), needle)
    assert not out.exists()


def test_the_budget_is_named_and_can_be_lowered(monkeypatch):
    from reslab import memory

    monkeypatch.setenv("RESLAB_MEMORY_LIMIT", "1G")
    assert memory.available_bytes() <= 1 << 30
    with pytest.raises(memory.MemoryBudgetError, match="needs ~2.15 GB, this machine has"):
        memory.require(2 << 30, "a test", "lower it")
    monkeypatch.setenv("RESLAB_MEMORY_LIMIT", "lots")
    with pytest.raises(memory.MemoryBudgetError, match="RESLAB_MEMORY_LIMIT"):
        memory.available_bytes()


def test_a_spec_past_the_unit_limit_is_refused_wherever_it_is_made():
    with pytest.raises(reslab.errors.SpecError, match="more than the limit of 2,000"):
        ResNetSpec(depths=(1_000_000, 2, 2), widths=(16, 32, 64))
    with pytest.raises(reslab.errors.SpecError, match="more than the limit"):
        hostile.TINY.replace(depths=(1000, 1001))
