"""A run's life through ``reslab.train`` and the CLI: start from weights, freeze, resume with
the rules of what may change, extend, and progress where terminal tools put it."""

import contextlib
import json
import os
import pty
import subprocess
import sys
import warnings

import pytest
import torch
from PIL import Image

import reslab
from reslab.cli import main
from reslab.errors import ConfigError, WeightsError
from reslab.grow import grow_checkpoint
from reslab.models import create_model, read_metadata
from reslab.runtime.checkpoint import load_checkpoint, save_checkpoint
from reslab.training import TrainConfig, TrainState
from reslab.training.finetune import freeze

FOLDER = dict(data=None, image_size=16, channels=1, val_size=40, batch_size=32,
              train_subset=96, precision="fp32", quiet=True)


def folder_options(image_folder, out, **changes):
    return FOLDER | dict(data=f"folder:{image_folder}", out=str(out)) | changes


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, image_folder):
    """A finished 2-epoch resnet14 run on the image folder."""
    out = tmp_path_factory.mktemp("life") / "base"
    reslab.train(**folder_options(image_folder, out, model="resnet14", epochs=2))
    return out


# --- starting from weights ---------------------------------------------------------------

def test_init_from_a_torchvision_format_file_swaps_the_head_and_adapts_the_first_conv(
        tmp_path, image_folder, capsys):
    torch.manual_seed(1)
    source = create_model("resnet14", num_classes=1000, in_channels=3)
    path = tmp_path / "resnet14.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    result = reslab.train(**folder_options(image_folder, tmp_path / "run", model="resnet14",
                                           init_from=str(path), epochs=1, lr=0.05,
                                           normalize="imagenet", quiet=False))
    err = capsys.readouterr().err
    assert f"init: weights from {path} (state dict for resnet14)" in err
    assert "head: replaced for 10 classes (fc.weight, fc.bias dropped" in err
    assert "first conv: adapted to 1 input channel(s) (conv1.weight)" in err
    assert "normalisation: ImageNet's mean/std (0.449/0.226)" in err
    meta = read_metadata(result.run_dir / "checkpoints" / "best.safetensors")
    assert meta["mean"] == [pytest.approx(0.449)] and meta["std"] == [pytest.approx(0.226)]
    assert meta["config"]["init_from"] == str(path)
    # the first conv of a grey model started from RGB weights is their sum over channels
    first = torch.load(path)["state_dict"]["module.conv1.weight"].sum(1, keepdim=True)
    started = reslab.create_model("resnet14", num_classes=10, in_channels=1)
    reslab.load_weights(started, path)
    torch.testing.assert_close(started.conv1.weight, first)


