"""The fast-training levers, each tested for what it does (docs/benchmarks.md measures what
they are worth)."""

import pytest
import torch
import torch.nn.functional as F

import reslab
from reslab.data import AugmentConfig, BatchLoader
from reslab.errors import ConfigError
from reslab.models import ResNetSpec
from reslab.runtime.evaluate import predict_proba
from reslab.training import TrainConfig, fit
from reslab.training.config import checked
from reslab.training.whitening import first_conv, whiten_first_conv

TINY = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 1), widths=(8, 16), in_channels=1,
                  num_classes=10, input_size=16)


def normalised_images(data, count=400):
    images = data.train.load(torch.arange(count)).float() / 255
    return (images - data.mean[0]) / data.std[0]


def test_the_whitened_stem_decorrelates_the_training_patches(tiny_data):
    model = reslab.build(TINY)
    images = normalised_images(tiny_data)
    note = whiten_first_conv(model, images)
    conv = first_conv(model)
    assert "8 filters = +/- the top 4 of 9" in note
    with torch.no_grad():
        out = F.conv2d(images, conv.weight, stride=conv.stride)  # the patches, no padding
    half = out[:, :4].transpose(0, 1).reshape(4, -1)
    covariance = half @ half.T / half.shape[1]  # uncentred, as the whitening is
    # the top directions' variance is far above epsilon: unit variance, zero correlation
    assert torch.allclose(covariance, torch.eye(4), atol=0.02)
    assert torch.equal(out[:, 4:], -out[:, :4])  # the second half mirrors the first
    assert not any(p.requires_grad for p in conv.parameters())


def test_a_whitened_run_keeps_its_stem_frozen_and_resumes_frozen(tmp_path, tiny_data):
    config = TrainConfig(epochs=1, batch_size=16, whiten_stem=True, quiet=True, tta_flip=False,
                         out=str(tmp_path / "run"))
    model = reslab.build(TINY)
    fit(model, tiny_data, config)
    whitened = first_conv(model).weight.detach().clone()
    expected = reslab.build(TINY)
    whiten_first_conv(expected, torch.cat([
        BatchLoader(tiny_data.train, 400, train=False, mean=tiny_data.mean, std=tiny_data.std,
                    channels_last=False).transform(tiny_data.train.load(torch.arange(400)))]))
    assert torch.allclose(whitened, first_conv(expected).weight)  # trained, yet unchanged
    resumed = reslab.build(TINY)
    fit(resumed, tiny_data, config.replace(epochs=2), run_dir=tmp_path / "run", resume=True)
    assert torch.equal(first_conv(resumed).weight, whitened)


def test_whitening_needs_a_first_convolution_on_the_images_channels(tiny_data):
    with pytest.raises(ConfigError, match="channels"):
        whiten_first_conv(reslab.build(TINY), torch.zeros(4, 3, 16, 16))


def test_alternating_flips_mirror_each_image_in_exactly_every_other_epoch(tiny_data):
    # images whose left and right halves differ, so a mirrored one is told from the original
    split = tiny_data.train
    loader = BatchLoader(split, 50, train=True, mean=(0.0,), std=(1 / 255,),
                         augment=AugmentConfig(flip=True, alternate_flips=True), seed=3,
                         channels_last=False)
    mirrored = {}
    for epoch in range(4):
        loader.set_epoch(epoch)
        for indices, (x, _) in zip(loader.batch_indices(), loader, strict=True):
            original = split.load(indices).float()
            for i, image, before in zip(indices.tolist(), x, original, strict=True):
                flipped = torch.equal(image, before.flip(2))
                assert flipped or torch.equal(image, before)
                mirrored.setdefault(i, []).append(flipped)
    pattern = {tuple(v) for v in mirrored.values()}
    assert pattern == {(True, False, True, False), (False, True, False, True)}
    share = sum(v[0] for v in mirrored.values()) / len(mirrored)
    assert 0.4 < share < 0.6  # a random half starts mirrored


def test_alternating_flips_need_flips():
    with pytest.raises(ConfigError, match="alternate_flips needs flip"):
        checked(TrainConfig(flip=False, alternate_flips=True))


