"""Input that used to end in a traceback or forge the output: paths longer than the system
takes, mathtext in class names, control and bidirectional characters in names from files, and
NaN weights. Each is one line (or a correct result), exit 1, in a bounded time, every file
byte-identical and nothing left behind."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.paths import printable
from reslab.training.plots import literal, plot_confusion

from . import hostile
from .test_outputs_and_inputs import cli, snapshot

LONG = "/tmp/" + "/".join(["a" * 200] * 25)  # 5,000 bytes: past PATH_MAX, each name legal


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    hostile.write_checkpoint(run / "checkpoints" / "last.safetensors", train_state=True)
    hostile.write_checkpoint(run / "checkpoints" / "best.safetensors")
    (run / "config.json").write_text(json.dumps({"config": {"data": "fashion-mnist"}}))
    return run


def _one_line_error(code, err, expected=""):
    assert code == 1, err
    assert err.startswith("reslab: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and expected in err


@pytest.mark.parametrize("argv", [
    ["eval", LONG], ["summary", LONG], ["data", "info", f"folder:{LONG}"],
    ["train", "--resume", LONG], ["train", "--init-from", LONG, "--epochs", "1"],
    ["export", "{ckpt}", "--onnx", LONG + ".onnx"],
    ["eval", "{ckpt}", "--confusion", LONG + ".png"],
    ["train", "--out", LONG, "--epochs", "1"],
])
def test_a_path_longer_than_the_system_takes_is_one_line_before_any_work(argv, run, tmp_path):
    ckpt = run / "checkpoints" / "best.safetensors"
    before = snapshot(tmp_path)
    started = time.monotonic()
    code, out, err = cli(*(a.format(ckpt=ckpt) for a in argv))
    _one_line_error(code, err, "longer than")
    assert time.monotonic() - started < 20  # refused before the evaluation, not after it
    assert snapshot(tmp_path) == before


def test_a_name_too_long_anywhere_else_is_still_one_line(monkeypatch):
    """The CLI's last resort: an ENAMETOOLONG no check foresaw becomes one line, exit 1."""
    import reslab.cli.models as models

    def refuse(options):
        raise OSError(36, "File name too long", "x" * 300)

    monkeypatch.setattr(models, "run_models", refuse)
    code, out, err = cli("models")
    _one_line_error(code, err, "longer than the system takes")


# --- mathtext -------------------------------------------------------------------------------

MATH = ["dog$\\frac{$", "$x^$", "a\\$b$c$", "$$", "cat"]


def test_every_plot_shows_class_names_as_written(tmp_path):
    for name in MATH:
        assert literal(name).replace("\\$", "$") == name
    matrix = torch.arange(25).view(5, 5)
    plot_confusion(matrix, MATH, tmp_path / "c.png", "model$\\frac{$: test accuracy")
    assert Image.open(tmp_path / "c.png").size[0] > 100


def test_data_show_draws_a_class_folder_named_like_mathtext(tmp_path):
    for label in ("dog$\\frac{$", "cat$_$"):
        for i in range(2):
            folder = tmp_path / "pets" / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16), 60 * i, np.uint8)).save(folder / f"{i}.png")
    before = snapshot(tmp_path / "pets")
    code, out, err = cli("data", "show", f"folder:{tmp_path / 'pets'}", "--out",
                         tmp_path / "grid.png", "--count", "4")
    assert code == 0, err
    assert Image.open(tmp_path / "grid.png").size[0] > 100
    assert snapshot(tmp_path / "pets") == before


# --- names from files, printed ---------------------------------------------------------------

BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


@pytest.mark.parametrize("code_point", BIDI)
def test_bidirectional_controls_are_escaped(code_point):
    shown = printable(f"invoice{chr(code_point)}fdp.exe")
    assert chr(code_point) not in shown and f"\\u{code_point:04x}" in shown


FORGED = "tiny\nreslab: all good\x1b[31m\u202e"


def test_a_forged_model_name_is_printed_escaped(tmp_path):
    ckpt = hostile.write_checkpoint(tmp_path / "forged.safetensors", model=FORGED)
    code, out, err = cli("summary", ckpt)
    assert code == 0, err
    for text in (out, err):
        assert "\x1b" not in text and "\u202e" not in text
        assert not any(line.startswith("reslab: all good") for line in text.splitlines())


def test_a_forged_model_name_reaches_no_new_run_or_onnx_file(tmp_path):
    from reslab.models import read_metadata
    from reslab.training.finetune import reslab_checkpoint

    ckpt = hostile.write_checkpoint(tmp_path / "forged.safetensors", model=FORGED)
    for model in (read_metadata(ckpt)["model"], reslab_checkpoint(ckpt)[1].model):
        assert model == printable(FORGED)
        assert all(c.isprintable() and c not in "\u202e" for c in model)


# --- NaN weights -----------------------------------------------------------------------------

@pytest.fixture
def nan_checkpoint(tmp_path):
    torch.manual_seed(0)
    import reslab

    model = reslab.build(hostile.TINY)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights["fc.weight"] = torch.full_like(weights["fc.weight"], float("nan"))
    return hostile.write_checkpoint(tmp_path / "nan.safetensors", weights=weights)


def test_predict_json_refuses_nan_outputs_in_one_line(nan_checkpoint, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    code, out, err = cli("predict", nan_checkpoint, image, "--json")
    _one_line_error(code, err, "not a number")
    assert "NaN" not in out and out == ""


def test_export_fails_its_check_on_nan_outputs_and_writes_nothing(nan_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    before = snapshot(tmp_path)
    code, out, err = cli("export", nan_checkpoint, "--onnx", tmp_path / "m.onnx")
    _one_line_error(code, err, "not numbers")
    assert snapshot(tmp_path) == before


def test_train_on_class_folders_named_like_mathtext_writes_its_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("dog$\\frac{$", "cat$_$"):
        folder = tmp_path / "pets" / label
        folder.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run$x$"
    code, stdout, err = cli("train", "--data", f"folder:{tmp_path / 'pets'}", "--image-size", "8",
                            "--channels", "1", "--epochs", "1", "--max-steps", "1",
                            "--batch-size", "4", "--val-size", "2", "--model", "resnet14",
                            "--threads", "1", "--quiet", "--out", out)
    assert code == 0, err
    assert Image.open(out / "confusion.png").size[0] > 100
    assert Image.open(out / "curves.png").size[0] > 100