def test_a_plain_state_dict_needs_model_and_a_missing_file_is_refused(tmp_path, image_folder):
    path = tmp_path / "w.pth"
    torch.save(create_model("resnet14").state_dict(), path)
    with pytest.raises(ConfigError, match="plain state dict: give --model"):
        reslab.train(**folder_options(image_folder, tmp_path / "a", init_from=str(path)))
    with pytest.raises(ConfigError, match="no such file"):
        reslab.train(**folder_options(image_folder, tmp_path / "b", init_from="nowhere.pth",
                                      model="resnet14"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_init_from_a_grown_checkpoint_trains_the_grown_network(tmp_path, base_run, image_folder):
    grown_path, grown = grow_checkpoint(base_run, stage=2, blocks=1,
                                        out=tmp_path / "grown.safetensors")
    assert list(grown.spec.depths) == [2, 3, 2]
    out = tmp_path / "run"
    main(["train", "--init-from", str(grown_path), "--data", f"folder:{image_folder}",
          "--image-size", "16", "--channels", "1", "--val-size", "40", "--epochs", "1",
          "--train-subset", "96", "--batch-size", "32", "--quiet", "--out", str(out)])
    meta = read_metadata(out / "checkpoints" / "last.safetensors")
    assert meta["spec"]["depths"] == [2, 3, 2] and meta["model"] == "resnet14"
    # the checkpoint's normalisation travels with it
    base = read_metadata(base_run / "checkpoints" / "best.safetensors")
    assert (meta["mean"], meta["std"]) == (base["mean"], base["std"])
    with pytest.raises(ConfigError, match="--model resnet20 disagrees with --init-from"):
        reslab.train(**folder_options(image_folder, tmp_path / "other", model="resnet20",
                                      init_from=str(grown_path)))


def test_frozen_parts_keep_their_weights_and_bn_statistics_bitwise(tmp_path, base_run,
                                                                   image_folder):
    last = base_run / "checkpoints" / "last.safetensors"
    before = load_checkpoint(last).weights
    result = reslab.train(**folder_options(image_folder, tmp_path / "run", init_from=str(last),
                                           freeze_until="layer3", epochs=1, lr=0.5))
    after = load_checkpoint(result.run_dir / "checkpoints" / "last.safetensors").weights
    frozen = [k for k in before if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")]
    trained = [k for k in before if k.startswith(("layer3.", "fc.")) and "num_batches" not in k]
    assert any("running_mean" in k for k in frozen) and any("bn" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained)


def test_freeze_names_the_parts_it_knows():
    model = create_model("resnet14", num_classes=10, in_channels=1)
    assert freeze(model, ("stem", "layer1"), None) == ("stem", "layer1")
    assert not model.conv1.weight.requires_grad and model.layer2[0].conv1.weight.requires_grad
    with pytest.raises(ConfigError, match=r"parts stem, layer1, layer2, layer3, avgpool, fc "
                                          r"\(as `reslab summary` names them\)"):
        freeze(model, ("layer9",), None)


@pytest.mark.parametrize("name", ["resnet14", "resnetv2_50", "lenet_bn"])
def test_freeze_and_summary_name_the_parts_alike(name):
    """The classifier is fc (or head, timm's name) in both; `head`, the name freeze gave every
    piece after the last stage, still freezes them all."""
    from reslab.models.summary import summary
    from reslab.training.finetune import model_parts

    model = create_model(name, num_classes=10, in_channels=1)
    if not hasattr(model, "stage_names"):  # LeNet: no stages, nothing to freeze
        with pytest.raises(ConfigError, match="has no stages to freeze"):
            freeze(model, ("stem",), None)
        return
    rows = [row.name for row in summary(model, (1, 64, 64)).rows]
    assert list(model_parts(model)) == rows
    head = rows[rows.index(model.stage_names[-1]) + 1:]
    # timm's classifier is called head: there the name is that part alone
    assert freeze(model, ("head",), None) == (("head",) if "head" in rows else tuple(head))
    classifier = model.get_classifier()
    assert not any(p.requires_grad for p in classifier.parameters())
    assert freeze(create_model(name, num_classes=10, in_channels=1), (), rows[-1]) == tuple(
        rows[:-1])


def test_the_backbone_learns_at_a_fraction_of_the_head_rate():
    model = create_model("resnet14", num_classes=10, in_channels=1)
    config = TrainConfig(lr=0.2, backbone_lr_scale=0.1, schedule="constant", warmup_epochs=0)
    state = TrainState(model, config, total_steps=10, steps_per_epoch=5, head=model.fc)
    rates = {id(p): g["lr"] for g in state.optimizer.param_groups for p in g["params"]}
    assert rates[id(model.fc.weight)] == rates[id(model.fc.bias)] == 0.2
    assert rates[id(model.conv1.weight)] == pytest.approx(0.02)
    # one-cycle peaks each group at its own rate
    config = config.replace(schedule="onecycle")
    state = TrainState(model, config, total_steps=100, steps_per_epoch=10, head=model.fc)
    peaks = {g["lr_scale"]: g["max_lr"] for g in state.optimizer.param_groups}
    assert peaks == {1.0: 0.2, 0.1: pytest.approx(0.02)}


# --- resume: what may change, extending ------------------------------------------------------

def test_resume_refuses_each_changed_option_naming_saved_and_given(base_run):
    before = sorted(p.name for p in base_run.rglob("*"))
    with pytest.raises(ConfigError) as refused:
        reslab.train(resume=base_run, lr=0.5, batch_size=8, quiet=True)
    message = str(refused.value)
    # lr: the plain recipe's 0.05 at batch 256, scaled to the run's batch 32
    assert "lr (saved 0.00625, given 0.5)" in message
    assert "batch_size (saved 32, given 8)" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="fewer than the 2 epochs"):
        reslab.train(resume=base_run, epochs=1)
    with pytest.raises(ConfigError, match="unknown training option 'bogus'"):
        reslab.train(resume=base_run, bogus=1)
    assert sorted(p.name for p in base_run.rglob("*")) == before


def test_resume_refuses_a_changed_data_set(tmp_path, image_folder):
    folder = tmp_path / "data"
    subprocess.run(["cp", "-r", str(image_folder), str(folder)], check=True)
    out = tmp_path / "run"
    reslab.train(**folder_options(folder, out, model="resnet14", epochs=1))
    image = next((folder / "train" / "class0").glob("*.png"))
    Image.open(image).save(folder / "train" / "class0" / "extra.png")
    with pytest.raises(ConfigError, match=r"changed since the run started \(train 260 -> 261"):
        reslab.train(resume=out, epochs=2)
    (folder / "train" / "class0" / "extra.png").unlink()
    (folder / "train" / "class10").mkdir()
    Image.open(image).save(folder / "train" / "class10" / "new.png")
    with pytest.raises(ConfigError, match="classes .*class10"):
        reslab.train(resume=out, epochs=2)


def test_extending_a_finished_run_trains_the_added_epochs(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    reslab.train(**folder_options(image_folder, out, model="resnet14", epochs=2))
    assert main(["train", "--resume", str(out / "checkpoints" / "best.safetensors"),
                 "--epochs", "3", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[2]["step"] == 3 * rows[0]["step"]
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 3
    assert json.loads((out / "results.json").read_text())["epochs"] == 3
    assert "test accuracy" in capsys.readouterr().out


def _rates(schedule, total, steps, saved=None):
    """The rate of each of ``steps`` steps of a run planned over ``total`` (resumed from
    ``saved`` if given): (the state after them, the rates)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(lr=0.4, schedule=schedule, warmup_epochs=0,
                         milestones=(5,) if schedule == "multistep" else ())
    state = TrainState(model, config, total_steps=total, steps_per_epoch=10)
    if saved is not None:
        state.load(model.state_dict(), saved, "test", total)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() before optimizer.step()
        for _ in range(steps):
            rates.append(state.optimizer.param_groups[0]["lr"])
            state.counters.step += 1
            state.after_step()
    saved = json.loads(json.dumps(state.state_dict(), default=lambda t: t.tolist()))
    return saved | {"rng": torch.get_rng_state()}, rates


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant", "multistep"])
def test_the_rate_over_added_steps_continues_without_a_jump(schedule):
    """One-cycle and cosine go on from where the rate is, down to their own end over the new
    length; constant and multistep go on as they were (milestones are absolute steps)."""
    saved, _ = _rates(schedule, 20, 12)  # stopped at step 12 of 20
    _, added = _rates(schedule, 40, 28, saved)  # extended to 40 steps
    _, planned = _rates(schedule, 20, 20)
    assert added[0] == pytest.approx(planned[12])  # no jump at the extension
    if schedule == "onecycle":
        assert added[-1] == pytest.approx(0.4 / 25 / 1e4, rel=0.05)
        assert all(a >= b for a, b in zip(added, added[1:], strict=False))  # linear decay
    elif schedule == "cosine":
        assert added[-1] == pytest.approx(0.0, abs=0.002)
    elif schedule == "constant":
        assert added == pytest.approx([0.4] * 28)
    else:
        assert added == pytest.approx([0.04] * 28)  # past the milestone, as before


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_a_run_extended_while_rising_still_reaches_its_peak_where_planned(schedule):
    def rates(total, steps, saved=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 2)
        config = TrainConfig(lr=0.4, schedule=schedule, warmup_epochs=1.0)  # 10 steps up
        state = TrainState(model, config, total_steps=total, steps_per_epoch=10)
        if saved is not None:
            state.load(model.state_dict(), saved, "test", total)
        seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(steps):
                seen.append(state.optimizer.param_groups[0]["lr"])
                state.counters.step += 1
                state.after_step()
        return json.loads(json.dumps(state.state_dict(), default=lambda t: t.tolist())) | {
            "rng": torch.get_rng_state()}, seen

    saved, first = rates(30, 4)  # stopped at step 4, rising
    _, planned = rates(30, 30)
    again, added = rates(60, 20, saved)  # extended to 60 steps: 56 left; take 20 of them
    assert first == pytest.approx(planned[:4])
    assert added[0] == pytest.approx(planned[4])  # no jump
    peak = planned.index(max(planned))  # 9 for one-cycle, 10 after a warm-up ramp
    assert added[peak - 4] == pytest.approx(0.4)  # the peak where it was planned
    assert max(added) == pytest.approx(0.4) and added[peak - 3] < 0.4  # then down
    _, rest = rates(60, 36, again)  # resumed again: the same plan goes on
    assert rest[-1] == pytest.approx(0.4 / 25 / 1e4 if schedule == "onecycle" else 0.0,
                                     abs=1e-9)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_a_finished_run_extended_keeps_its_last_rate(schedule):
    """A schedule that ended with the run ends near zero; its extension goes on at the last
    rate it used (one-cycle stepped past its end would compute a negative one)."""
    saved, planned = _rates(schedule, 20, 20)
    _, added = _rates(schedule, 30, 10, saved)
    assert all(0 <= rate <= planned[-1] + 1e-12 for rate in added)
    assert added[0] == pytest.approx(max(planned[-1], 0.4 / 25 / 1e4 if schedule == "onecycle"
                                         else 0.0))


# --- damaged or edited runs ------------------------------------------------------------------

def _edited(base_run, tmp_path, change):
    run = tmp_path / "edited"
    subprocess.run(["cp", "-r", str(base_run), str(run)], check=True)
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    meta, state = change(last.meta.to_dict(), last.train_state)
    save_checkpoint(run / "checkpoints" / "last.safetensors", last.weights, meta, state)
    return run


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m, s: (m | {"config": m["config"] | {"warp": 9}}, s), "field(s) warp"),
    (lambda m, s: ({k: v for k, v in m.items() if k != "config"}, s), "holds no run config"),
    (lambda m, s: (m, s | {"state": s["state"] | {"step": "12"}}), "counter 'step'"),
    (lambda m, s: (m, s | {"state": s["state"] | {"sums": [1, 2]}}), "counter 'sums'"),
    (lambda m, s: (m, s | {"rng": torch.zeros(3)}), "training state does not fit"),
    (lambda m, s: (m, s | {"optimizer": {"state": {}, "param_groups": []}}),
     "training state does not fit"),
])
def test_a_damaged_run_is_refused_in_one_line_naming_what(base_run, tmp_path, change, expected):
    run = _edited(base_run, tmp_path, change)
    with pytest.raises((WeightsError, ConfigError)) as refused:
        reslab.train(resume=run, epochs=3, quiet=True)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


# --- progress ---------------------------------------------------------------------------------

def _cli_args(image_folder, out):
    return ["train", "--model", "resnet14", "--data", f"folder:{image_folder}", "--image-size",
            "16", "--channels", "1", "--val-size", "40", "--epochs", "2", "--train-subset", "96",
            "--batch-size", "32", "--out", str(out)]


def test_progress_goes_to_stderr_and_results_to_stdout_through_a_pipe(tmp_path, image_folder):
    run = subprocess.run([sys.executable, "-m", "reslab", *_cli_args(image_folder,
                                                                     tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("test accuracy ")
    assert "epoch" not in run.stdout.split("model of epoch")[0]
    levers, scaled, *lines = run.stderr.splitlines()
    assert levers.startswith("preset fast: its levers")  # tuned for fast_resnet10, not resnet14
    assert scaled.startswith("lr 0.00625: the recipe's 0.05 at batch 256, scaled to batch 32")
    assert lines[0].startswith("resnet14: ") and "parameters" in lines[0] and "MACs" in lines[0]
    assert "96 train (subset of 260) / 40 val / 60 test images, 1x16x16" in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert "\x1b[" not in run.stderr  # no bar, no colours


def test_a_terminal_gets_a_live_bar_on_stderr(tmp_path, image_folder):
    main_fd, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "reslab",
                                *_cli_args(image_folder, tmp_path / "r")],
                               stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(main_fd, 4096):
            shown += chunk
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    screen = shown.decode(errors="replace")
    assert "━" in screen and "img/s" in screen  # rich's bar with the running figures
    assert "epoch 2/2  loss" in screen
    assert out.startswith("test accuracy ") and "━" not in out


def test_the_python_api_shows_progress_unless_asked_not_to(tmp_path, image_folder, capfd):
    reslab.train(**folder_options(image_folder, tmp_path / "a", model="resnet14", epochs=1,
                                  quiet=False))
    shown = capfd.readouterr().err
    assert "resnet14: " in shown and "epoch 1/1" in shown
    reslab.train(progress=False, **folder_options(image_folder, tmp_path / "b",
                                                  model="resnet14", epochs=1, quiet=False))
    assert capfd.readouterr().err == ""


def test_torchvision_weights_bring_their_own_normalisation_unless_told(tmp_path, tiny_data):
    from reslab.training.finetune import start_from_weights

    path = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18").state_dict(), path)
    config = TrainConfig(model="resnet18", init_from=str(path))
    start = start_from_weights(config, tiny_data, model_given=True)
    # ImageNet's statistics (the weights' pretrained_cfg), averaged for grey images
    assert start.data.mean == pytest.approx((0.449,), abs=1e-3)
    assert start.data.std == pytest.approx((0.226,), abs=1e-3)
    assert "normalisation: the weights' own mean/std (0.449/0.226)" in start.notes
    own = start_from_weights(config.replace(normalize="data"), tiny_data, model_given=True)
    assert own.data.mean == tiny_data.mean
    assert "normalisation: the data's own mean/std (asked for)" in own.notes