def test_tta_shift_averages_the_shifted_views():
    seen = []

    def model(x):
        seen.append(x.clone())
        return x.mean(dim=(2, 3)).repeat(1, 2)

    x = torch.arange(2 * 36, dtype=torch.float32).view(2, 1, 6, 6)
    probs = predict_proba(model, x, tta_flip=True, tta_shift=1)
    assert len(seen) == 6
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    down_right, up_left = padded[..., :6, :6], padded[..., 2:, 2:]
    assert torch.equal(seen[0], x) and torch.equal(seen[1], down_right)
    assert torch.equal(seen[2], up_left) and torch.equal(seen[3], x.flip(3))
    assert torch.equal(seen[5], up_left.flip(3))
    assert torch.allclose(probs, torch.full((2, 2), 0.5))
    assert down_right[0, 0, 1, 1] == x[0, 0, 0, 0]  # content moved down-right by one pixel


def test_tta_shift_is_bounded():
    with pytest.raises(ConfigError, match="tta_shift must be an integer from 0 to 4"):
        checked(TrainConfig(tta_shift=9))


def test_a_run_with_tta_shift_evaluates_and_exports_its_views(tmp_path, tiny_data):
    pytest.importorskip("onnxruntime")
    from reslab.export import export_onnx

    config = TrainConfig(epochs=1, batch_size=16, tta_shift=1, quiet=True,
                         out=str(tmp_path / "run"))
    fit(reslab.build(TINY), tiny_data, config)
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    assert reslab.models.read_metadata(best)["tta_shift"] == 1
    written = export_onnx(best, tmp_path / "m.onnx")
    assert "6 views" in written["metadata"]["output"] and written["max_abs_diff"] < 1e-4


def test_lookahead_equals_its_definition_on_a_toy_problem():
    from reslab.training.lookahead import Lookahead

    torch.manual_seed(0)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    model = torch.nn.Linear(2, 1, bias=False)
    start = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lookahead = Lookahead(model, k=3, alpha=0.5)

    def gradient(w):
        w = w.clone().requires_grad_(True)
        ((x @ w.T - y) ** 2).mean().backward()
        return w.grad

    fast, slow = start.clone(), start.clone()
    for step in range(1, 8):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        lookahead.step(step)
        fast = fast - 0.1 * gradient(fast)  # k steps forward...
        if step % 3 == 0:  # ...one step back: slow += alpha (fast - slow); fast = slow
            slow = slow + 0.5 * (fast - slow)
            fast = slow.clone()
        assert torch.allclose(model.weight, fast, atol=1e-6), step
    assert torch.allclose(lookahead.slow["weight"], slow, atol=1e-6)


def test_a_lookahead_run_resumes_exactly(tmp_path, tiny_data):
    # a constant rate, so that one epoch extended by another is the two-epoch run
    config = TrainConfig(epochs=2, batch_size=16, lookahead_steps=7, quiet=True, tta_flip=False,
                         schedule="constant", warmup_epochs=0, deterministic=True,
                         out=str(tmp_path / "whole"))
    torch.manual_seed(0)
    whole = reslab.build(TINY)
    fit(whole, tiny_data, config)
    torch.manual_seed(0)
    half = reslab.build(TINY)
    fit(half, tiny_data, config.replace(epochs=1, out=str(tmp_path / "half")))
    torch.manual_seed(0)
    resumed = reslab.build(TINY)
    fit(resumed, tiny_data, config.replace(out=str(tmp_path / "half")), resume=True)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_lookahead_values_are_checked():
    with pytest.raises(ConfigError, match="lookahead_alpha"):
        checked(TrainConfig(lookahead_steps=5, lookahead_alpha=0))
    with pytest.raises(ConfigError, match="lookahead_steps"):
        checked(TrainConfig(lookahead_steps=-1))


def test_progressive_resizing_grows_the_side_to_full_by_half_way():
    from reslab.data.augment import progressive_side

    assert [progressive_side(20, 28, e, 4) for e in range(4)] == [20, 24, 28, 28]
    assert [progressive_side(16, 28, e, 3) for e in range(3)] == [16, 24, 28]
    assert progressive_side(20, 28, 0, 1) == 20  # a one-epoch run trains small only


def test_a_progressive_run_trains_small_first_and_evaluates_at_full_size(tmp_path, tiny_data):
    sides = []
    model = reslab.build(TINY)
    model.register_forward_pre_hook(lambda m, args: sides.append((m.training,
                                                                  args[0].shape[-1])))
    fit(model, tiny_data, TrainConfig(epochs=2, batch_size=100, progressive_resize=10,
                                      quiet=True, tta_flip=False, out=str(tmp_path / "r")))
    trained = [side for training, side in sides if training]
    assert trained == [10] * 4 + [16] * 4  # 4 steps an epoch
    assert {side for training, side in sides if not training} == {16}


