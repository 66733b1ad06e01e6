"""The real CLI, driven by generated argument vectors for every subcommand: whatever the
arguments, it exits 0, 1 or 2, never with a traceback, and writes nothing outside the output
paths it was given. In-process for speed; a few cases through ``python -m reslab`` too.

Training is kept to one step on 8x8 images, and experiments to settings that must be refused,
so that each case takes at most a few seconds."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from reslab.cli import main
from reslab.runtime.checkpoint import save_checkpoint

from . import hostile

OUTPUT_OPTIONS = ("--out", "--onnx", "--confusion")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """An image folder of the checkpoint's ten classes, a run holding that checkpoint, an
    image, a text file and a folder for outputs."""
    root = tmp_path_factory.mktemp("cli-property")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in hostile.CLASSES:
            for i in range(2):
                folder = root / "pets" / split / label
                folder.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    data = f"folder:{root / 'pets'}"
    hostile.write_checkpoint(root / "run" / "checkpoints" / "best.safetensors", data=data,
                             config={"seed": 0, "channels": 1, "image_size": 16})
    (root / "run" / "config.json").write_text(json.dumps({"config": {"data": data}}))
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "image.png")
    (root / "notes.txt").write_text("the user's own file")
    (root / "out").mkdir()
    return root


def _paths(root: Path):
    """Path values: real inputs, fresh outputs, and paths no command can use."""
    ckpt = root / "run" / "checkpoints" / "best.safetensors"
    return st.sampled_from([
        str(ckpt), str(root / "run"), str(root / "image.png"), str(root / "notes.txt"),
        str(root / "pets"), f"folder:{root / 'pets'}", str(root / "pets" / "train" / "class1"),
        str(root / "out" / "m.onnx"), str(root / "out" / "g.safetensors"),
        str(root / "out" / "grid.png"), str(root / "out" / "run"), str(root / "out" / "new"),
        str(root / "run" / "confusion.png"), str(root / "nowhere" / "x.png"),
        "/proc/x.png", "~nobody-here-zz/x", str(root / ("n" * 300 + ".png")), "", "-",
        str(root / "out" / "line\nbreak.png"), "\x1b[2J.png",
    ])


NUMBERS = st.sampled_from(["-1", "0", "1", "2", "3", "7", "2048", "2049", str(2**64), "nan",
                           "inf", "1e309", "abc", "", "0x10", " 3"])
WORDS = st.sampled_from(["cpu", "cuda", "mps", "meta", "auto", "fp16", "bf16", "fp32", "train",
                         "val", "test", "resnet14", "resnet5", "fashion-mnist", "mnist",
                         "cifar10", "degradation", "bogus", "\x00", "é", "--", "-v"])


def _command(root: Path):
    """(argv) for one subcommand, its options drawn from each command's own and hostile ones."""
    paths, value = _paths(root), st.one_of(NUMBERS, WORDS, _paths(root))
    path_options = {"--out", "--onnx", "--confusion", "--config", "--init-from", "--resume",
                    "--data", "--data-dir"}
    word_options = {"--device", "--precision", "--split", "--model", "--compare"}

    def value_for(option: str):  # mostly of the option's own kind, sometimes anything
        kind = paths if option in path_options else WORDS if option in word_options else NUMBERS
        return st.one_of(kind, kind, kind, value)
    ckpt = str(root / "run" / "checkpoints" / "best.safetensors")
    base_train = ["train", "--data", f"folder:{root / 'pets'}", "--image-size", "8",
                  "--channels", "1", "--epochs", "1", "--max-steps", "1", "--batch-size", "4",
                  "--val-size", "2", "--quiet"]
    commands = {
        "train": (base_train, ["--seed", "--threads", "--device", "--precision", "--lr",
                               "--out", "--config", "--init-from", "--resume", "--crop-padding",
                               "--momentum", "--model"]),
        "eval": (["eval"], ["--data", "--data-dir", "--split", "--confusion", "--json"]),
        "predict": (["predict", ckpt], ["--top-k", "--json"]),
        "export": (["export"], ["--onnx", "--opset"]),
        "grow": (["grow", ckpt, "--stage", "1"], ["--blocks", "--out", "--no-shortcut"]),
        "summary": (["summary"], ["--input", "--compare", "--json"]),
        "models": (["models"], []),
        "data info": (["data", "info"], ["--data-dir", "--val-size", "--seed", "--image-size",
                                         "--channels"]),
        "data show": (["data", "show"], ["--out", "--split", "--count", "--resize",
                                         "--val-size", "--augmented"]),
        "experiment": (["experiment"], ["--set"]),
    }

    @st.composite
    def build(draw):
        name = draw(st.sampled_from(sorted(commands)))
        start, options = commands[name]
        argv = list(start)
        if name in ("eval", "export", "data info", "data show", "summary", "experiment"):
            argv.append(draw(st.one_of(paths, WORDS)))  # the positional argument
        if name == "predict":
            argv += draw(st.lists(paths, min_size=1, max_size=3))
        for option in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
            if option in ("--json", "--no-shortcut", "--augmented"):
                argv.append(option)
            elif option == "--set":  # settings that must be refused: nothing trains
                argv += ["--quick", "--set", "epochs=" + draw(st.sampled_from(
                    ["-1", "0", "abc", "1e309", str(2**64), "[1]"]))]
            else:
                argv += [option, draw(value_for(option))]
        return argv

    return build()


