"""Every subcommand, given a value out of range, of the wrong type or in conflict with another,
exits non-zero with one line that names the problem, never a traceback, and writes nothing.

Exit 1: reslab refused the value; exit 2: the parser did (wrong type, unknown option or choice).
"""

import contextlib
import io

import pytest

from reslab.cli import main

RUN = "{run}"  # replaced by a trained run directory
CKPT = "{run}/checkpoints/best.safetensors"
PNG = "{image}"

TRAIN = ["train", "--data", "folder:{folder}", "--image-size", "16", "--channels", "1",
         "--val-size", "40", "--quiet", "--out", "{tmp}/new-run"]

# (argv, exit code, text the one line must hold)
CASES = [
    # train: ranges
    ([*TRAIN, "--epochs", "-1"], 1, "epochs must be a positive integer, got -1"),
    ([*TRAIN, "--epochs", "0"], 1, "epochs must be a positive integer, got 0"),
    ([*TRAIN, "--batch-size", "0"], 1, "batch_size must be a positive integer, got 0"),
    ([*TRAIN, "--lr", "0"], 1, "lr must be a positive number, got 0"),
    ([*TRAIN, "--lr", "-0.1"], 1, "lr must be a positive number, got -0.1"),
    ([*TRAIN, "--lr", "inf"], 2, "lr"),  # the parser takes finite numbers only
    ([*TRAIN, "--lr", "nan"], 2, "lr"),
    ([*TRAIN, "--momentum", "1.5"], 1, "momentum"),
    ([*TRAIN, "--label-smoothing", "1"], 1, "label_smoothing"),
    ([*TRAIN, "--weight-decay", "-1"], 1, "weight_decay must be a number >= 0, got -1"),
    ([*TRAIN, "--erase", "2"], 1, "erase"),
    ([*TRAIN, "--ema-decay", "1"], 1, "ema_decay"),
    ([*TRAIN, "--grad-clip", "0"], 1, "grad_clip must be a positive number, got 0"),
    ([*TRAIN, "--crop-padding", "-2"], 1, "crop_padding must be an integer from 0 to 2048"),
    ([*TRAIN, "--val-size", "-5"], 1, "val_size must be an integer >= 0, got -5"),
    ([*TRAIN, "--train-subset", "0"], 1, "train_subset must be a positive integer, got 0"),
    ([*TRAIN, "--threads", "0"], 1, "threads must be a positive integer, got 0"),
    ([*TRAIN, "--checkpoint-every", "-1"], 1, "checkpoint_every must be an integer >= 0"),
    ([*TRAIN, "--channels", "2"], 1, "channels must be 1 or 3, got 2"),
    ([*TRAIN, "--gamma", "0"], 1, "gamma"),
    # train: values beyond what this machine has or any real use
    ([*TRAIN, "--threads", "100000"], 1, "threads must be at most"),
    ([*TRAIN, "--seed", str(2**64)], 1, "seed must be an integer in [0, 2**63), got 1844674"),
    ([*TRAIN, "--device", "mps"], 1, "device 'mps' is not supported here"),
    ([*TRAIN, "--device", "meta"], 1, "device 'meta' is not supported here"),
    ([*TRAIN, "--device", "cuda:7"], 1, "cuda"),
    ([*TRAIN, "--resize", "40000"], 1, "resize must be an integer from 1 to 2048, got 40000"),
    ([*TRAIN, "--image-size", "40000"], 1, "image_size must be an integer from 1 to 2048"),
    # paths no one can use: an unknown ~user, a name longer than any file system allows
    (["train", "--data", "~nobody-here-zz/pets", "--out", "{tmp}/new-run"], 1,
     "image folder ~nobody-here-zz/pets: no user 'nobody-here-zz' on this machine"),
    ([*TRAIN[:-1], "~nobody-here-zz/run"], 1, "--out ~nobody-here-zz/run: no user"),
    ([*TRAIN[:-1], "{tmp}/" + "r" * 300], 1, "a name in it is longer than 255 bytes"),
    (["train", "--config", "~nobody-here-zz/c.yaml"], 1, "--config ~nobody-here-zz/c.yaml: no"),
    (["train", "--resume", "~nobody-here-zz/run"], 1, "--resume ~nobody-here-zz/run: no user"),
    (["data", "info", "mnist", "--data-dir", "~nobody-here-zz/d"], 1, "--data-dir ~nobody"),
    (["data", "info", "folder:{folder}", "--seed", str(2**70)], 1, "seed must be an integer"),
    (["data", "info", "folder:{folder}", "--image-size", "100000"], 1, "image_size must be in"),
    (["predict", "~nobody-here-zz/c.safetensors", PNG], 1, "checkpoint ~nobody-here-zz/c"),
    (["export", CKPT, "--onnx", "{tmp}/" + "m" * 300 + ".onnx"], 1, "longer than 255 bytes"),
    # outputs where nothing can be written, or a file stands where a folder is needed
    (["export", CKPT, "--onnx", "/proc/m.onnx"], 1, "--onnx /proc/m.onnx: cannot write in /proc"),
    (["export", CKPT, "--onnx", PNG + "/m.onnx"], 1, "is not a folder"),
    (["export", CKPT, "--onnx", "{tmp}"], 1, "must end in .onnx"),
    (["eval", RUN, "--confusion", "/proc/c.png"], 1, "--confusion /proc/c.png: cannot write"),
    (["data", "show", "folder:{folder}", "--out", "/proc/x/g.png"], 1, "cannot write in /proc"),
    (["grow", CKPT, "--stage", "1", "--blocks", "1", "--out", "/proc/g.safetensors"], 1,
     "cannot write in /proc"),
    (["grow", CKPT, "--stage", "1", "--blocks", "1000000000", "--out", "{tmp}/g.safetensors"],
     1, "blocks must be from 1 to"),
    # train: values that conflict with another value or with the data
    ([*TRAIN, "--batch-size", "100000"], 1,
     "batch_size 100000 is larger than the 260 training images"),
    ([*TRAIN, "--val-size", "100000"], 1, "val_size"),
    ([*TRAIN, "--train-subset", "100000"], 1, "train_subset"),
    ([*TRAIN, "--schedule", "multistep"], 1, "schedule multistep needs milestones"),
    ([*TRAIN, "--schedule", "multistep", "--milestones", "[30,10]"], 1,
     "milestones must be increasing positive steps"),
    ([*TRAIN, "--optimizer", "adamw"], 1, "nesterov needs SGD with momentum > 0"),
    ([*TRAIN, "--precision", "fp16", "--device", "cpu"], 1, "fp16"),
    ([*TRAIN, "--device", "cuda"], 1, "cuda"),
    ([*TRAIN, "--device", "tpu"], 1, "tpu"),
    # train: unknown names, missing things
    ([*TRAIN, "--model", "resnet5"], 1, "unknown model 'resnet5'; closest: resnet56"),
    (["train", "--data", "fashion-mnis", "--out", "{tmp}/new-run"], 1,
     "unknown data set 'fashion-mnis'"),
    (["train", "--data", "folder:{tmp}/nowhere", "--out", "{tmp}/new-run"], 1, "nowhere"),
    (["train", "--resume", "{tmp}/nowhere"], 1, "nowhere"),
    (["train", "--config", "{tmp}/nowhere.yaml"], 1, "nowhere.yaml"),
    # train: the parser's refusals
    (["train", "--epochs", "abc"], 2, "epochs"),
    (["train", "--lr", "fast"], 2, "lr"),
    (["train", "--optimizer", "rmsprop"], 2, "optimizer"),
    (["train", "--bogus", "1"], 2, "bogus"),
    (["train", "--preset", "d2"], 2,
     "invalid choice: 'd2' (choose from 'fast', 'accurate', 'best', 'd2l'"),
    # eval
    (["eval", "{tmp}/nowhere"], 1, "nowhere"),
    (["eval", RUN, "--data", "cifar-100000"], 1, "cifar-100000"),
    (["eval", RUN, "--split", "everything"], 2, "split"),
    # predict
    (["predict", CKPT, PNG, "--top-k", "0"], 1, "top_k"),
    (["predict", CKPT, PNG, "--top-k", "-3"], 1, "top_k"),
    (["predict", CKPT, PNG, "--top-k", "many"], 2, "--top-k"),
    (["predict", "{tmp}/nowhere.safetensors", PNG], 1, "nowhere.safetensors"),
    # export
    (["export", CKPT, "--onnx", "{tmp}/m.onnx", "--opset", "3"], 1, "opset"),
    (["export", CKPT], 2, "onnx"),
    (["export", "{tmp}/nowhere.safetensors", "--onnx", "{tmp}/m.onnx"], 1, "nowhere"),
    # summary
    (["summary", "resnet5"], 1, "unknown model 'resnet5'"),
    (["summary", "resnet18", "--input", "0x28x28"], 1, "input"),
    (["summary", "resnet18", "--input", "abc"], 1, "input"),
    (["summary", "resnet18", "--compare", "resnet5"], 1, "resnet5"),
    # data
    (["data", "info", "fashion-mnis"], 1, "unknown data set 'fashion-mnis'"),
    (["data", "show", "folder:{tmp}/nowhere", "--out", "{tmp}/grid.png"], 1, "nowhere"),
    # experiment
    (["experiment", "degradatio"], 1, "did you mean degradation?"),
    (["experiment", "degradation", "--quick", "--set", "bogus=1"], 1, "bogus"),
    (["experiment", "degradation", "--quick", "--set", "epochs=-1"], 1, "epochs"),
    (["experiment", "degradation", "--set", "epochs"], 1, "KEY=VALUE"),
    # grow
    (["grow", CKPT, "--stage", "9", "--blocks", "1", "--out", "{tmp}/g.safetensors"], 1,
     "stage"),
    (["grow", CKPT, "--stage", "1", "--blocks", "0", "--out", "{tmp}/g.safetensors"], 1,
     "blocks"),
    (["grow", CKPT, "--stage", "1", "--blocks", "1", "--out", "{tmp}/g.onnx"], 1,
     ".safetensors"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("bad-values") / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
                     "--image-size", "16", "--channels", "1", "--epochs", "1",
                     "--train-subset", "64", "--batch-size", "32", "--val-size", "40",
                     "--quiet", "--out", str(out)]) == 0
    return out


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stopped:  # the parser exits by itself
            code = stopped.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "code", "expected"), CASES,
                         ids=[" ".join(a[:1] + a[-2:]) for a, _, _ in CASES])
def test_a_bad_value_gets_one_line_and_a_non_zero_exit(argv, code, expected, trained,
                                                        image_folder, tmp_path):
    image = next((image_folder / "test").rglob("*.png"))
    fill = dict(run=trained, folder=image_folder, tmp=tmp_path, image=image)
    before = sorted(p.relative_to(trained) for p in trained.rglob("*"))
    got, out, err = _run([a.format(**fill) for a in argv])
    assert "Traceback" not in err + out
    assert err.startswith("reslab: error: ") or (code == 2 and "error:" in err), err
    # the parser prints its usage first; the error itself is one line
    assert err.strip().splitlines()[-1].count("error:") == 1, err
    assert expected in err, err
    assert got == code, (got, err)
    assert not (tmp_path / "new-run").exists()  # refused before any work
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("g.*"))
    assert sorted(p.relative_to(trained) for p in trained.rglob("*")) == before
