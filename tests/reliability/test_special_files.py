"""Special files where a folder's own files are expected: an experiment.json that is a FIFO or
a link to /dev/zero, an --out that is a regular file, a run's .lock planted as a link. Each is
refused in one line, exit 1, at once, following no link and creating nothing."""

from __future__ import annotations

import json
import os

import pytest

from reslab.paths import read_own_file
from reslab.runtime.run_folder import RunFolder

from .test_outputs_and_inputs import refused as _refused
from .test_outputs_and_inputs import snapshot


@pytest.fixture
def report(tmp_path):
    """A report folder of the nested experiment, with something in it besides the plan."""
    out = tmp_path / "report"
    (out / "runs").mkdir(parents=True)
    return out


@pytest.mark.parametrize("kind", ["fifo", "zero", "folder", "huge"])
def test_an_experiment_json_that_is_no_regular_file_is_refused_at_once(kind, report, tmp_path):
    plan = report / "experiment.json"
    if kind == "fifo":
        os.mkfifo(plan)
    elif kind == "zero":
        plan.symlink_to("/dev/zero")
    elif kind == "folder":
        plan.mkdir()
    else:
        plan.write_text(json.dumps({"experiment": "nested", "pad": "x" * (2 << 20)}))
    _refused(["experiment", "nested", "--quick", "--out", report], "holds no nested experiment",
             tmp_path)


def test_an_experiment_out_that_is_a_file_is_refused(tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own file")
    _refused(["experiment", "nested", "--quick", "--out", victim], "is a file, not a folder",
             tmp_path)


def test_reading_a_folder_s_own_file_refuses_what_is_not_one(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 2048)
    (tmp_path / "ok").write_text("fine")
    from reslab.errors import ConfigError

    for name in ("fifo", "zero"):
        with pytest.raises(ConfigError, match="not a regular file"):
            read_own_file(tmp_path / name, "a test file")
    with pytest.raises(ConfigError, match="over"):
        read_own_file(tmp_path / "big", "a test file", limit=1 << 10)
    with pytest.raises(FileNotFoundError):
        read_own_file(tmp_path / "missing", "a test file")
    assert read_own_file(tmp_path / "ok", "a test file") == "fine"


@pytest.mark.parametrize("target", ["missing", "existing"])
def test_a_lock_planted_as_a_link_is_not_followed(target, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    if target == "existing":
        victim.write_text("precious")
    (run / ".lock").symlink_to(victim)
    before = snapshot(tmp_path)
    from reslab.errors import ConfigError

    with pytest.raises(ConfigError, match="symbolic link"):
        RunFolder(run).lock()
    assert snapshot(tmp_path) == before
    assert victim.exists() == (target == "existing")


def test_a_lock_that_is_a_fifo_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / ".lock")
    from reslab.errors import ConfigError

    with pytest.raises(ConfigError, match="not a regular file"):
        RunFolder(run).lock()


def test_train_into_a_folder_with_a_planted_lock_link_is_one_line(tmp_path, image_folder):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    (run / ".lock").symlink_to(victim)
    _refused(["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
              "--image-size", "16", "--channels", "1", "--epochs", "1", "--train-subset", "32",
              "--batch-size", "16", "--val-size", "8", "--threads", "1", "--quiet",
              "--out", run], "symbolic link", tmp_path, limit_s=60)
    assert not victim.exists()
