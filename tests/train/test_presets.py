"""The presets are the recipes they name: D2L's train_ch6 and He et al.'s CIFAR-10 schedule."""

import math
import warnings

import pytest
import torch
from torch import nn

import reslab
import reslab.training.run as RUN  # noqa: E402
from reslab.models import create_model
from reslab.training import TrainConfig, preset
from reslab.training.optim import make_optimizer, make_scheduler
from reslab.training.run import xavier_init


def test_the_d2l_preset_is_train_ch6_exactly():
    c = preset("d2l")
    assert (c.model, c.data, c.resize, c.batch_size, c.epochs) == (
        "d2l_resnet18", "fashion-mnist", 96, 256, 10)
    assert (c.optimizer, c.lr, c.momentum, c.nesterov, c.weight_decay) == (
        "sgd", 0.05, 0.0, False, 0.0)
    assert (c.schedule, c.warmup_epochs, c.warmup_lr, c.init) == ("constant", 0.0, None, "xavier")
    # no augmentation, no tricks, full precision
    assert (c.crop_padding, c.flip, c.erase, c.tta_flip) == (0, False, 0.0, False)
    assert (c.label_smoothing, c.ema_decay, c.grad_clip, c.precision) == (0.0, None, None, "fp32")
    # plain SGD at a constant 0.05 on every parameter, for every step
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    optimizer = make_optimizer(model, c)
    assert isinstance(optimizer, torch.optim.SGD)
    for group in optimizer.param_groups:
        assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (
            0.05, 0.0, 0.0, False)
    scheduler = make_scheduler(optimizer, c, total_steps=2350, steps_per_epoch=235)
    lrs = set()
    for _ in range(400):
        lrs.add(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == {0.05}


def test_overrides_change_only_what_they_name():
    c = preset("d2l", epochs=2, resize=64)  # (a batch size also scales lr: the next tests)
    assert (c.epochs, c.resize) == (2, 64)
    assert c.replace(epochs=10, resize=96) == preset("d2l")


def test_the_paper_cifar_preset_is_he_et_al_section_4_2():
    c = preset("paper-cifar")
    assert (c.model, c.data, c.batch_size, c.lr, c.momentum, c.nesterov) == (
        "resnet20", "cifar10", 128, 0.1, 0.9, False)
    assert (c.weight_decay, c.decay_bn_and_bias) == (1e-4, True)  # on every weight
    assert (c.schedule, c.milestones, c.gamma, c.max_steps) == (
        "multistep", (32_000, 48_000), 0.1, 64_000)
    assert (c.crop_padding, c.flip, c.erase, c.label_smoothing) == (4, True, 0.0, 0.0)
    assert c.warmup_lr is None and c.warmup_epochs == 0.0  # only ResNet-110 warms up
    # lr 0.1, divided by 10 at 32k and again at 48k iterations
    optimizer = make_optimizer(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), c)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4]  # BN and biases too
    assert len(optimizer.param_groups[0]["params"]) == 4
    scheduler = make_scheduler(optimizer, c, total_steps=c.max_steps, steps_per_epoch=352)
    lr_at = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() without optimizer.step()
        for step in range(c.max_steps):
            if step in (0, 31_999, 32_000, 47_999, 48_000, 63_999):
                lr_at[step] = optimizer.param_groups[0]["lr"]
            scheduler.step()
    assert lr_at == pytest.approx({0: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01,
                                   48_000: 0.001, 63_999: 0.001}, rel=1e-12)


def test_resnet110_in_paper_cifar_warms_up_at_0_01():
    assert preset("paper-cifar", model="resnet110").warmup_lr == 0.01
    assert preset("paper-cifar", model="resnet56").warmup_lr is None
    assert preset("paper-cifar", model="resnet110", warmup_lr=0.05).warmup_lr == 0.05
    assert preset("fast", model="resnet110").warmup_lr is None


def _layers(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_xavier_init_is_xavier_uniform_on_every_conv_and_linear():
    model = create_model("d2l_resnet18")
    layers = _layers(model)
    assert len(layers) == 21  # 17 3x3/7x7 convs, 3 1x1 shortcut convs, the classifier
    before = [m.weight.detach().clone() for m in layers]
    xavier_init(model)
    changed_spread = 0
    for layer, old in zip(layers, before, strict=True):
        w = layer.weight.detach()
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        if w.numel() >= 4096:  # enough samples to see the distribution
            assert w.abs().max() > 0.98 * bound  # the spread fills the interval...
            assert float(w.var()) == pytest.approx(2 / (fan_in + fan_out), rel=0.06)
            assert float((w.abs() < bound / 2).float().mean()) == pytest.approx(0.5, abs=0.03)
            assert abs(float(w.mean())) < 0.05 * bound  # ...uniformly, around 0
        changed_spread += not math.isclose(float(old.var()), float(w.var()), rel_tol=0.2)
    assert changed_spread >= 10  # the default init is a different one
    # part of the recipe: the same weights every time
    again = create_model("d2l_resnet18")
    xavier_init(again)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(layers, _layers(again),
                                                                strict=True))


