"""The protocol's settings: typed, ranged, parsed from text, refused in one line."""

import subprocess
import sys
from dataclasses import dataclass

import pytest

from reslab.errors import ConfigError
from reslab.experiments import EXPERIMENTS
from reslab.experiments.protocol import Experiment, Settings, setting


@dataclass
class DemoSettings(Settings):
    depth: int = setting(20, "a depth", low=8, high=110)
    rate: float = setting(0.5, "a rate", low=0.0, high=1.0)
    seeds: tuple[int, ...] = setting((0,), "seeds", low=0)
    arms: tuple[str, ...] = setting(("a",), "arms", choices=("a", "b"))
    kind: str = setting("x", "a kind", choices=("x", "y"))
    limit: int | None = setting(None, "an optional limit")


class Demo(Experiment):
    name, title, settings = "demo", "A demo", DemoSettings
    modes = {"quick": dict(depth=8), "long": dict(depth=110, seeds=(0, 1, 2))}


def test_text_is_parsed_by_each_settings_type():
    s = Demo().resolve("full", dict(depth="56", rate="0", seeds="[1, 2]", arms="a,b",
                                    kind="y", limit="null", quiet="yes"))
    assert (s.depth, s.rate, s.seeds, s.arms, s.kind, s.limit, s.quiet) == \
        (56, 0.0, (1, 2), ("a", "b"), "y", None, True)
    assert Demo().resolve("full", dict(seeds="3", limit="7")).seeds == (3,)
    assert Demo().resolve("full", dict(limit="7")).limit == 7


def test_modes_then_overrides():
    assert Demo().resolve("quick", {}).depth == 8
    long = Demo().resolve("long", dict(seeds=(4,)))
    assert (long.depth, long.seeds) == (110, (4,))
    assert Demo().mode_names() == ["full", "quick", "long"]


@pytest.mark.parametrize(("values", "message"), [
    (dict(depth="111"), "setting depth must be an integer from 8 to 110, got 111"),
    (dict(depth=True), "setting depth must be an integer from 8 to 110, got True"),
    (dict(rate="1.5"), "setting rate must be a number in [0.0, 1.0], got 1.5"),
    (dict(rate="nan"), "setting rate must be a number in [0.0, 1.0], got 'nan'"),
    (dict(seeds="[]"), "setting seeds must be a non-empty list of integers >= 0, got ()"),
    (dict(seeds="[0, 1"), "setting seeds must be a non-empty list of integers >= 0, got "
                          "'[0, 1'"),
    (dict(arms="a,c"), "setting arms must be a non-empty list of names (one of a, b), got "
                       "('a', 'c')"),
    (dict(kind="z"), "setting kind must be one of x, y, got 'z'"),
    (dict(limit="0"), "setting limit must be a positive integer, got 0"),
    (dict(deep=1), "unknown experiment setting 'deep' (did you mean depth"),
])
def test_a_bad_value_is_refused_in_one_line(values, message):
    with pytest.raises(ConfigError) as error:
        Demo().resolve("full", values)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_every_registered_experiment_declares_itself_and_its_defaults_check():
    for name, experiment in EXPERIMENTS.items():
        assert experiment.name == name and experiment.title
        for mode in experiment.mode_names():
            experiment.resolve(mode, {})  # every mode's values are in range


def test_the_command_lists_the_registry_without_importing_torch():
    """`reslab experiment --help` names every experiment, and an unknown one is refused,
    from the registry's names alone: neither imports an experiment (or torch)."""
    code = ("import sys\nfrom reslab.cli import main\n"
            "try:\n    main(['experiment', '--help'])\nexcept SystemExit:\n    pass\n"
            "from reslab.experiments import get_experiment\n"
            "try:\n    get_experiment('nestd')\nexcept Exception as error:\n    print(error)\n"
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    *shown, refusal, torch_loaded = run.stdout.strip().splitlines()
    assert torch_loaded == "False", run.stdout + run.stderr
    assert refusal.startswith("unknown experiment 'nestd' (did you mean nested?)")
    listed = " ".join(" ".join(shown).split()).split("(none: list them)")[0]
    assert [name for name in EXPERIMENTS if name not in listed] == []
