"""One declaration, one check, one text parser for TrainConfig and the experiments' settings:
``problems`` lists what is wrong and changes nothing; the command line and an experiment's
``--set`` read the same text as the same value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from reslab.cli.parser import Parser, add_config_options
from reslab.errors import ConfigError
from reslab.experiments import EXPERIMENTS
from reslab.experiments.protocol import Experiment, Settings, TrainingSettings
from reslab.runtime.precision import PRECISIONS
from reslab.settings import from_text, normalised, problems, setting
from reslab.training.config import GROUPS, TrainConfig, checked


def test_the_defaults_and_every_experiment_s_settings_have_no_problems():
    assert problems(TrainConfig()) == []
    for experiment in EXPERIMENTS.values():
        assert problems(experiment.settings()) == [], experiment.name


@pytest.mark.parametrize(("changes", "expected"), [
    (dict(data=5), "data must be a string, got 5"),  # type
    (dict(quiet="yes"), "quiet must be true or false, got 'yes'"),
    (dict(epochs=1.5), "epochs must be a positive integer, got 1.5"),
    (dict(lr=float("inf")), "lr must be a finite number, got inf"),  # finiteness
    (dict(lr=float("nan")), "lr must be a finite number, got nan"),
    (dict(momentum=1.0), "momentum must be a number in [0, 1), got 1.0"),  # range, open
    (dict(erase=1.5), "erase must be a number in [0, 1], got 1.5"),  # range, closed
    (dict(gamma=0), "gamma must be a number in (0, 1], got 0"),  # the default low bound
    (dict(tta_shift=5), "tta_shift must be an integer from 0 to 4, got 5"),
    (dict(seed=-1), "seed must be an integer in [0, 2**63), got -1"),
    (dict(channels=2), "channels must be 1 or 3, got 2"),  # choices of numbers
    (dict(optimizer="rmsprop"), "optimizer must be one of sgd, adamw, got 'rmsprop'"),  # Literal
    (dict(max_steps=2**64), "max_steps must be below 2**63, got 18446744073709551616"),  # int64
    (dict(milestones=(10, "x")), "milestones must be a list of positive integers, got "
                                 "(10, 'x')"),  # a list's items
    (dict(milestones=(30, 10), schedule="multistep"),
     "milestones must be increasing positive steps, got (30, 10)"),  # a rule across fields
])
def test_problems_names_each_kind_of_error_in_one_line(changes, expected):
    assert problems(TrainConfig(**changes)) == [expected]


def test_problems_lists_every_field_s_problem_and_changes_nothing():
    config = TrainConfig(epochs=0, lr=-1.0, freeze=["stem"], milestones=[5])
    before = dataclasses.asdict(config)
    found = problems(config)
    assert isinstance(found, list)  # each field's problem, in field order; lists are tuples
    assert [line.split()[0] for line in found] == ["freeze", "epochs", "lr", "milestones"]
    assert dataclasses.asdict(config) == before and config.freeze == ["stem"]
    assert problems(normalised(config)) == found[1:3]


def test_rules_across_fields_wait_for_every_field_to_be_right():
    # the nesterov rule would also fire: it is left until the optimizer is a known one
    assert problems(TrainConfig(optimizer="adamw", epochs=0)) == [
        "epochs must be a positive integer, got 0"]
    assert problems(TrainConfig(optimizer="adamw")) == [
        "nesterov needs SGD with momentum > 0; add --no-nesterov"]


def test_a_config_is_checked_where_it_runs_not_where_it_is_made():
    config = TrainConfig().replace(epochs=0)  # replace checks names only
    assert config.epochs == 0
    with pytest.raises(ConfigError, match="^epochs must be a positive integer, got 0$"):
        checked(config)
    with pytest.raises(ConfigError, match="unknown training option 'epoch'"):
        TrainConfig().replace(epoch=1)


def test_normalised_makes_lists_tuples_in_a_copy():
    config = TrainConfig(freeze="stem,layer1", milestones=[10, 20])
    tidy = normalised(config)
    assert (tidy.freeze, tidy.milestones) == (("stem", "layer1"), (10, 20))
    assert (config.freeze, config.milestones) == ("stem,layer1", [10, 20])
    assert checked(config) == tidy


def test_precisions_are_declared_once():
    hints = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert "precision" in hints
    assert problems(TrainConfig(precision="fp17")) == [
        f"precision must be one of {', '.join(PRECISIONS)}, got 'fp17'"]
    assert problems(TrainingSettings(precision="fp17")) == [
        f"precision must be one of {', '.join(PRECISIONS)}, got 'fp17'"]


# --- one text parser -----------------------------------------------------------------------

@dataclass
class SameSettings(Settings):
    """Fields of the same types as TrainConfig's milestones, lr and val_size."""

    milestones: tuple[int, ...] = setting((1,), "steps")
    lr: float = setting(0.1, "a rate")
    val_size: int | None = setting(None, "a size", low=0)


class Same(Experiment):
    name, title, settings = "same", "Same text, same value", SameSettings


def _cli(option: str, text: str):
    parser = Parser(prog="reslab train")
    add_config_options(parser, TrainConfig, GROUPS)
    return getattr(parser.parse_args([f"--{option.replace('_', '-')}", text]), option)


@pytest.mark.parametrize(("option", "text", "value"), [
    ("milestones", "10,20", (10, 20)),
    ("milestones", "[10, 20]", (10, 20)),
    ("milestones", " 7 ", (7,)),
    ("milestones", "10,20,", (10, 20)),
    ("lr", "0.5", 0.5),
    ("lr", "1e-3", 0.001),
    ("val_size", "7", 7),
    ("val_size", "none", None),
])
def test_the_command_line_and_an_experiment_read_the_same_text_alike(option, text, value):
    assert _cli(option, text) == value
    assert getattr(Same().resolve("full", {option: text}), option) == value
    assert from_text(text, dict(milestones=tuple[int, ...], lr=float,
                                val_size=int | None)[option]) == value


@pytest.mark.parametrize(("option", "text"), [
    ("milestones", "10,x"), ("milestones", "[10, 20"), ("lr", "inf"), ("lr", "fast"),
    ("val_size", "seven"),
])
def test_text_that_does_not_parse_is_refused_by_both(option, text, capsys):
    with pytest.raises(SystemExit) as exit:
        _cli(option, text)
    assert exit.value.code == 2 and option.replace("_", "-") in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"^setting {option} must be .*, got '"):
        Same().resolve("full", {option: text})
