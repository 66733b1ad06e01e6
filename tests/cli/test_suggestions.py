"""A misspelled option or name is refused in one line that names the closest ones and the
help of the (sub)command it was given to; letter case does not hide a suggestion."""

import pytest

from reslab.cli import main
from reslab.errors import close_matches


def refusal(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("argv", "suggested", "help_of"), [
    (["train", "--learning-rate", "3"], "--lr", "reslab train"),
    (["train", "--weight_decay=3"], "--weight-decay", "reslab train"),
    (["train", "--Epochs", "3"], "--epochs", "reslab train"),
    (["train", "--batchsize", "8"], "--batch-size", "reslab train"),
    (["eval", "run", "--jsn"], "--json", "reslab eval"),
    (["data", "info", "mnist", "--jsn"], None, "reslab data info"),
    (["models", "--Json"], "--json", "reslab models"),
])
def test_an_unknown_option_names_the_closest_and_the_subcommand_help(capsys, argv, suggested,
                                                                     help_of):
    err = refusal(capsys, argv)
    assert err.startswith("reslab: error: unrecognized arguments: ")
    assert err.rstrip().endswith(f"(see: {help_of} --help)")
    if suggested:
        assert f"(did you mean {suggested}" in err
        assert "--no-" not in err  # a flag is suggested once, not with its --no- form


def test_a_stray_word_is_refused_by_the_subcommand(capsys):
    err = refusal(capsys, ["train", "stray"])
    assert "unrecognized arguments: stray (see: reslab train --help)" in err


def test_close_matches_ignore_case_and_return_the_real_names():
    assert close_matches("RESNET50", ["resnet50", "resnet101"], n=1) == ["resnet50"]
    assert close_matches("Fashion-MNIST", ["fashion-mnist", "mnist"], n=1) == ["fashion-mnist"]
    assert close_matches("zzz", ["resnet50"]) == []


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--model", "RESNET50", "--print-config"], "closest: resnet50"),
    (["train", "--model", "resnet2O", "--print-config"], "resnet20"),
    (["summary", "ResNet18"], "closest: resnet18"),
    (["experiment", "Nested", "--quick", "--out", "x"], "did you mean nested?"),
])
def test_an_unknown_name_in_another_case_gets_its_suggestion(capsys, argv, expected, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # --print-config prints nothing for a run that would be refused
    assert captured.err.startswith("reslab: error: unknown ") and expected in captured.err
    assert captured.err.count("\n") == 1
