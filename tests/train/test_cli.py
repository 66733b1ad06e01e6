"""`reslab train / eval / predict / export` in-process, from the arguments to what they print."""

import contextlib
import io
import json
import re
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

import reslab.training.run as RUN  # noqa: E402
from reslab.cli import main
from reslab.runtime.checkpoint import model_from_checkpoint
from reslab.training import TrainConfig, preset


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder):
    """One tiny `reslab train` run: (run directory, what it printed)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
                     "--image-size", "16", "--channels", "1", "--epochs", "2",
                     "--train-subset", "96", "--batch-size", "32", "--val-size", "40",
                     "--precision", "fp32", "--quiet", "--out", str(out)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue()


def test_train_prints_the_test_accuracy_and_the_run_directory(trained):
    run, printed = trained
    results = json.loads((run / "results.json").read_text())
    match = re.search(r"test accuracy (\d\.\d{4}) on 60 images \(model of epoch (\d), "
                      r"chosen by validation accuracy (\d\.\d{4})\)", printed)
    assert match, printed
    assert float(match[1]) == round(results["accuracy"], 4)
    assert int(match[2]) == results["best_epoch"]
    assert float(match[3]) == round(results["best_val_acc"], 4)
    assert f"run directory: {run}" in printed
    assert (run / "checkpoints" / "best.safetensors").exists()


def test_eval_json_gives_the_accuracy_of_results_json(trained, capsys):
    run, _ = trained
    results = json.loads((run / "results.json").read_text())
    assert main(["eval", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["images"] == results["images"] == 60
    assert evaluated["accuracy"] == results["accuracy"]
    assert evaluated["confusion"] == results["confusion"]
    assert evaluated["loss"] == pytest.approx(results["loss"], rel=1e-5)
    # the validation split is the one training held out (val_size 40 of the 300 images)
    assert main(["eval", str(run), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 40


def test_predict_gives_top_k_classes_and_an_error_line_per_bad_image(trained, image_folder,
                                                                    tmp_path, capsys):
    run, _ = trained
    checkpoint = run / "checkpoints" / "best.safetensors"
    good = sorted((image_folder / "test" / "class3").iterdir())[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", str(checkpoint), str(good), str(bad), "--top-k", "2"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()  # results on stdout, the bad image on stderr
    assert len(lines) == 1
    match = re.fullmatch(rf"{re.escape(str(good))}: (\w+) (\d\.\d{{3}}), (\w+) (\d\.\d{{3}})",
                         lines[0])
    assert match, lines[0]
    assert captured.err.startswith(f"reslab: error: {bad}: unreadable image")
    # the probabilities are the model's, worked out here from the PNG independently
    model, meta = model_from_checkpoint(checkpoint)
    pixels = torch.from_numpy(np.array(Image.open(good).convert("L"), dtype=np.float32))
    x = ((pixels / 255 - meta.mean[0]) / meta.std[0]).view(1, 1, 16, 16)
    with torch.no_grad():
        probs = model(x).softmax(1)
        if meta.tta_flip:
            probs = (probs + model(x.flip(3)).softmax(1)) / 2
    top = probs[0].topk(2)
    assert [match[1], match[3]] == [meta.classes[i] for i in top.indices]
    assert float(match[2]) == pytest.approx(float(top.values[0]), abs=6e-4)
    assert float(match[4]) == pytest.approx(float(top.values[1]), abs=6e-4)
    assert float(match[2]) >= float(match[4])


def test_export_writes_an_onnx_model_that_matches_pytorch(trained, tmp_path, capsys):
    run, _ = trained
    checkpoint = run / "checkpoints" / "best.safetensors"
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path), "--no-tta"]) == 0
    printed = capsys.readouterr().out
    match = re.search(r"max abs difference \S+ \((\S+) of the largest output\)$", printed.strip())
    assert match and float(match[1]) < 1e-5, printed  # float32 rounding
    assert f"wrote {onnx_path}" in printed
    assert not list(tmp_path.glob(".*.part"))
    # checked here too, on another input and another batch size (the batch axis is dynamic)
    model, _ = model_from_checkpoint(checkpoint)
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (5, 10)
    # random input drives a whitened stem's outputs into the thousands: float32 rounding
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_an_exported_model_on_raw_pixels_gives_predicts_probabilities_and_says_so(
        trained, image_folder, tmp_path, capsys):
    run, _ = trained
    checkpoint = run / "checkpoints" / "best.safetensors"
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path),
                 "--include-normalization"]) == 0
    printed = capsys.readouterr().out
    assert "pixels in [0, 1], normalised in the graph" in printed
    assert "output probabilities, each image's averaged with its mirror's" in printed  # as run
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    _, meta = model_from_checkpoint(checkpoint)
    assert json.loads(metadata["classes"]) == list(meta.classes) == [f"class{i}" for i in range(10)]
    assert json.loads(metadata["mean"]) == list(meta.mean)
    assert json.loads(metadata["std"]) == list(meta.std)
    assert json.loads(metadata["input_size"]) == [1, 16, 16]
    assert json.loads(metadata["spec"])["depths"] == meta.spec["depths"]
    assert session.get_outputs()[0].name == "probabilities"
    # raw pixels in, predict's numbers out
    images = sorted((image_folder / "test" / "class3").iterdir())[:3]
    pixels = np.stack([np.array(Image.open(p).convert("L"), dtype=np.float32)[None] / 255
                       for p in images])
    got = session.run(None, {"images": pixels})[0]
    assert main(["predict", str(checkpoint), *map(str, images), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for row, line in zip(got, lines, strict=True):
        name, probability = line.split(": ")[1].split()
        assert meta.classes[int(row.argmax())] == name
        assert float(probability) == pytest.approx(float(row.max()), abs=6e-3)  # bf16 there


def _config_the_cli_trains_with(monkeypatch, argv) -> TrainConfig:
    seen = []

    def fake_train(config=None, *, preset_name=None, **options):
        seen.append(config or preset(preset_name, **options))
        return RUN.FitResult(run_dir=None, history=[], best_val_acc=None)  # test {}: no report

    monkeypatch.setattr(RUN, "train", fake_train)
    assert main(["train", *argv]) == 0
    (config,) = seen
    return config


def test_options_win_over_the_preset_whatever_their_order(monkeypatch):
    later = _config_the_cli_trains_with(monkeypatch, ["--preset", "d2l", "--epochs", "2"])
    assert (later.model, later.epochs, later.lr, later.resize) == ("d2l_resnet18", 2, 0.05, 96)
    earlier = _config_the_cli_trains_with(monkeypatch, ["--epochs", "2", "--preset", "d2l"])
    assert earlier == later
    default = _config_the_cli_trains_with(monkeypatch, [])
    assert default == preset("fast") != TrainConfig()  # no preset: `fast`, with its levers


def test_a_config_file_sets_defaults_and_options_win_over_it(monkeypatch, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("preset: d2l\nepochs: 3\nlr: 0.1\nflip: true\n")
    for argv in (["--config", str(path), "--lr", "0.2"], ["--lr", "0.2", "--config", str(path)]):
        config = _config_the_cli_trains_with(monkeypatch, argv)
        assert (config.model, config.epochs, config.lr, config.flip) == ("d2l_resnet18", 3, 0.2,
                                                                         True)
    assert main(["train", "--lr", "0.3", "--config", str(path), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["model"], printed["epochs"], printed["lr"]) == ("d2l_resnet18", 3, 0.3)


@pytest.mark.parametrize("flag", ["quiet", "deterministic", "compile", "flip", "tta-flip",
                                  "nesterov", "channels-last", "decay-bn-and-bias"])
def test_every_boolean_option_is_a_flag_with_a_no_form(monkeypatch, flag):
    field = flag.replace("-", "_")
    assert getattr(_config_the_cli_trains_with(monkeypatch, [f"--{flag}"]), field) is True
    assert getattr(_config_the_cli_trains_with(monkeypatch, [f"--no-{flag}"]), field) is False


def test_the_cli_and_preset_agree_on_the_resnet110_warmup(monkeypatch):
    from reslab.training import preset

    for argv in (["--preset", "paper-cifar", "--model", "resnet110"],
                 ["--model", "resnet110", "--preset", "paper-cifar"]):
        config = _config_the_cli_trains_with(monkeypatch, argv)
        assert config == preset("paper-cifar", model="resnet110")
        assert config.warmup_lr == 0.01
    explicit = _config_the_cli_trains_with(monkeypatch, ["--preset", "paper-cifar", "--model",
                                                         "resnet110", "--warmup-lr", "0.02"])
    assert explicit.warmup_lr == 0.02


def test_export_without_onnxruntime_names_the_extra_to_install(trained, tmp_path, monkeypatch,
                                                               capsys):
    run, _ = trained
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ImportError
    assert main(["export", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err == ("reslab: error: reslab export needs onnx and onnxruntime: pip install "
                   "'reslab[export]'\n")
    assert not (tmp_path / "m.onnx").exists()