def test_progressive_resizing_must_start_below_the_full_size(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="progressive_resize 16 must be below"):
        fit(reslab.build(TINY), tiny_data, TrainConfig(
            epochs=1, progressive_resize=16, quiet=True, out=str(tmp_path / "r")))


def test_norm_biases_learn_faster_and_frozen_norm_scales_stay(tmp_path, tiny_data):
    from reslab.training.optim import make_optimizer

    model = reslab.build(TINY)
    config = TrainConfig(lr=0.1, norm_bias_lr_scale=16, freeze_norm_scales=True)
    optimizer = make_optimizer(model, config)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert [rate[id(m.bias)] for m in norms] == pytest.approx([1.6] * len(norms))
    assert rate[id(first_conv(model).weight)] == pytest.approx(0.1)
    assert not any(id(m.weight) in rate for m in norms)
    scales = [m.weight.detach().clone() for m in norms]
    result = fit(model, tiny_data, TrainConfig(epochs=1, batch_size=16, norm_bias_lr_scale=16,
                                               freeze_norm_scales=True, quiet=True,
                                               tta_flip=False, out=str(tmp_path / "r")))
    assert all(torch.equal(a, m.weight) for a, m in zip(scales, norms, strict=True))
    assert result.history[-1]["lr"] < 0.2 / 1000  # the run's rate, not the biases' 16x


def test_frozen_norm_scales_refuse_zero_initialised_branches():
    from reslab.training.optim import make_optimizer

    model = reslab.build(TINY.replace(zero_init_residual=True))
    with pytest.raises(ConfigError, match="residual branches dead"):
        make_optimizer(model, TrainConfig(freeze_norm_scales=True))


def test_dirac_init_makes_each_convolutions_first_filters_pass_their_input_through():
    from reslab.training.run import dirac_init

    torch.manual_seed(0)
    model = reslab.build(TINY)
    before = {name: m.weight.detach().clone() for name, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    dirac_init(model)
    x = torch.randn(2, 16, 8, 8)
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Conv2d):
            continue
        n = min(m.out_channels, m.in_channels)
        pad = m.kernel_size[0] // 2
        through = F.conv2d(x[:, :m.in_channels], m.weight[:n], padding=pad)
        assert torch.equal(through, x[:, :n]), name  # the first n channels, unchanged
        assert torch.equal(m.weight[n:], before[name][n:]), name  # the rest keep their init
    assert len(before) >= 5


def test_reslab_train_applies_the_dirac_init(tmp_path, image_folder, caplog):
    caplog.set_level("INFO", logger="reslab")
    result = reslab.train(model="resnet14", data=f"folder:{image_folder}", image_size=16,
                          channels=1, train_subset=64, epochs=1, batch_size=32, init="dirac",
                          quiet=True, out=str(tmp_path / "run"), val_size=20)
    assert result.history[0]["step"] == 2 and result.history[0]["train_loss"] > 0
    assert "init: dirac" in caplog.text


def test_one_cycle_can_end_above_zero_and_an_extension_ends_there_too():
    from reslab.training.optim import final_lr_fraction, make_optimizer, make_scheduler

    model = torch.nn.Linear(2, 2)
    config = TrainConfig(lr=0.6, end_lr_fraction=0.07, warmup_epochs=1.0)
    optimizer = make_optimizer(model, config)
    schedule = make_scheduler(optimizer, config, total_steps=40, steps_per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.6 / 25) and max(rates) == pytest.approx(0.6)
    assert rates[-1] == pytest.approx(0.6 * 0.07)  # a triangle ending above zero
    down = rates[rates.index(0.6):]
    steps = [a - b for a, b in zip(down, down[1:], strict=False)]
    assert steps == pytest.approx([steps[0]] * len(steps))  # a straight line down
    assert final_lr_fraction(config) == 0.07  # where --resume's extension ends (lifecycle)


def test_end_lr_fraction_is_for_one_cycle_only_and_within_the_peak():
    with pytest.raises(ConfigError, match="end_lr_fraction sets where one-cycle ends"):
        checked(TrainConfig(schedule="cosine", end_lr_fraction=0.1))
    with pytest.raises(ConfigError, match="end_lr_fraction"):
        checked(TrainConfig(end_lr_fraction=1.5))
