"""The command line behaves like the tools people know: flags with a --no- form on every
subcommand, a description for every option, --version and help without torch, summary of
what train trains, -v showing reslab's logs only."""

import argparse
import json
import subprocess
import sys

import pytest

import reslab
from reslab.cli import build_parser, main


def all_parsers():
    parser, _ = build_parser()
    found = {"reslab": parser}

    def walk(p, prefix):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix} {name}"] = sub
                    walk(sub, f"{prefix} {name}")

    walk(parser, "reslab")
    return found


def test_every_option_of_every_command_has_a_description():
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, parser in all_parsers().items() for action in parser._actions
               if not (action.help or "").strip() and not isinstance(
                   action, argparse._SubParsersAction)]
    assert missing == []


def test_every_boolean_option_has_its_no_form():
    for name, parser in all_parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._StoreTrueAction) and action.dest not in (
                    "verbose", "print_config"):  # -v and --print-config are commands, not values
                pytest.fail(f"{name} {action.option_strings}: a flag without a --no- form")
            if isinstance(action, argparse.BooleanOptionalAction):
                positive = next(o for o in action.option_strings if not o.startswith("--no-"))
                assert f"--no-{positive[2:]}" in action.option_strings


@pytest.mark.parametrize("argv", [["eval", "x", "--json"], ["eval", "x", "--no-json"],
                                  ["predict", "x", "y", "--no-json"],
                                  ["export", "x", "--onnx", "o", "--no-tta"],
                                  ["export", "x", "--onnx", "o", "--include-normalization"],
                                  ["models", "--no-json"], ["summary", "resnet18", "--json"],
                                  ["data", "show", "mnist", "--out", "g.png", "--no-augmented"],
                                  ["experiment", "nested", "--no-quick"],
                                  ["grow", "x", "--stage", "1", "--blocks", "1", "--out", "g",
                                   "--no-shortcut"]])
def test_the_flags_parse_both_ways(argv):
    parser, _ = build_parser()
    parser.parse_args(argv)  # exits 2 on an unknown option


def test_version_help_and_the_model_list_answer_without_torch():
    code = ("import sys, reslab.cli as c\n"
            "try:\n    c.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    for argv in (["--version"], ["--help"], ["train", "--help"], [], ["models", "resnet"]):
        run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                             text=True, timeout=60)
        assert run.stdout.strip().splitlines()[-1] == "False", (argv, run.stdout)
    version = subprocess.run([sys.executable, "-m", "reslab", "--version"], capture_output=True,
                             text=True, timeout=60)
    assert version.stdout == f"reslab {reslab.__version__}\n"


def test_bare_reslab_prints_the_command_list(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: reslab") and "train" in out and "summary" in out


def test_summary_shows_what_train_trains(capsys):
    assert main(["summary", "fast_resnet10"]) == 0
    assert capsys.readouterr().out.startswith("fast_resnet10 at 1x28x28")
    assert main(["summary", "resnet18", "--in-channels", "1", "--num-classes", "5", "--input",
                 "1x64x64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input"] == [1, 64, 64] and data["rows"][-1]["output"] == [5]


def test_summary_of_a_checkpoint_and_of_a_run_directory(tmp_path, capsys, tiny_data):
    from reslab.models import ResNetSpec
    from reslab.training import TrainConfig, fit

    spec = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 2), widths=(8, 16), in_channels=1,
                      num_classes=10, input_size=16)
    fit(reslab.build(spec), tiny_data, TrainConfig(model="tiny", epochs=1, batch_size=100,
                                                   quiet=True, out=str(tmp_path / "run")))
    for target in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.safetensors"):
        assert main(["summary", str(target), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["model"] == "tiny" and data["input"] == [1, 16, 16]
        assert data["total"]["params"] == sum(p.numel() for p in reslab.build(spec).parameters())
    assert main(["summary", str(tmp_path / "run"), "--in-channels", "3"]) == 1
    assert "a checkpoint has its own" in capsys.readouterr().err


def test_verbose_shows_reslab_logs_and_nothing_from_other_libraries(tmp_path, image_folder):
    # drawing the grid imports matplotlib, whose debug logging used to fill the screen
    run = subprocess.run([sys.executable, "-m", "reslab", "data", "show",
                          f"folder:{image_folder}", "--out", str(tmp_path / "g.png"), "-v"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert all(line.startswith("reslab") or not line for line in run.stderr.splitlines()), \
        run.stderr
    assert "matplotlib" not in run.stderr and "font" not in run.stderr
