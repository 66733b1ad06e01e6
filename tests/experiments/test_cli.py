import json

import pytest
import torch

from reslab.cli import main
from reslab.cli.experiments import parse_settings
from reslab.errors import ConfigError
from reslab.experiments import EXPERIMENTS
from reslab.models import ResNetSpec, build, read_metadata
from reslab.runtime.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from reslab.training import TrainConfig, fit

from .conftest import FASHION_MNIST, PNG

# (a 1x1 stride-2 conv from 2 or 4 channels crashes torch 2.13's channels-last CPU backward)
TINY_SPEC = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 1), widths=(8, 16), in_channels=1,
                       num_classes=10, input_size=28)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data):
    """A real training run's directory (one short epoch)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    config = TrainConfig(epochs=1, batch_size=32, quiet=True, out=str(out))
    fit(build(TINY_SPEC), small_data, config)
    return out


def test_grow_writes_a_deeper_checkpoint_of_the_same_function(capsys, tmp_path, trained):
    best = trained / "checkpoints" / "best.safetensors"
    new = tmp_path / "grown.safetensors"
    code, out, err = run(capsys, "grow", trained, "--stage", 2, "--blocks", 2, "--out", new)
    assert code == 0, err
    assert f"wrote {new}" in out and "depths now [1, 3] (10 layers)" in out
    old_model, old_meta = model_from_checkpoint(best)
    new_model, new_meta = model_from_checkpoint(new)
    assert new_model.spec == TINY_SPEC.replace(depths=(1, 3))
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(new_model(x), old_model(x))
    # the old metadata, with only the spec replaced; weights only, no training state
    assert new_meta.replace(spec=None) == old_meta.replace(spec=None)
    assert {"format", "model", "spec", "num_classes", "in_channels", "classes", "mean", "std",
            "input_size", "data", "tta_flip", "config"} <= set(read_metadata(new))
    assert load_checkpoint(new).train_state is None


def test_grow_refuses_what_a_checkpoint_cannot_describe(capsys, tmp_path, trained):
    best = trained / "checkpoints" / "best.safetensors"
    code, _, err = run(capsys, "grow", best, "--stage", 1, "--blocks", 1, "--out",
                       tmp_path / "x.safetensors", "--no-shortcut")
    assert code == 1 and "cannot add plain units to a residual network" in err
    assert "Traceback" not in err and not (tmp_path / "x.safetensors").exists()
    code, _, err = run(capsys, "grow", best, "--stage", 3, "--blocks", 1, "--out",
                       tmp_path / "x.safetensors")
    assert code == 1 and "stage must be between 1 and 2" in err
    code, _, err = run(capsys, "grow", best, "--stage", 1, "--blocks", 1, "--out",
                       tmp_path / "x.pt")
    assert code == 1 and "must end in .safetensors" in err


def test_grow_a_plain_network_with_plain_units(capsys, tmp_path, trained):
    plain_spec = TINY_SPEC.replace(shortcut="none")
    meta = read_metadata(trained / "checkpoints" / "best.safetensors")
    meta.pop("train_state", None)
    source = tmp_path / "plain.safetensors"
    save_checkpoint(source, build(plain_spec).state_dict(), meta | {"spec": plain_spec.to_dict()})
    new = tmp_path / "plain-grown.safetensors"
    code, out, err = run(capsys, "grow", source, "--stage", 1, "--blocks", 1, "--out", new,
                         "--no-shortcut")
    assert code == 0, err
    assert "1 plain unit added to stage 1" in out
    model, _ = model_from_checkpoint(new)
    assert model.spec.depths == (2, 1) and all(u.is_plain for u in model.units())


def test_experiment_lists_and_refuses_unknown_names(capsys):
    code, out, _ = run(capsys, "experiment")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "degradation", "gradients", "nested", "orderings", "cost"]
    assert "(modes: full, quick, long)" in out.splitlines()[0]
    code, _, err = run(capsys, "experiment", "nestd", "--quick")
    assert code == 1
    assert "unknown experiment 'nestd' (did you mean nested?)" in err
    assert "degradation, gradients, nested, orderings, cost" in err
    code, _, err = run(capsys, "experiment", "nested", "--set", "epoch=1")
    assert code == 1 and "unknown experiment setting 'epoch' (did you mean epochs" in err


def test_parse_settings_and_the_types_that_parse_them():
    text = parse_settings(["depths=[20, 56]", "epochs=3", "data_dir=/x", "quiet=true",
                           "continue-lr=0.1", "seeds=0,1,2", "train_size=none"])
    assert text == {"depths": "[20, 56]", "epochs": "3", "data_dir": "/x", "quiet": "true",
                    "continue_lr": "0.1", "seeds": "0,1,2", "train_size": "none"}
    s = EXPERIMENTS["nested"].resolve("quick", {k: v for k, v in text.items() if k != "depths"})
    assert (s.epochs, s.data_dir, s.quiet, s.continue_lr, s.seeds, s.train_size) == \
        (3, "/x", True, 0.1, (0, 1, 2), None)
    assert EXPERIMENTS["degradation"].resolve("full", {"depths": "[20, 56]"}).depths == (20, 56)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_settings(["epochs"])


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs Fashion-MNIST in the system folder")
def test_experiment_nested_quick_from_the_command_line(capsys, tmp_path):
    out = tmp_path / "report"
    code, stdout, err = run(
        capsys, "experiment", "nested", "--quick", "--out", out, "--data-dir", FASHION_MNIST,
        "--set", "depth=8", "width=4", "epochs=1", "continue_epochs=1", "batch_size=32",
        "train_size=256", "val_size=128", "test_size=128", "quiet=true")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] and results["settings"]["train_size"] == 256
    assert results["settings"]["data_dir"] == str(FASHION_MNIST)
    assert results["table"] in stdout and f"report: {out / 'report.md'}" in stdout
    assert results["findings"][0] in stdout
    assert (out / "accuracy.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(("setting", "expected"), [
    ("epochs=abc", "setting epochs must be a positive integer, got 'abc'"),
    ("batch_size=0", "setting batch_size must be a positive integer, got 0"),
    ("stage=9", "setting stage must be an integer from 1 to 3, got 9"),
    ("seeds=0,-1", "setting seeds must be a non-empty list of integers >= 0, got (0, -1)"),
    ("quiet=maybe", "setting quiet must be true or false, got 'maybe'"),
    ("lr=-1", "setting lr must be a positive number, got -1"),
    ("precision=fp17", "setting precision must be one of auto, fp32, bf16"),
    ("seed=1", "unknown experiment setting 'seed' (did you mean seeds"),
])
def test_a_bad_setting_is_refused_by_its_type_before_any_work(setting, expected, tmp_path,
                                                              capsys):
    out = tmp_path / "report"
    assert main(["experiment", "nested", "--quick", "--set", setting, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"reslab: error: {expected}" + err.split(expected, 1)[1]
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["--mode", "long"], "experiment nested has modes full, quick; got 'long'"),
    (["--quick", "--mode", "full"], "--quick and mode 'full' contradict each other"),
])
def test_modes_are_checked_before_any_work(argv, expected, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["experiment", "nested", *argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"reslab: error: {expected}") and err.count("\n") == 1
    assert not out.exists()
