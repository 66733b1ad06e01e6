import json
import time

import pytest
import torch

import reslab
from reslab.errors import ConfigError, TrainingError
from reslab.models import ResNetSpec, read_metadata
from reslab.runtime.checkpoint import load_checkpoint, model_from_checkpoint
from reslab.training import TrainConfig, fit
from reslab.training.optim import make_optimizer
from reslab.training.state import _match_parameter_layouts

TINY = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 1), widths=(8, 16), in_channels=1,
                  num_classes=10, input_size=16)


def quick_config(tmp_path, **changes) -> TrainConfig:
    values = dict(epochs=3, batch_size=16, lr=0.4, crop_padding=1, flip=False, tta_flip=False,
                  label_smoothing=0.0, quiet=True, out=str(tmp_path / "run"), warmup_epochs=0.5)
    return TrainConfig(**(values | changes))


def test_a_short_real_training_learns(tmp_path, tiny_data):
    result = fit(reslab.build(TINY), tiny_data, quick_config(tmp_path))
    losses = [row["train_loss"] for row in result.history]
    assert len(result.history) == 3
    assert losses[-1] < losses[0] * 0.5
    assert result.history[-1]["train_acc"] > result.history[0]["train_acc"] + 0.3
    assert result.best_val_acc >= 0.7  # the squares are easy to tell apart
    assert result.test["accuracy"] >= 0.7 and result.test["images"] == 100


def test_the_run_directory_holds_everything(tmp_path, tiny_data):
    result = fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, epochs=2))
    run = result.run_dir
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["epochs"] == 2 and "torch" in config["versions"]
    assert "cores" in config["machine"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s",
            "seconds"} <= set(rows[0])
    for png in ("curves.png", "confusion.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((run / "tensorboard").iterdir())
    results = json.loads((run / "results.json").read_text())
    assert set(results["per_class"]) == {f"class{i}" for i in range(10)}
    assert sum(map(sum, results["confusion"])) == 100
    meta = read_metadata(run / "checkpoints" / "best.safetensors")
    assert meta["classes"][0] == "class0" and meta["spec"]["widths"] == [8, 16]
    assert meta["mean"] == list(tiny_data.mean) and meta["input_size"] == [1, 16, 16]
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.train_state["state"]["step"] == rows[-1]["step"] == 2 * (400 // 16)
    model, _ = model_from_checkpoint(run / "checkpoints" / "best.safetensors")
    assert isinstance(model, reslab.models.ResNet)


def test_best_checkpoint_is_chosen_on_validation_not_test(tmp_path, tiny_data):
    result = fit(reslab.build(TINY), tiny_data, quick_config(tmp_path))
    best_epoch = max(result.history, key=lambda r: r["val_acc"])["epoch"]
    assert result.test["best_epoch"] == best_epoch
    best = read_metadata(result.run_dir / "checkpoints" / "best.safetensors")
    assert best["epoch"] == best_epoch


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data):
    config = quick_config(tmp_path, lr=1e30, schedule="constant", warmup_epochs=0,
                          checkpoint_every=1, label_smoothing=0.0, precision="fp32")
    with pytest.raises(TrainingError, match=r"training diverged; try --lr 5e\+29 \(now 1e\+30\)\. "
                       "The last good checkpoint is kept$"):
        fit(reslab.build(TINY), tiny_data, config)
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    weights = load_checkpoint(last).weights
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_divergence_under_bf16_also_says_to_try_fp32(tmp_path, tiny_data):
    config = quick_config(tmp_path, lr=1e30, schedule="constant", warmup_epochs=0,
                          label_smoothing=0.0, precision="bf16", epochs=1)
    with pytest.raises(TrainingError, match=r"try --lr 5e\+29 \(now 1e\+30\) or --precision "
                                             r"fp32 \(now bf16\)\. The last good"):
        fit(reslab.build(TINY), tiny_data, config)


def test_a_non_finite_validation_loss_is_said_and_written_as_null(tmp_path, tiny_data,
                                                                  monkeypatch, caplog):
    import reslab.training.loop as LOOP

    evaluate = LOOP.evaluate

    def overflowing(*args, **kwargs):  # what bf16 at lr 0.6 gave resnet50d: finite training
        found = evaluate(*args, **kwargs)
        found.loss = float("nan")
        return found

    monkeypatch.setattr(LOOP, "evaluate", overflowing)
    with caplog.at_level("WARNING", logger="reslab"):
        result = fit(reslab.build(TINY), tiny_data,
                     quick_config(tmp_path, epochs=2, precision="fp32"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # one per epoch, --quiet or not
    assert warnings[0].startswith("warning: epoch 1: validation loss nan (training loss ")
    assert warnings[0].endswith("try --lr 0.2 (now 0.4)")
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=pytest.fail) for line in lines]  # strict JSON
    assert [r["val_loss"] for r in rows] == [None, None]
    assert all(0 <= r["val_acc"] <= 1 and r["train_loss"] > 0 for r in rows)


def test_bad_values_are_refused_before_any_work(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, epochs=-1))
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, lr=0))
    with pytest.raises(ConfigError, match="batch_size 1000 is larger than the 400"):
        fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, batch_size=1000))
    assert not (tmp_path / "run").exists()


def test_a_second_run_in_the_same_directory_is_refused(tmp_path, tiny_data):
    fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, epochs=1))


