"""``reslab.load`` as a notebook user meets it: load, predict raw images of every kind as
``reslab predict`` does, evaluate as ``reslab eval`` does, refuse what it cannot take in one
line, and print results short."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import reslab
from reslab.cli import main
from reslab.errors import ConfigError, CorruptDataError, ReslabError, WeightsError
from reslab.runtime.evaluate import EvalResult


@pytest.fixture(scope="module")
def run(tmp_path_factory, image_folder):
    """A tiny run on the 16x16 grey folder: (what reslab.train returned, its folder)."""
    out = tmp_path_factory.mktemp("api") / "run"
    result = reslab.train(model="resnet14", data=f"folder:{image_folder}", image_size=16,
                          channels=1, epochs=1, max_steps=3, train_subset=96, batch_size=32,
                          val_size=40, precision="fp32", quiet=True, out=str(out),
                          lr=0.05, whiten_stem=False)  # probabilities far from 0 and 1
    return result, out


@pytest.fixture(scope="module")
def model(run):
    return reslab.load(run[1])


@pytest.fixture(scope="module")
def files(image_folder):
    return [sorted((image_folder / "test" / f"class{c}").iterdir())[0] for c in (3, 5, 7)]


def same(tops, expected) -> bool:
    """Top-k lists with the same classes, and probabilities equal to float rounding."""
    return all([c for c, _ in got] == [c for c, _ in expected]
               and [p for _, p in got] == pytest.approx([p for _, p in expected], abs=1e-6)
               for got in tops)


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, ReslabError)
    return message


def test_a_run_folder_and_its_checkpoint_load_the_same_model(run, model):
    _, folder = run
    checkpoint = folder / "checkpoints" / "best.safetensors"
    direct = reslab.load(checkpoint)
    assert model.source == direct.source == checkpoint
    assert model.classes == [f"class{i}" for i in range(10)]
    assert model.input_size == (1, 16, 16)
    meta = json.loads((folder / "config.json").read_text())["config"]
    assert model.tta_flip == meta["tta_flip"]
    assert isinstance(model.module, torch.nn.Module) and not model.module.training
    for a, b in zip(model.module.state_dict().values(), direct.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    shown = repr(model).splitlines()
    assert len(shown) == 2
    assert shown[0].startswith("TrainedModel resnet14: 10 classes, input 1x16x16, TTA ")
    assert shown[1] == f"  from {checkpoint}"


def test_predict_gives_reslab_predicts_probabilities(model, run, files, capsys):
    checkpoint = run[1] / "checkpoints" / "best.safetensors"
    assert main(["predict", str(checkpoint), *map(str, files), "--top-k", "10", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    one = model.predict(files[0], top_k=10)  # one image: the very computation predict made
    assert one.path == printed[0]["path"]
    assert [list(t) for t in one.top] == printed[0]["top"]
    several = model.predict(files, top_k=10)  # batched: float rounding only
    assert [p.path for p in several] == [p["path"] for p in printed]
    for got, expected in zip(several, printed, strict=True):
        assert same([got.top], expected["top"])


def test_every_kind_of_image_gives_the_files_answer(model, files):
    path = files[1]
    expected = model.predict(str(path), top_k=10)
    grey = np.array(Image.open(path))
    assert grey.shape == (16, 16) and grey.dtype == np.uint8
    kinds = {
        "Path": path, "PIL": Image.open(path), "PIL RGB": Image.open(path).convert("RGB"),
        "numpy HxW": grey, "numpy HxWx1": grey[..., None],
        "numpy HxWx3": np.repeat(grey[..., None], 3, axis=2),
        "tensor HxW": torch.from_numpy(grey), "tensor CxHxW": torch.from_numpy(grey)[None],
        "tensor in [0, 1]": torch.from_numpy(grey)[None].float() / 255,
        "int64 tensor": torch.from_numpy(grey)[None].long(),
    }
    for kind, image in kinds.items():
        got = model.predict(image, top_k=10)
        assert got.top == expected.top, kind
        assert got.path == (str(path) if kind == "Path" else None)
    batch = torch.from_numpy(grey)[None, None].repeat(3, 1, 1, 1)  # (N, C, H, W)
    assert same([p.top for p in model.predict(batch, top_k=10)], expected.top)
    mixed = model.predict([grey, str(path), Image.open(path)], top_k=10)
    assert len(mixed) == 3 and same([p.top for p in mixed], expected.top)
    assert 0.05 < expected.probability < 0.95  # a real distribution, not one saturated class
    assert model.predict([]) == []


def test_images_of_another_size_are_resized_as_files_are(model, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    expected = model.predict(path, top_k=10).top
    assert model.predict(pixels, top_k=10).top == expected
    assert model.predict(torch.from_numpy(pixels).permute(2, 0, 1), top_k=10).top == expected
    x = model.preprocess(pixels)
    assert x.shape == (1, 1, 16, 16) and x.dtype == torch.float32


def test_predict_is_softmax_of_the_module_on_normalised_input_with_the_runs_tta(model, files):
    image = np.array(Image.open(files[2]))
    x = (torch.from_numpy(image).float()[None, None] / 255 - model.mean[0]) / model.std[0]
    assert torch.allclose(model.preprocess(image), x)
    with torch.no_grad():
        logits = model(x)
        probs = logits.softmax(1)
        if model.tta_flip:
            probs = (probs + model.module(x.flip(3)).softmax(1)) / 2
    assert torch.equal(logits, model.module(x).detach())
    top = probs[0].topk(3)
    got = model.predict(image)
    assert got.label == model.classes[int(top.indices[0])]
    assert [p for _, p in got.top] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_predict_follows_the_modules_weights_when_they_change(run):
    model = reslab.load(run[1])
    image = np.full((16, 16), 128, dtype=np.uint8)
    before = model.predict(image, top_k=10)
    head = model.module.fc if hasattr(model.module, "fc") else model.module.get_classifier()
    target = before.top[-1][0]  # the least likely class becomes the most likely
    with torch.no_grad():
        head.bias[model.classes.index(target)] += 100
    assert model.predict(image).label == target
    head.bias.data[model.classes.index(target)] -= 200  # through .data: no version bump
    assert model.predict(image, top_k=10).top[-1][0] == target


def test_evaluate_gives_the_runs_test_results(model, run):
    results = json.loads((run[1] / "results.json").read_text())
    evaluated = model.evaluate()
    assert isinstance(evaluated, EvalResult)
    assert evaluated.count == results["images"] == 60
    assert evaluated.accuracy == results["accuracy"]
    assert evaluated.confusion.tolist() == results["confusion"]
    assert evaluated.per_class(model.classes) == results["per_class"]
    assert repr(evaluated) == (f"EvalResult(accuracy {results['accuracy']:.4f}, loss "
                               f"{evaluated.loss:.4f}, 60 images)")
    assert model.evaluate(split="val").count == 40


def test_normalised_or_odd_input_is_refused_in_one_line(model, files):
    x = model.preprocess(files[0])  # model input, not an image
    with pytest.raises(ConfigError) as error:
        model.predict(x[0])
    assert "float values in [" in one_line_error(error)
    assert "model(x)" in str(error.value)
    with pytest.raises(ConfigError, match=r"^image 0 \(ndarray float64 \(16, 16\)\): float"):
        model.predict(np.full((16, 16), 255.0))  # 0...255 as floats: which scale? refused
    with pytest.raises(ConfigError) as error:
        model(torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    assert "give raw images to predict()" in one_line_error(error)
    bad = {
        "3-D tensor must be (C, H, W)": torch.zeros(5, 16, 16, dtype=torch.uint8),
        "must be (H, W) or (H, W, C)": np.zeros((16, 16, 2), dtype=np.uint8),
        "integer values in [0, 300]": np.array([[0, 300]]),
        "bool pixels": np.zeros((4, 4), dtype=bool),
        "predict() takes file paths": {"not": "an image"},
    }
    for message, image in bad.items():
        with pytest.raises(ConfigError) as error:
            model.predict(image)
        assert message in one_line_error(error)
    with pytest.raises(ConfigError, match="top_k must be an integer >= 1"):
        model.predict(files[0], top_k=0)


def test_bad_paths_are_refused_in_one_line(model, tmp_path, run):
    with pytest.raises(WeightsError) as error:
        reslab.load(tmp_path / "missing.safetensors")
    assert one_line_error(error).startswith("no checkpoint at ")
    with pytest.raises(WeightsError) as error:
        reslab.load(tmp_path)
    assert "holds no checkpoints/best.safetensors" in one_line_error(error)
    weights = tmp_path / "weights.pth"
    shutil.copy(run[1] / "checkpoints" / "best.safetensors", weights)
    with pytest.raises(WeightsError) as error:
        reslab.load(weights)
    assert ".safetensors expected" in one_line_error(error)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(CorruptDataError) as error:
        model.predict(broken)
    assert one_line_error(error).startswith(f"{broken}: unreadable image")


def test_results_print_in_a_few_lines(run, model, files):
    result, folder = run
    shown = repr(result).splitlines()
    assert len(shown) == 2
    assert shown[0].startswith(f"FitResult: test accuracy {result.test['accuracy']:.4f} on 60 "
                               "images (model of epoch 1")
    assert str(folder) in shown[1]
    assert len(result.history) == 1 and result.test["confusion"]  # all still there
    prediction = model.predict(files[0])
    top = ", ".join(f"{c} {p:.3f}" for c, p in prediction.top)
    assert repr(prediction) == f"<Prediction {files[0]}: {top}>"
    assert repr(model.predict(np.array(Image.open(files[0])))) == f"<Prediction {top}>"
