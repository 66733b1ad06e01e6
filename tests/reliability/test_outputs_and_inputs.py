"""Nothing a file or an argument says destroys the user's data, hangs the program, chooses what
it reads or forges its output. Each attacker's file is built here; every refusal is one line,
exit 1, and leaves every existing file byte-identical."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reslab.cli import main
from reslab.deploy import iter_predictions
from reslab.paths import printable

from . import hostile


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def run(tmp_path) -> Path:
    """A run as fit leaves it: config.json, its checkpoints, its plots."""
    run = tmp_path / "run"
    hostile.write_checkpoint(run / "checkpoints" / "last.safetensors", train_state=True)
    hostile.write_checkpoint(run / "checkpoints" / "best.safetensors")
    (run / "config.json").write_text(json.dumps({"config": {"data": "fashion-mnist"}}))
    _png(run / "confusion.png", 7)
    return run


@pytest.fixture
def pets(tmp_path) -> Path:
    """A small image folder: two classes of four images."""
    for label in ("cat", "dog"):
        for i in range(4):
            _png(tmp_path / "pets" / label / f"{i}.png", 40 * i + (label == "dog") * 100)
    return tmp_path / "pets"


def snapshot(root: Path) -> dict[str, str]:
    """Every file (and link) under ``root``, by content."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def refused(argv, expected: str, root: Path, limit_s: float = 20) -> None:
    """``reslab argv`` exits 1 with one line holding ``expected``, within ``limit_s``,
    every file under ``root`` as it was."""
    before = snapshot(root)
    started = time.monotonic()
    code, out, err = cli(*argv)
    assert code == 1, err
    assert err.startswith("reslab: error: ") and len(err.splitlines()) == 1, err
    assert expected in err, err
    assert time.monotonic() - started < limit_s
    assert snapshot(root) == before


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stopped:
            code = stopped.code
    return code, out.getvalue(), err.getvalue()


# --- outputs that would destroy inputs ----------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    (["export", "{ckpt}", "--onnx", "{ckpt}"], "must end in .onnx"),
    (["export", "{run}", "--onnx", "{run}/checkpoints/model.onnx"], "inside {run}/checkpoints"),
    (["export", "{ckpt}", "--onnx", "{tmp}/link.onnx"], "is an input of this command"),
    (["export", "{ckpt}", "--onnx", "{run}/checkpoints"], "must end in .onnx"),
    (["eval", "{ckpt}", "--confusion", "{ckpt}"], "must end in .png"),
    (["eval", "{run}", "--confusion", "{run}/confusion.png"], "is an input of this command"),
    (["eval", "{run}", "--data", "folder:{pets}", "--confusion", "{pets}/cat/c.png"],
     "inside {pets}, an input"),
    (["grow", "{ckpt}", "--stage", "1", "--blocks", "1", "--out", "{ckpt}"],
     "is an input of this command"),
    (["grow", "{run}", "--stage", "1", "--blocks", "1", "--out", "{run}/checkpoints/last"
      ".safetensors"], "inside {run}/checkpoints, an input"),
    (["grow", "{ckpt}", "--stage", "1", "--blocks", "1", "--out", "{run}/checkpoints/g"
      ".safetensors"], "inside {run}/checkpoints"),
    (["data", "show", "folder:{pets}", "--out", "{pets}/cat/grid.png"], "inside {pets}"),
    (["data", "show", "folder:{pets}", "--out", "{pets}/dog/0.png"], "inside {pets}, an input"),
    (["train", "--data", "folder:{pets}", "--out", "{pets}/cat/run"], "inside {pets}"),
    (["train", "--data", "folder:{pets}", "--out", "{pets}"], "inside {pets}"),
    (["train", "--data", "folder:{pets}", "--out", "{tmp}/mine"],
     "holds files reslab did not write (notes.txt) and no reslab run"),
])
def test_an_output_that_is_an_input_is_refused_before_any_work(argv, expected, run, pets,
                                                              tmp_path):
    ckpt = run / "checkpoints" / "best.safetensors"
    (tmp_path / "link.onnx").symlink_to(ckpt)  # a name the output check must see through
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's own file")
    fill = dict(ckpt=ckpt, run=run, pets=pets, tmp=tmp_path)
    before = snapshot(tmp_path)
    code, out, err = cli(*(a.format(**fill) for a in argv))
    assert code == 1, err
    assert err.startswith("reslab: error: ") and len(err.splitlines()) == 1, err
    assert expected.format(**fill) in err
    assert snapshot(tmp_path) == before  # every file byte-identical, nothing added