def test_ema_and_cosine_and_adamw_run(tmp_path, tiny_data):
    config = quick_config(tmp_path, ema_decay=0.9, schedule="cosine", optimizer="adamw",
                          nesterov=False, lr=1e-2, grad_clip=1.0)
    result = fit(reslab.build(TINY), tiny_data, config)
    assert result.history[-1]["train_acc"] > 0.3
    lrs = [row["lr"] for row in result.history]
    assert lrs[-1] < lrs[0]  # annealed


def test_multistep_schedule_divides_at_the_milestones(tmp_path, tiny_data):
    config = quick_config(tmp_path, schedule="multistep", milestones=(25, 50), warmup_epochs=0,
                          lr=0.1, epochs=3)
    result = fit(reslab.build(TINY), tiny_data, config)
    assert [round(r["lr"], 6) for r in result.history] == [0.1, 0.01, 0.001]


def test_max_steps_stops_mid_epoch(tmp_path, tiny_data):
    result = fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, max_steps=5, epochs=10))
    assert result.history[-1]["step"] == 5 and len(result.history) == 1


def test_warmup_until_error_uses_the_low_rate_first(tmp_path, tiny_data, caplog):
    config = quick_config(tmp_path, warmup_lr=0.1, warmup_until_error=0.7,
                          schedule="constant", warmup_epochs=0)
    with caplog.at_level("INFO", logger="reslab.training.optim"):
        result = fit(reslab.build(TINY), tiny_data, config)
    ended = [r.getMessage() for r in caplog.records if "warm-up over" in r.getMessage()]
    assert len(ended) == 1 and int(ended[0].split("step ")[1].split(":")[0]) > 5
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.safetensors").train_state
    assert state["scheduler"]["warming_up"] is False
    assert result.history[-1]["lr"] == 0.4  # back to the scheduled rate


def test_train_subset_and_xavier_through_train(tmp_path, image_folder):
    result = reslab.train(model="resnet14", data=f"folder:{image_folder}", image_size=16,
                          channels=1, train_subset=64, epochs=1, batch_size=32, init="xavier",
                          quiet=True, out=str(tmp_path / "run"), val_size=20)
    assert result.history[0]["step"] == 2


def test_on_epoch_end_sees_each_row_and_the_eval_mode_model_after_the_files(tmp_path,
                                                                            tiny_data):
    seen = []

    def hook(row, model):
        metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        seen.append((row["epoch"], model.training, len(metrics),
                     torch.is_grad_enabled()))

    result = fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, epochs=2),
                 on_epoch_end=hook)
    assert seen == [(1, False, 1, False), (2, False, 2, False)]
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_on_step_sees_every_step_in_training_mode_and_its_time_is_not_training_time(
        tmp_path, tiny_data, monkeypatch):
    seen, real_clock, hook_time = [], time.perf_counter, [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + hook_time[0])

    def hook(state, loss, correct, images):
        seen.append((state.counters.step, state.model.training, loss, correct, images))
        hook_time[0] += 100.0  # each hook "takes" 100 s on the clock the loop reads

    result = fit(reslab.build(TINY), tiny_data, quick_config(tmp_path, epochs=2),
                 on_step=hook)
    steps = 2 * (400 // 16)
    assert [s[0] for s in seen] == list(range(1, steps + 1))
    assert all(training and images == 16 and 0 <= correct <= 16 and loss > 0
               for _, training, loss, correct, images in seen)
    # the epoch's summed figures are the steps' own
    first = [s for s in seen if s[0] <= steps // 2]
    row = result.history[0]
    assert row["train_acc"] == sum(s[3] for s in first) / sum(s[4] for s in first)
    assert row["train_loss"] == pytest.approx(sum(s[2] * s[4] for s in first) / 400)
    # 25 hooks of 100 s an epoch, none of it in the epoch's training time
    assert all(r["seconds"] < 100 for r in result.history)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_optimizer_is_fused_on_cpu_and_steps_as_the_unfused_one_does(optimizer):
    torch.manual_seed(0)
    config = TrainConfig(optimizer=optimizer, nesterov=optimizer == "sgd")
    nets = [reslab.create_model("resnet14", num_classes=10, in_channels=1) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = make_optimizer(nets[0], config)
    assert fused.defaults["fused"] is True
    plain = make_optimizer(nets[1], config)
    plain.defaults["fused"] = False
    for group in plain.param_groups:
        group["fused"] = False
    for _ in range(3):
        for net, opt in zip(nets, (fused, plain), strict=True):
            for p in net.parameters():
                p.grad = torch.full_like(p, 0.01) + p.detach() * 0.1
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_resumed_fused_optimizer_steps_channels_last_weights_correctly():
    # checkpoints hold momentum contiguous; torch's fused CPU SGD pairs elements by memory
    # offset, so without re-laying the buffers out a resumed run updates the wrong elements
    weight = torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    momentum = torch.randn(4, 3, 3, 3)  # as loaded: contiguous
    grad = torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    param = weight.clone().requires_grad_()
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9, fused=True)
    optimizer.state[param]["momentum_buffer"] = momentum.clone()
    _match_parameter_layouts(optimizer)
    assert optimizer.state[param]["momentum_buffer"].is_contiguous(
        memory_format=torch.channels_last)
    param.grad = grad.clone()
    optimizer.step()
    torch.testing.assert_close(param.detach(), weight - 0.1 * (0.9 * momentum + grad))
