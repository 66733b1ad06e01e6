"""A full or read-only disk stops a run with its last good checkpoint kept; a failed write
leaves no half file; a run directory belongs to one run."""

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reslab
import reslab.io
from reslab.cli import main
from reslab.errors import TrainingError
from reslab.models import ResNetSpec, read_metadata
from reslab.runtime.checkpoint import load_checkpoint
from reslab.training import TrainConfig, fit
from reslab.training.writer import RunWriter

PAUSING_CLI = str(Path(__file__).with_name("pausing_cli.py"))
TINY = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 1), widths=(8, 16), in_channels=1,
                  num_classes=10, input_size=16)


def config(tmp_path, **changes) -> TrainConfig:
    values = dict(epochs=2, batch_size=50, lr=0.2, flip=False, tta_flip=False, quiet=True,
                  out=str(tmp_path / "run"), warmup_epochs=0.5)
    return TrainConfig(**(values | changes))


class _DiskFullsHalfway:
    """A file whose first write stores half the bytes, then fails as a full disk does."""

    def __init__(self, file):
        self.file = file
        self.written = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data):
        self.written = self.file.write(data[:len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):  # name, flush, fileno...
        return getattr(self.file, name)


def test_a_checkpoint_write_failing_halfway_keeps_the_last_good_one(tmp_path, tiny_data,
                                                                   monkeypatch):
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    seen = {"writes": 0}

    def open_failing_the_second_last_checkpoint(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned open)
        if Path(path).name.startswith(".last.safetensors.") and "w" in mode:
            seen["writes"] += 1
            if seen["writes"] == 2:  # the end of epoch 2; epoch 1's checkpoint is in place
                seen["before"] = last.read_bytes()
                seen["partial"] = Path(path)
                seen["file"] = _DiskFullsHalfway(file)
                return seen["file"]
        return file

    monkeypatch.setattr(reslab.io, "open", open_failing_the_second_last_checkpoint,
                        raising=False)
    with pytest.raises(TrainingError) as failure:
        fit(reslab.build(TINY), tiny_data, config(tmp_path))
    message = str(failure.value)
    assert f"cannot write {last}: No space left on device" in message
    assert "--resume" in message and "\n" not in message
    assert seen["file"].written > 1000  # it did fail halfway through the file
    # the previous checkpoint is untouched and loads; the partial file is gone
    assert last.read_bytes() == seen["before"]
    kept = load_checkpoint(last)
    assert kept.meta.epoch == 1 and kept.train_state["state"]["step"] == 8
    assert not seen["partial"].exists()
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.safetensors",
                                                             "last.safetensors"]
    # and once the disk has room again, --resume finishes the run from there
    monkeypatch.undo()
    result = fit(reslab.build(TINY), tiny_data, config(tmp_path), run_dir=tmp_path / "run",
                 resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert read_metadata(last)["step"] == 16


def _make_read_only(folder: Path):
    """chmod 0o555; as root (which ignores modes) the immutable attribute instead."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, and this file system has no immutable attribute")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_checkpoint_folder_stops_the_run_with_a_clear_error(tmp_path, tiny_data,
                                                                        monkeypatch):
    checkpoints = tmp_path / "run" / "checkpoints"
    log_tensorboard, undo = RunWriter._tensorboard, []

    def after_the_first_epoch(writer, row):  # the last thing fit does at the end of an epoch
        log_tensorboard(writer, row)
        if not undo:
            seen_before = (checkpoints / "last.safetensors").read_bytes()
            undo.append(_make_read_only(checkpoints))
            undo.append(seen_before)

    monkeypatch.setattr(RunWriter, "_tensorboard", after_the_first_epoch)
    try:
        with pytest.raises(TrainingError) as failure:
            fit(reslab.build(TINY), tiny_data, config(tmp_path))
    finally:
        if undo:
            undo[0]()
    message = str(failure.value)
    assert f"cannot write {checkpoints}{os.sep}" in message
    assert ("Permission denied" in message or "Operation not permitted" in message), message
    assert "fix permissions, then --resume" in message
    last = checkpoints / "last.safetensors"
    assert last.read_bytes() == undo[1]
    assert load_checkpoint(last).meta.epoch == 1
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".part")]


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB tmpfs, so that a full disk is the kernel's ENOSPC (mounting needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    """Another program takes every free byte of the disk."""
    filler = disk / "filler"
    # unbuffered: a buffered file would try its last chunk again on close, and fail there
    with open(filler, "wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_stops_the_run_and_resume_finishes_it_once_there_is_room(
        small_disk, tiny_data, monkeypatch):
    run_dir = small_disk / "run"
    checkpoints = run_dir / "checkpoints"
    log_tensorboard, seen = RunWriter._tensorboard, {}

    def after_the_first_epoch(writer, row):  # the last thing fit does at the end of an epoch
        log_tensorboard(writer, row)
        if not seen:
            seen["last"] = (checkpoints / "last.safetensors").read_bytes()
            seen["filler"] = _fill(small_disk)

    monkeypatch.setattr(RunWriter, "_tensorboard", after_the_first_epoch)
    with pytest.raises(TrainingError) as failure:
        fit(reslab.build(TINY), tiny_data, config(small_disk, out=str(run_dir),
                                                   checkpoint_every=4))
    message = str(failure.value)
    assert "No space left on device" in message and "free space" in message, message
    assert "--resume" in message and "\n" not in message
    last = checkpoints / "last.safetensors"
    assert last.read_bytes() == seen["last"]  # epoch 1's checkpoint, untouched
    assert load_checkpoint(last).meta.epoch == 1
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".part")]
    # room again: --resume goes on from epoch 1's checkpoint to the end
    seen["filler"].unlink()
    monkeypatch.undo()
    result = fit(reslab.build(TINY), tiny_data, config(small_disk, out=str(run_dir)),
                 run_dir=run_dir, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert read_metadata(last)["step"] == 16


@pytest.mark.slow
def test_a_second_run_into_a_busy_directory_is_refused(tmp_path, image_folder, capsys):
    out, go = tmp_path / "run", tmp_path / "go"
    args = ["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
            "--image-size", "16", "--channels", "1", "--epochs", "1", "--train-subset", "64",
            "--batch-size", "32", "--val-size", "40", "--checkpoint-every", "1",
            "--quiet", "--out", str(out)]
    env = os.environ | {"RESLAB_PAUSE": "after-checkpoint:1,0", "RESLAB_GO": str(go),
                        "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, PAUSING_CLI, *args], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        last = out / "checkpoints" / "last.safetensors"
        deadline = time.monotonic() + 120
        while not last.exists():  # the first run holds the lock and waits after step 1
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        before = last.read_bytes()
        for second in (args, ["train", "--resume", str(out)]):
            assert main(second) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"reslab: error: run directory {out} is in use by another "
                                  "reslab process")
            assert err.count("\n") == 1 and "Traceback" not in err
        assert last.read_bytes() == before  # the refused runs wrote nothing
        go.touch()
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    # the first run was not disturbed: it went on to the end
    assert first.returncode == 0, stderr
    assert "run directory:" in stdout
    assert read_metadata(last)["step"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "results.json").exists()