@pytest.mark.parametrize("config", [
    {"architecture": "resnet18", "num_classes": 10},  # a Hugging Face / timm model folder
    {"config": {"epochs": 3}, "versions": {"torch": "2.4"}},  # close to reslab's, not it
    None,  # a Lightning project: checkpoints/ and no config.json
])
def test_train_out_takes_over_no_folder_reslab_did_not_make(config, pets, tmp_path):
    theirs = tmp_path / "theirs"
    hostile.write_checkpoint(theirs / "checkpoints" / "best.safetensors")
    (theirs / "results.json").write_text('{"accuracy": 0.97}')
    (theirs / ".notes.part").write_text("half-written notes")
    if config is not None:
        (theirs / "config.json").write_text(json.dumps(config))
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--data", f"folder:{pets}", "--out", theirs, "--max-steps", "1")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"--out {theirs} holds files reslab did not write (" in err
    assert "and no reslab run: choose a new or empty folder" in err
    assert snapshot(tmp_path) == before  # nothing overwritten, .notes.part not deleted


def test_a_run_folder_says_reslab_made_it(pets, tmp_path):
    from reslab.runtime.run_folder import RUN_FORMAT, is_reslab_run

    out = tmp_path / "run"
    code, _, err = cli("train", "--data", f"folder:{pets}", "--out", out, "--max-steps", "1",
                       "--batch-size", "4", "--quiet")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["format"] == RUN_FORMAT
    assert is_reslab_run(out)
    # runs from before the marker are still reslab's: their record's three sections
    record = json.loads((out / "config.json").read_text())
    del record["format"]
    (out / "config.json").write_text(json.dumps(record))
    assert is_reslab_run(out)
    (out / "config.json").unlink()
    (out / "config.json").symlink_to(tmp_path / "elsewhere.json")
    assert not is_reslab_run(out)


def test_export_writes_beside_its_target_through_a_fresh_temporary_file(run, tmp_path):
    """A link planted at the old predictable temporary name is neither followed nor removed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".model.onnx.part").symlink_to(victim)
    code, out, err = cli("export", run, "--onnx", tmp_path / "model.onnx")
    assert code == 0, err
    assert victim.read_text() == "precious"
    assert os.readlink(tmp_path / ".model.onnx.part") == str(victim)
    assert (tmp_path / "model.onnx").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.onnx.part", "model.onnx",
                                                          "run", "victim.txt"]


def test_a_missing_output_folder_is_made(run, tmp_path):
    code, _, err = cli("export", run, "--onnx", tmp_path / "new" / "deeper" / "m.onnx")
    assert code == 0, err and (tmp_path / "new" / "deeper" / "m.onnx").is_file()


# --- waiting forever ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_fifo_is_refused_without_being_opened_and_the_other_images_still_predict(run,
                                                                                   tmp_path):
    """In a child process with a timeout: opening a FIFO with no writer would block forever."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    fifo_checkpoint = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo_checkpoint)
    fifo_config = tmp_path / "pipe.yaml"
    os.mkfifo(fifo_config)
    good = [_png(tmp_path / "a.png", 10), _png(tmp_path / "b.png", 200)]
    ckpt = run / "checkpoints" / "best.safetensors"

    def reslab(*argv):
        return subprocess.run([sys.executable, "-m", "reslab", *map(str, argv)],
                              capture_output=True, text=True, timeout=120)

    done = reslab("predict", ckpt, good[0], fifo, good[1])
    assert done.returncode == 1
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == list(map(str, good))
    assert done.stderr == (f"reslab: error: {fifo}: not a regular file (a folder, pipe, device "
                           "or socket); give the image as a file\n")
    for argv in (["predict", fifo_checkpoint, good[0]], ["train", "--config", fifo_config]):
        done = reslab(*argv)
        assert done.returncode == 1 and "not a regular file" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_predict_gives_each_result_as_it_is_made(run, tmp_path):
    """The second image does not exist yet when the first result comes out."""
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    _png(first, 30)
    results = iter_predictions(run, [first, second], top_k=2)
    assert next(results).path == str(first)
    _png(second, 220)
    late = next(results)
    assert late.path == str(second) and late.error is None and len(late.top) == 2


def test_predict_reads_folders_sorted_and_writes_json_lines(run, tmp_path):
    folder = tmp_path / "shots"
    for name in ("b.png", "a.png", ".hidden.png", "notes.txt"):
        _png(folder / name) if name.endswith(".png") else (folder / name).write_text("x")
    code, out, err = cli("predict", run, folder, "--json", "--top-k", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png"]
    assert all(r["error"] is None and len(r["top"]) == 2 for r in rows)


# --- a file deciding what is read, or what is printed ------------------------------------------

def test_a_checkpoint_does_not_choose_the_folder_eval_reads(pets, tmp_path):
    planted = hostile.write_checkpoint(tmp_path / "planted.safetensors", data=f"folder:{pets}")
    code, _, err = cli("eval", planted)
    assert code == 1
    assert "a checkpoint does not choose what reslab reads: give the data with --data" in err


def test_names_from_files_cannot_forge_lines_or_drive_the_terminal(tmp_path):
    """A newline in an image's name, escape sequences in a checkpoint's class names."""
    classes = [f"\x1b[2J\x1b]0;pwned\x07class{i}\nfake: 1.000" for i in range(10)]
    ckpt = hostile.write_checkpoint(tmp_path / "c.safetensors", classes=classes)
    forged = _png(tmp_path / "x.png\nother.png: class0 1.000, class1 0.000.png")
    code, out, err = cli("predict", ckpt, forged, tmp_path / "gone\n.png", "--top-k", "1")
    assert code == 1
    assert len(out.splitlines()) == 1 and len(err.splitlines()) == 1, (out, err)
    assert "\x1b" not in out + err and "\x07" not in out
    assert out.startswith(printable(forged) + ": \\x1b[2J\\x1b]0;pwned\\x07class")
    assert "\\n" in err
    code, out, _ = cli("predict", ckpt, forged, "--json")
    assert json.loads(out)["top"][0][0] in classes  # JSON keeps the name, escaped by JSON


def test_class_folder_names_are_printed_escaped(tmp_path):
    for label in ("plain", "\x1b[31mred\nfake line"):
        for i in range(3):
            _png(tmp_path / "odd" / label / f"{i}.png", 60 * i)
    code, out, err = cli("data", "info", f"folder:{tmp_path / 'odd'}", "--val-size", "1")
    assert code == 0, err
    assert "\x1b" not in out and "\\x1b[31mred\\nfake line" in out
    assert not any(line.startswith("fake line") for line in out.splitlines())


# --- bounded work -----------------------------------------------------------------------------

def test_huge_sizes_in_a_checkpoint_are_refused_before_anything_is_built(tmp_path):
    """In a child whose memory may grow 256 MiB: a million units, an input of 40000x40000, a
    width of 10^9, a billion classes, no classifier head: each one line, found in the header."""
    tiny = hostile.TINY
    cases = {
        "depths 1000000": dict(spec=tiny.to_dict() | {"depths": [1_000_000, 1]}),
        "input 40000": dict(input_size=[1, 40_000, 40_000]),
        "width 10^9": dict(spec=tiny.to_dict() | {"widths": [8, 10**9]}),
        "10^9 classes": dict(spec=None, model="resnet18", num_classes=10**9, in_channels=1),
        "no head": dict(network=tiny.replace(num_classes=0), classes=hostile.CLASSES),
    }
    image = _png(tmp_path / "i.png")
    paths = {name: hostile.write_checkpoint(tmp_path / f"{i}.safetensors", **changes)
             for i, (name, changes) in enumerate(cases.items())}
    calls = "\n".join(f"attempt({name!r}, lambda: reslab.deploy.predict_files({str(p)!r}, "
                      f"[{str(image)!r}]))" for name, p in paths.items())
    results = hostile.run_capped("import reslab.deploy\n" + calls)
    assert results.pop("control") == "MemoryError"
    assert results.pop("peak_rss_mib") < 1024
    expected = {
        "depths 1000000": "depths (1,000,000, 1) ask for 1,000,001 residual units, more than "
                          "the limit of 2,000",
        "input 40000": "metadata asks for 40,000 input height, more than the limit of 2,048",
        # 3x3 convs 9 * (8 * 8 + 8 * 8) + 9 * (8 * 10^9 + 10^9 * 10^9), head 10^9 * 10
        "width 10^9": "its spec describes a network of at least 9,000,000,082,000,001,152 "
                      "parameters but the file holds 5,272 numbers",
        "10^9 classes": "metadata asks for 1,000,000,000 num_classes, more than the limit",
        "no head": "metadata names 10 classes but the model has 16 outputs (a feature extractor",
    }
    for name, (kind, message) in results.items():
        assert kind == "WeightsError" and expected[name] in message, (name, kind, message)


def test_an_extracted_cifar_file_of_absurd_size_is_refused_unread(tmp_path):
    from reslab.data import cifar
    from reslab.errors import CorruptDataError

    folder = tmp_path / "cifar-10-batches-bin"
    for name, data in hostile.cifar10_members().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    with open(folder / "data_batch_1.bin", "r+b") as sparse:
        sparse.truncate(50 << 30)  # 50 GB that take no disk
    with pytest.raises(CorruptDataError, match="53,687,091,200 bytes, more than any official"):
        cifar.load_cifar(cifar.CIFAR10, tmp_path, download=False)


def test_a_yaml_alias_bomb_in_a_config_is_refused(tmp_path):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
        for i in range(20)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    code, _, err = cli("train", "--config", tmp_path / "bomb.yaml", "--print-config")
    assert code == 1 and "YAML aliases (*name) are not allowed" in err