def _snapshot(root: Path) -> dict[str, str]:
    files = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            files[str(path)] = "folder"
    return files


def _outputs(argv: list[str]) -> list[Path]:
    """The paths the command was told to write."""
    return [Path(os.path.abspath(argv[i + 1])) for i, a in enumerate(argv[:-1])
            if a in OUTPUT_OPTIONS]


def _check(root: Path, argv: list[str], code: int, err: str, before: dict[str, str]) -> None:
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    changed = {p for p, digest in _snapshot(root).items() if before.get(p) != digest}
    changed |= {p for p in before if not os.path.lexists(p)}  # removed
    allowed = _outputs(argv)
    stray = [p for p in changed if not any(Path(p) == o or o in Path(p).parents
                                           for o in allowed)]
    assert not stray, (argv, stray, err)


@pytest.mark.filterwarnings("ignore")
def test_any_arguments_end_in_0_1_or_2_without_traceback_or_stray_files(workspace):
    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=_command(workspace))
    def run(argv):
        before = _snapshot(workspace)
        # in the outputs' folder: a default output lands among the outputs
        code, _, err = _in_process(argv, workspace / "out")
        _check(workspace, [*argv, "--out", str(workspace / "out")], code, err, before)

    run()


def test_the_installed_command_too(workspace):
    """A few generated cases through ``python -m reslab`` in a child, each with a time limit."""
    @settings(max_examples=4, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=_command(workspace))
    def run(argv):
        before = _snapshot(workspace)
        if any("\x00" in a for a in argv):  # no process can be given a NUL in an argument
            return
        done = subprocess.run([sys.executable, "-m", "reslab", *argv], capture_output=True,
                              text=True, timeout=300, cwd=workspace / "out")
        _check(workspace, [*argv, "--out", str(workspace / "out")], done.returncode,
               done.stderr, before)

    run()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3), max_leaves=6)
# spec sizes at and past every bound: units (2,000), widths, input sides (2,048), classes
SIZES = st.sampled_from([0, 1, 2, 3, 16, 2047, 2048, 2049, 2000, 2001, 10**5, 10**6, 2**31,
                         2**63, -1])


@st.composite
def _edited_metadata(draw):
    """The tiny checkpoint's metadata with one to three fields replaced: by a JSON value of
    any type, or (spec fields and input_size) by sizes at and past the bounds."""
    meta = hostile.checkpoint_metadata()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["meta", "spec", "sizes", "input_size"]))
        if where == "meta":
            meta[draw(st.sampled_from(sorted(meta)))] = draw(JSON_VALUES)
        elif where == "spec":
            meta["spec"] = dict(meta["spec"])
            meta["spec"][draw(st.sampled_from(sorted(meta["spec"])))] = draw(JSON_VALUES)
        elif where == "sizes":
            meta["spec"] = dict(meta["spec"])
            name = draw(st.sampled_from(["depths", "widths"]))
            meta["spec"][name] = [draw(SIZES) for _ in range(draw(st.integers(1, 3)))]
            meta["spec"]["input_size" if draw(st.booleans()) else "num_classes"] = draw(SIZES)
        else:
            meta["input_size"] = [draw(st.sampled_from([1, 3, 0])), draw(SIZES), draw(SIZES)]
    return meta


