"""Every data kind x the commands a user runs on what it produced: one tiny run per kind
(Fashion-MNIST, MNIST, CIFAR-10 from --data-dir; image folders grey and RGB, with and without
test/), then eval, predict (a file, a folder, a folder of class folders, --json), export
--onnx run by onnxruntime, summary, extend (--resume --epochs 2), --init-from (a checkpoint
and a run folder), grow, and a run stopped by a signal then finished by --resume."""

import json
import shutil
import signal

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from reslab.models import read_metadata

from ..reliability.test_crash_resume import wait_until
from .conftest import cli, data_args, isolated_env, start_cli

KINDS = ["fashion-mnist", "mnist", "cifar10", "grey", "rgb", "grey-no-test"]
SHRINK = ["--train-subset", 40, "--batch-size", 20, "--epochs", 1, "--quiet"]
TEST_IMAGES = {"fashion-mnist": 40, "mnist": 40, "cifar10": 24, "grey": 30, "rgb": 30,
               "grey-no-test": 12}  # no test/: a tenth of train/'s 120 held out


@pytest.fixture(scope="module", params=KINDS)
def run(request, fixtures, tmp_path_factory):
    """(kind, run folder, a folder of class folders of PNGs the run can read)."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    with isolated_env(fixtures, root / "home"):
        result = cli("train", *data_args(fixtures, kind), *SHRINK, "--out", root / "run")
    assert result.code == 0, result
    if kind in ("grey", "rgb", "grey-no-test"):
        images = fixtures[kind] / "train"
    else:  # the run's own test images, written as class folders of PNGs
        images = root / "images"
        meta = read_metadata(root / "run" / "checkpoints" / "best.safetensors")
        channels = 3 if kind == "cifar10" else 1
        for label in range(2):
            rng = np.random.default_rng(label)
            pixels = rng.integers(0, 256, (28 if channels == 1 else 32,) * 2 + (channels,))
            (images / f"class{label}").mkdir(parents=True)
            Image.fromarray(pixels.astype(np.uint8).squeeze()).save(
                images / f"class{label}" / "a.png")
        assert len(meta["classes"]) == 10
    return kind, root / "run", images


def test_train_left_a_run_with_its_test_accuracy(run):
    kind, folder, _ = run
    results = json.loads((folder / "results.json").read_text())
    assert results["images"] == TEST_IMAGES[kind]
    assert 0 <= results["accuracy"] <= 1


BUILT_IN = {"fashion-mnist", "mnist", "cifar10"}


@pytest.mark.parametrize("data_dir", [True, False])
def test_eval_gives_the_runs_test_accuracy(run, fixtures, data_dir):
    kind, folder, _ = run
    # without --data-dir (the user path: `reslab eval RUN`, nothing else) the run's own
    extra = ["--data-dir", fixtures[kind]] if kind in BUILT_IN and data_dir else []
    result = cli("eval", folder, "--json", *extra)
    assert result.code == 0, result
    evaluated = json.loads(result.out)
    assert evaluated["images"] == TEST_IMAGES[kind]
    assert abs(evaluated["accuracy"] - json.loads((folder / "results.json").read_text())
               ["accuracy"]) <= 2 / TEST_IMAGES[kind]  # bf16 inference: a couple of images


def test_eval_data_dir_given_wins_over_the_runs(run, tmp_path):
    kind, folder, _ = run
    if kind not in BUILT_IN:
        pytest.skip("image folders are named by --data, not --data-dir")
    (tmp_path / "empty").mkdir()
    result = cli("eval", folder, "--data-dir", tmp_path / "empty")
    assert result.code != 0 and "empty" in result.err, result


def test_predict_a_file_a_folder_and_json(run):
    _, folder, images = run
    one = sorted(images.rglob("*.png"))[0]
    result = cli("predict", folder, one, "--top-k", 2)
    assert result.code == 0, result
    assert result.out.startswith(f"{one}: ") and result.out.count("\n") == 1
    result = cli("predict", folder, one.parent, "--json", "--top-k", 1)
    assert result.code == 0, result
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [row["path"] for row in rows] == [str(p) for p in sorted(one.parent.glob("*.png"))]
    assert all(row["error"] is None and len(row["top"]) == 1 for row in rows)


def test_predict_a_folder_of_class_folders(run):
    _, folder, images = run
    result = cli("predict", folder, images, "--json")
    assert result.code == 0, result
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert len(rows) == len(list(images.rglob("*.png")))


def test_export_onnx_runs_in_onnxruntime(run, tmp_path):
    _, folder, images = run
    onnx = tmp_path / "model.onnx"
    result = cli("export", folder, "--onnx", onnx, "--include-normalization")
    assert result.code == 0, result
    assert result.out.startswith(f"wrote {onnx}: input batch x ")
    session = onnxruntime.InferenceSession(str(onnx))
    shape = session.get_inputs()[0].shape[1:]
    probs = session.run(None, {"images": np.random.default_rng(0).random(
        (2, *shape), dtype=np.float32)})[0]
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-4)


def test_summary_of_the_run(run):
    _, folder, _ = run
    result = cli("summary", folder)
    assert result.code == 0, result
    assert result.out.startswith("fast_resnet10 at ")
    assert "total" in result.out


def test_extend_a_run(run, tmp_path):
    _, folder, _ = run
    copy = tmp_path / "extended"
    shutil.copytree(folder, copy)
    result = cli("train", "--resume", copy, "--epochs", 2, "--quiet")
    assert result.code == 0, result
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]


@pytest.mark.parametrize("source", ["checkpoint", "run folder"])
def test_init_from(run, fixtures, tmp_path, source):
    kind, folder, _ = run
    weights = folder / "checkpoints" / "last.safetensors" if source == "checkpoint" else folder
    out = tmp_path / "from"
    result = cli("train", "--init-from", weights, *data_args(fixtures, kind), *SHRINK,
                 "--out", out)
    assert result.code == 0, result
    assert json.loads((out / "config.json").read_text())["config"]["init_from"] == str(weights)
    assert (out / "results.json").exists()


def test_grow_keeps_the_function(run, tmp_path):
    _, folder, images = run
    grown = tmp_path / "grown.safetensors"
    result = cli("grow", folder, "--stage", 2, "--blocks", 1, "--out", grown)
    assert result.code == 0, result
    flat = sorted(images.rglob("*.png"))[0].parent  # a folder of images, no class folders
    before = cli("predict", folder, flat, "--json", "--top-k", 3)
    after = cli("predict", grown, flat, "--json", "--top-k", 3)
    assert after.code == 0, after
    for a, b in zip(before.out.splitlines(), after.out.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert [c for c, _ in a["top"]] == [c for c, _ in b["top"]]
        np.testing.assert_allclose([p for _, p in a["top"]], [p for _, p in b["top"]],
                                   atol=2e-2)  # bf16 inference of two different graphs


@pytest.mark.slow
def test_a_signal_mid_run_then_resume_finishes_it(run, fixtures, tmp_path):
    kind, _, _ = run
    sig = signal.SIGTERM if KINDS.index(kind) % 2 else signal.SIGINT
    out, paused, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    args = ["train", *data_args(fixtures, kind), *SHRINK, "--out", out]
    process = start_cli(fixtures, tmp_path / "home", *args, pause="after-step:1",
                        paused=paused, go=go)
    wait_until(process, paused.exists)
    process.send_signal(sig)
    go.touch()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith(f"reslab: stopped by {sig.name} at epoch 1, "
                                                   "step 1")
    resumed = start_cli(fixtures, tmp_path / "home", "train", "--resume", out)
    stdout, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert "test accuracy" in stdout
    assert json.loads((out / "results.json").read_text())["images"] == TEST_IMAGES[kind]
