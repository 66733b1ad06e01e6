"""timm's ResNet family: keys, shapes, parameters, MACs and input configuration as timm has
them (tests/data/timm_resnet_family.json, read off timm 1.0.31), and each model's
variant trains. Outputs against timm itself: benchmarks/compare_timm.py (timm cannot be
imported beside this torch)."""

import json
from pathlib import Path

import pytest
import torch

import reslab
from reslab.models import TIMM_FAMILY, PretrainedCfg, pretrained_cfg
from reslab.models.pretrained import TORCHVISION
from reslab.models.summary import summary

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "timm_resnet_family.json")
                       .read_text())["models"]
TORCHVISION_NAMES = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                     "wide_resnet50_2", "wide_resnet101_2"}


def test_the_zoo_has_the_whole_family():
    assert set(REFERENCE) - set(reslab.list_models()) == set()
    assert set(TIMM_FAMILY) == set(REFERENCE) - TORCHVISION_NAMES


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_state_dict_matches_timm_key_for_key(name):
    with torch.device("meta"):
        model = reslab.create_model(name)
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == REFERENCE[name]["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[name]["params"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_macs_at_the_pretrained_input_size(name):
    s = summary(name)  # at the model's natural input: its weights' input size
    assert list(s.input_shape) == REFERENCE[name]["input_size"]
    assert s.macs == pytest.approx(REFERENCE[name]["macs_conv_linear"], rel=0.01)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_pretrained_cfg_is_timms_or_torchvisions(name):
    cfg = pretrained_cfg(name)
    if name in TORCHVISION_NAMES:  # the name is torchvision's model and weights
        assert cfg == TORCHVISION
        assert (cfg.input_size, cfg.interpolation, cfg.crop_pct) == ((3, 224, 224), "bilinear",
                                                                     0.875)
        return
    ref = REFERENCE[name]
    test_size = ref["test_input_size"] and tuple(ref["test_input_size"])
    assert cfg == PretrainedCfg(tuple(ref["input_size"]), tuple(ref["mean"]), tuple(ref["std"]),
                                ref["interpolation"], ref["crop_pct"], test_size)


def test_models_without_published_weights_have_no_cfg():
    assert pretrained_cfg("resnet20") is None and pretrained_cfg("d2l_resnet18") is None
    with pytest.raises(AttributeError):
        pretrained_cfg("resnet50").crop_pct = 1.0  # frozen: shared by every caller


@pytest.mark.parametrize("name", TIMM_FAMILY)
def test_each_variant_trains_a_step_at_small_size(name):
    # the model's own spec with one unit per stage and a quarter of the widths: every layer
    # kind it has runs forward and backward, in seconds
    spec = reslab.get_spec(name).replace(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128),
                                         stem_width=32, num_classes=5)
    model = reslab.build(spec)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.eval()(x).shape == (2, 5)


@pytest.mark.parametrize("name", TIMM_FAMILY)
def test_a_fresh_model_starts_as_timm_initialises_it(name):
    # timm's ResNet: He-normal convs and each unit's last norm at zero (zero_init_last=True);
    # its ResNetV2: no zeroed norms, the 1x1-conv head at N(0, 0.01) with a zero bias.
    # Without them resnetv2_50 began at logits of std ~11 (loss 17 on 10 classes). Compared
    # with timm 1.0.31 itself outside CI: every tensor's zeros and spread agree
    torch.manual_seed(0)
    model = reslab.create_model(name, num_classes=10)
    last = [unit.last_scaled_layer() for unit in model.units()]  # a norm, or v2's last conv
    # conv biases (squeeze-excitation's) keep PyTorch's default, which timm leaves them at
    biases = [m.bias for path, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
              and m.bias is not None and path != "head.fc"]
    assert all(bias.any() for bias in biases)
    if name.startswith("resnetv2"):
        head = model.get_classifier().fc
        assert 0.009 < head.weight.std() < 0.011 and not head.bias.any()
        assert all(layer.weight.all() for layer in last)
    else:
        assert all(not layer.weight.any() for layer in last)
        assert all(norm.weight.all() for stem in model.stem_modules()
                   for norm in stem.modules() if isinstance(norm, torch.nn.BatchNorm2d))


def test_the_model_carries_its_pretrained_cfg():
    with torch.device("meta"):
        assert reslab.create_model("resnetrs50").pretrained_cfg.input_size == (3, 160, 160)
        assert reslab.create_model("resnet50", features_only=True).pretrained_cfg == TORCHVISION
        assert reslab.create_model("resnet20").pretrained_cfg is None


def test_a_resnetv2_weights_file_fine_tunes_with_a_new_conv_head():
    spec = reslab.get_spec("resnetv2_50d").replace(depths=(1, 1, 1, 1), num_classes=1000)
    published = reslab.build(spec).state_dict()
    model = reslab.build(spec.replace(num_classes=5, in_channels=1))
    report = reslab.load_weights(model, published)
    assert report.dropped == ["head.fc.weight", "head.fc.bias"]
    assert report.adapted == ["stem.conv1.weight"]
    torch.testing.assert_close(model.stem.conv1.weight,
                               published["stem.conv1.weight"].sum(1, keepdim=True))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