def _model_train_builds(monkeypatch, image_folder, tmp_path, **config) -> nn.Module:
    built = []

    def fake_fit(model, data, config, **kwargs):
        built.append(model)
        return None

    monkeypatch.setattr(RUN, "fit", fake_fit)
    reslab.train(TrainConfig(model="resnet14", data=f"folder:{image_folder}", image_size=16,
                             channels=1, val_size=40, out=str(tmp_path / "run"), **config))
    return built[0]


def test_train_applies_xavier_init_and_otherwise_the_seeded_default(monkeypatch, image_folder,
                                                                   tmp_path):
    xavier = _model_train_builds(monkeypatch, image_folder, tmp_path, init="xavier")
    expected = create_model("resnet14", num_classes=10, in_channels=1)
    xavier_init(expected)
    assert all(torch.equal(a.weight, b.weight)
               for a, b in zip(_layers(xavier), _layers(expected), strict=True))
    # init="default": the zoo's own init, drawn from the run's seed, so a run is repeatable
    default = _model_train_builds(monkeypatch, image_folder, tmp_path, seed=3)
    torch.manual_seed(3)
    seeded = create_model("resnet14", num_classes=10, in_channels=1)
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(),
                                                 seeded.state_dict().values(), strict=True))
    assert not torch.equal(_layers(default)[0].weight, _layers(xavier)[0].weight)
    other_seed = _model_train_builds(monkeypatch, image_folder, tmp_path, seed=4)
    assert not torch.equal(_layers(other_seed)[0].weight, _layers(default)[0].weight)


def test_the_d2l_preset_runs_with_its_empty_validation_split(image_folder, tmp_path):
    """val_size 0 (D2L trains on every image) used to crash before the first step."""
    result = reslab.train(preset_name="d2l", data=str(image_folder), resize=32, max_steps=2,
                          quiet=True, out=str(tmp_path / "run"))
    assert result.test["best_val_acc"] is None and result.test["images"] == 60
    assert math.isfinite(result.history[-1]["train_loss"])
    assert result.history[-1]["val_acc"] is None


def test_a_presets_tuned_levers_apply_only_to_the_network_they_were_tuned_for():
    from reslab.training.config import PLAIN_LR, preset_notes

    own = preset("fast")
    assert (own.model, own.whiten_stem, own.lr, own.epochs) == ("fast_resnet10", True, 0.6, 4)
    assert preset("fast", model="fast_resnet10") == own
    other = preset("fast", model="resnet20")  # the plain recipe, the preset's length
    assert (other.whiten_stem, other.lr, other.epochs) == (False, PLAIN_LR, 4)
    assert (other.optimizer, other.nesterov, other.schedule) == ("sgd", True, "onecycle")
    best = preset("best", model="d2l_resnet18")  # generic augmentation stays
    assert (best.whiten_stem, best.lr, best.erase, best.crop_padding) == (False, 0.05, 0.5, 2)
    assert preset("fast", model="resnet20", lr=0.6).lr == 0.6  # options still win
    (note,) = preset_notes("fast", other, {"model"})
    assert note == ("preset fast: its levers (whiten_stem True, lr 0.6) are tuned for "
                    "fast_resnet10, so resnet20 trains on the plain recipe (SGD + Nesterov, "
                    "one-cycle to lr 0.05); give them as options to try them")
    assert "lr 0.6" not in preset_notes("fast", other, {"model", "lr"})[0]
    assert preset_notes("fast", other, {"model", "lr", "whiten_stem"}) == []
    assert preset_notes("fast", own) == preset_notes("d2l", preset("d2l")) == []


def test_another_batch_size_scales_the_recipes_learning_rate():
    from reslab.training.config import preset_notes

    assert preset("fast", batch_size=64).lr == pytest.approx(0.15)  # 0.6 at 256
    assert preset("fast", model="resnet20", batch_size=16).lr == pytest.approx(0.003125)
    assert preset("d2l", batch_size=128).lr == pytest.approx(0.025)  # 0.05 at 256
    assert preset("paper-cifar", batch_size=256).lr == pytest.approx(0.2)  # 0.1 at 128
    assert preset("fast", batch_size=64, lr=0.5).lr == 0.5  # a given rate is kept
    config = preset("d2l", batch_size=128)
    assert preset_notes("d2l", config, {"batch_size"}) == [
        "lr 0.025: the recipe's 0.05 at batch 256, scaled to batch 128 (the linear scaling "
        "rule); --lr sets it"]
    assert preset_notes("d2l", preset("d2l", batch_size=128, lr=0.5), {"batch_size", "lr"}) == []


def test_print_config_shows_the_recipe_a_model_gets(capsys):
    import json

    from reslab.cli import main

    assert main(["train", "--model", "resnet20", "--print-config"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert (shown["model"], shown["whiten_stem"], shown["lr"]) == ("resnet20", False, 0.05)
    assert err.startswith("note: preset fast: its levers") and err.count("\n") == 1
