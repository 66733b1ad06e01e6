"""Values a file hands to training: a config file's fields are of their annotated type, finite,
and parsed without recursion a file can reach; a resumed run's data identity and history rows
are checked when read, before any training. Each refusal is one line, exit 1, quick, and
leaves every file byte-identical."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reslab.models.weights import METADATA_KEY

from . import hostile
from .test_outputs_and_inputs import cli
from .test_outputs_and_inputs import refused as _refused


@pytest.mark.parametrize(("text", "expected"), [
    ("warmup_epochs: .inf\n", "warmup_epochs must be a finite number, got inf"),
    ("lr: .nan\n", "lr must be a finite number"),
    ("momentum: -.inf\n", "momentum must be a finite number"),
    ("data: 5\n", "data must be a string, got 5"),
    ("model: [resnet20]\n", "model must be a string"),
    ("epochs: [1]\n", "epochs must be a positive integer"),
    ("epochs: 1.5\n", "epochs must be a positive integer"),
    ("seed: 100000000000000000000000000000\n", "seed must be an integer in [0, 2**63)"),
    ("max_steps: 100000000000000000000000000000\n", "max_steps must be below 2**63"),
    ("quiet: yes please\n", "quiet must be true or false"),
    ("milestones: [10, [20]]\n", "milestones must be a list of positive integers"),
    ("freeze: {stem: 1}\n", "freeze must be"),
    ("schedule: 7\n", "schedule must be one of"),
    ("crop_padding: 4611686018427387904\n", "crop_padding must be an integer from 0 to"),
    ('{"data": {"a": {"b": [1]}}}', "data must be a string"),
    ("model: " + "[" * 60_000 + "]" * 60_000 + "\n", "nested more than"),
    ('{"model": ' + '{"a": ' * 60_000 + "1" + "}" * 60_001, "nested more than"),
])
def test_a_config_value_of_the_wrong_type_is_one_line(text, expected, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    _refused(["train", "--config", config, "--print-config"], expected, tmp_path)


def test_a_nested_config_cannot_reach_python_s_recursion_limit(tmp_path):
    """Even with a recursion limit just above what reslab itself needs."""
    config = tmp_path / "deep.yaml"
    config.write_text("model: " + "[" * 60_000 + "]" * 60_000 + "\n")
    code = ("import sys; sys.setrecursionlimit(400); from reslab.cli import main; "
            f"sys.exit(main(['train', '--config', {str(config)!r}, '--print-config']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("reslab: error: ") and len(done.stderr.splitlines()) == 1


# --- a resumed run's saved state --------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, image_folder) -> Path:
    """A finished one-epoch run: `--resume RUN --epochs 2` extends it."""
    out = tmp_path_factory.mktemp("resume") / "run"
    code, _, err = cli("train", "--model", "resnet14", "--data", f"folder:{image_folder}",
                       "--image-size", "16", "--channels", "1", "--epochs", "1",
                       "--train-subset", "64", "--batch-size", "32", "--val-size", "20",
                       "--threads", "1", "--quiet", "--out", out)
    assert code == 0, err
    return out


def _plain(node):
    """The training state as nested dicts (checkpoint._flatten writes a dict as key pairs)."""
    if isinstance(node, dict) and "__dict__" in node:
        return {k: _plain(v) for k, v in node["__dict__"]}
    return [_plain(v) for v in node] if isinstance(node, list) else node


def _flat(node):
    if isinstance(node, dict) and "__tensor__" not in node:
        return {"__dict__": [[k, _flat(v)] for k, v in node.items()]}
    return [_flat(v) for v in node] if isinstance(node, list) else node


def _tampered(finished: Path, tmp_path: Path, change) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    last = run / "checkpoints" / "last.safetensors"
    header, body = hostile.safetensors_parts(last.read_bytes())
    meta = json.loads(header["__metadata__"][METADATA_KEY])
    meta["train_state"] = _plain(meta["train_state"])
    change(meta)
    meta["train_state"] = _flat(meta["train_state"])
    header["__metadata__"][METADATA_KEY] = json.dumps(meta)
    last.write_bytes(hostile.safetensors_join(header, body))
    return run


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m.__setitem__("data_identity", "folder"), "data identity"),
    (lambda m: m.__setitem__("data_identity", [1, 2]), "data identity"),
    (lambda m: m["data_identity"].__setitem__("sizes", [64, 20]), "data identity (sizes"),
    (lambda m: m["data_identity"].__setitem__("classes", "abc"), "data identity (classes"),
    (lambda m: m["train_state"]["state"]["history"][0].pop("train_loss"), "counter 'history'"),
    (lambda m: m["train_state"]["state"]["history"].append({"epoch": 2}), "counter 'history'"),
    (lambda m: m["train_state"]["state"]["history"][0].__setitem__("val_acc", "x"),
     "counter 'history'"),
    (lambda m: m["train_state"]["state"].__setitem__("history", [7]), "counter 'history'"),
])
def test_a_tampered_checkpoint_is_refused_before_training(change, expected, finished,
                                                          tmp_path):
    run = _tampered(finished, tmp_path, change)
    _refused(["train", "--resume", run, "--epochs", "2", "--quiet"], expected, tmp_path,
             limit_s=60)
    assert not list(run.rglob("*.part"))


def test_an_untampered_copy_resumes(finished, tmp_path):
    """The control: the copy the refusals edit is one that resumes."""
    run = _tampered(finished, tmp_path, lambda meta: None)
    code, out, err = cli("train", "--resume", run, "--epochs", "2", "--quiet")
    assert code == 0, err