@pytest.mark.filterwarnings("ignore")
def test_generated_checkpoints_through_summary_eval_and_resume(workspace, tmp_path_factory):
    """Checkpoints with metadata of every JSON type and spec sizes at and past every bound,
    given to summary, eval and --resume: exit 0, 1 or 2, one line, never a traceback, in
    seconds (the unchecked --resume path took minutes and tens of GB)."""
    root = tmp_path_factory.mktemp("edited")
    weights = hostile.write_checkpoint(root / "w.safetensors")
    tensors = safetensors.torch.load_file(weights)
    data = f"folder:{workspace / 'pets'}"
    config = {"data": data, "channels": 1, "image_size": 16, "seed": 0, "epochs": 2,
              "batch_size": 8, "val_size": 4}

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(meta=_edited_metadata(), command=st.sampled_from(["summary", "eval", "resume"]))
    def run(meta, command):
        run_dir = root / "run"
        meta = meta | ({"config": config} if command == "resume" else {})
        path = save_checkpoint(run_dir / "checkpoints" / "last.safetensors", tensors, meta)
        argv = {"summary": ["summary", str(path)], "eval": ["eval", str(path), "--data", data],
                "resume": ["train", "--resume", str(run_dir), "--quiet"]}[command]
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stopped:
                code = stopped.code
        assert code in (0, 1, 2), (argv, meta, err.getvalue())
        assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
        if code:
            assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        assert time.perf_counter() - started < 60, (argv, meta)
        for leftover in run_dir.glob("*"):
            if leftover.name != "checkpoints":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    run()


# --- generated config files -------------------------------------------------------------------

def _config_fields() -> list[str]:
    import dataclasses

    from reslab.training import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


# what a tiny run may take from a file and still end in seconds (no compile, resize, model...)
RUN_FIELDS = ["lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing", "gamma",
              "erase", "crop_padding", "flip", "tta_flip", "tta_shift", "ema_decay", "seed",
              "grad_clip", "schedule", "milestones", "optimizer", "nesterov", "freeze",
              "lookahead_steps", "lookahead_alpha", "warmup_lr", "init", "normalize", "data"]

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 0.5, 0.999999, 1.0]),
    st.text(max_size=12), st.sampled_from(["sgd", "multistep", "fashion-mnist", "stem,layer1",
                                           "\x1b[2J", "é", "$\\frac{$", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


@st.composite
def _config_text(draw, fields: list[str]) -> str:
    """A config file: a mapping of fields (some unknown) to values of every type, as YAML or
    JSON, now and then nested far deeper than any config is."""
    import yaml

    keys = st.one_of(st.sampled_from(fields), st.sampled_from(["preset", "bogus", "Epochs"]))
    values = draw(st.dictionaries(keys, VALUES, max_size=4))
    kind = draw(st.sampled_from(["yaml", "json", "deep", "raw"]))
    if kind == "yaml":
        return yaml.safe_dump(values, allow_unicode=True)
    if kind == "json":
        return json.dumps(values)  # NaN and Infinity as JavaScript writes them: not YAML
    if kind == "deep":
        depth = draw(st.sampled_from([9, 100, 5_000, 60_000]))
        field = draw(st.sampled_from(fields))
        return f"{field}: " + "[" * depth + "1" + "]" * depth + "\n"
    return draw(st.text(max_size=40))


def _in_process(argv, cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stopped:
                code = stopped.code
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.filterwarnings("ignore")
def test_any_config_file_prints_a_valid_config_or_one_line(workspace):
    fields = _config_fields()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=_config_text(fields))
    def run(text):
        config = workspace / "out" / "config.yaml"
        config.write_text(text)
        before = _snapshot(workspace)
        code, out, err = _in_process(["train", "--config", str(config), "--print-config"],
                                     workspace / "out")
        _check(workspace, ["train", "--out", str(workspace / "out")], code, err, before)
        if code == 0:
            printed = _strict_json(out)  # finite numbers only: what a run can take
            assert set(printed) <= set(fields), printed
        else:
            assert len(err.strip().splitlines()) == 1 or code == 2, err

    run()


@pytest.mark.filterwarnings("ignore")
def test_a_real_tiny_run_takes_any_config_file_or_refuses_it(workspace):
    counter = iter(range(10**6))

    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=_config_text(RUN_FIELDS))
    def run(text):
        config = workspace / "out" / "config.yaml"
        config.write_text(text)
        out = workspace / "out" / f"run-{next(counter)}"
        argv = ["train", "--config", str(config), "--data", f"folder:{workspace / 'pets'}",
                "--image-size", "8", "--channels", "1", "--epochs", "1", "--max-steps", "1",
                "--batch-size", "4", "--val-size", "2", "--model", "resnet14", "--no-compile",
                "--threads", "1", "--quiet", "--out", str(out)]
        before = _snapshot(workspace)
        code, stdout, err = _in_process(argv, workspace / "out")
        _check(workspace, ["train", "--out", str(workspace / "out")], code, err, before)
        if code == 0:
            assert (out / "results.json").is_file()
            _strict_json((out / "results.json").read_text())
        else:
            assert err.strip().splitlines()[-1].startswith("reslab: error: "), err

    run()
