import json
from pathlib import Path

import pytest
import torch

import reslab
from benchmarks import reference_d2l
from reslab.errors import SpecError, UnknownNameError

from .reference_impls import TORCHVISION, TorchvisionResNet

GOLDEN = json.loads((Path(__file__).parents[1] / "data" / "torchvision_resnet_state_dicts.json")
                    .read_text())
# timm's family, read off timm 1.0.31's code (tests/data/README.md)
TIMM = json.loads((Path(__file__).parents[1] / "data" / "timm_resnet_family.json")
                  .read_text())["models"]

# torchvision's counts (3 channels, 1000 classes), He et al. 2015's CIFAR counts (10 classes),
# and for the rest the count of the architecture the name denotes.
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "resnet14": 172_506, "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962, "resnet1202": 19_421_274,
    # option A shortcuts have no weights, so a plain CIFAR net counts the same as its ResNet
    "plain14": 172_506, "plain20": 269_722, "plain32": 464_154, "plain44": 658_586,
    "plain56": 853_018,
    "plain110": 1_727_962,
    # torchvision's resnet18/34 less the three downsample conv+BN pairs
    "plain18": 11_689_512 - (8_192 + 256 + 32_768 + 512 + 131_072 + 1_024),
    "plain34": 21_797_672 - (8_192 + 256 + 32_768 + 512 + 131_072 + 1_024),
    # seed 003's network, counted from its own code in test_d2l_resnet18_is_the_seed_network
    "d2l_resnet18": 11_178_378,
    # He et al. 2016 report 1.7M / 1.7M / 10.2M; Zagoruyko & Komodakis 2.7M / 36.5M / 8.9M
    "preact_resnet110": 1_730_522, "preact_resnet164": 1_703_258,
    "preact_resnet1001": 10_327_706, "preact_resnet18": 11_172_170,
    "wrn16_4": 2_748_890, "wrn28_10": 36_479_194, "wrn40_4": 8_949_210,
    "lenet_bn": 44_878,
    # 432 + 32 (stem) + 4,672 + 13,952 + 55,552 + 221,696 (one unit per stage) + 1,290 (fc)
    "fast_resnet10": 297_338,  # 1 input channel (reslab trains it on Fashion-MNIST)
    # the orderings of "Identity Mappings" Fig. 4 (b)-(e): (a)'s weights, but (d) has no stem
    # BN (its units normalise their own input: 32 fewer); (e) trades that BN for a final one
    # and BNs of each unit's input (16 and 32 channels) where (a) has its output's
    **{f"resnet{d}_{x}": n - (32 if x == "d" else 0)
       for d, n in ((20, 269_722), (56, 853_018), (110, 1_727_962)) for x in "bcde"},
} | {name: model["params"] for name, model in TIMM.items()}
# timm's own models train a step in test_timm_family.py, at a fraction of their size
TIMM_ONLY = set(TIMM) - set(GOLDEN)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("letter, ordering", [("b", "bn_after_add"), ("c", "relu_before_add"),
                                              ("d", "relu_preact"), ("e", "full_preact")])
def test_the_ordering_names_are_the_orderings_experiments_nets(letter, ordering):
    from types import SimpleNamespace

    from reslab.experiments.common import cifar_spec

    cifar10 = SimpleNamespace(image_shape=(3, 32, 32), classes=[str(i) for i in range(10)])
    for depth in (20, 56, 110):
        spec = reslab.get_spec(f"resnet{depth}_{letter}")
        assert spec == cifar_spec(depth, cifar10, ordering=ordering)
        assert spec == reslab.get_spec(f"resnet{depth}").replace(ordering=ordering)


def test_every_zoo_entry_has_a_checked_parameter_count():
    assert sorted(PARAMS) == sorted(reslab.list_models())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation arithmetic
        assert n_params(reslab.create_model(name)) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_state_dict_matches_torchvision_key_for_key(name):
    model = reslab.create_model(name)
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == GOLDEN[name]["state_dict"]
    assert n_params(model) == GOLDEN[name]["num_params"]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_same_outputs_as_torchvision_from_the_same_weights(name):
    block, layers, kwargs = TORCHVISION[name]
    torch.manual_seed(0)
    reference = TorchvisionResNet(block, layers, **kwargs)
    for m in reference.modules():  # non-trivial BN statistics, so eval mode is a real check
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    ours = reslab.create_model(name)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for mode in ("eval", "train"):
        getattr(reference, mode)()
        getattr(ours, mode)()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def _seed_to_reslab_key(key: str) -> str:
    stage, rest = key.split(".", 1)
    if stage == "0":  # b1: conv, BN, ReLU, max-pool
        return {"0": "conv1", "1": "bn1"}[rest.split(".")[0]] + "." + rest.split(".", 1)[1]
    if stage == "7":
        return "fc." + rest
    unit, name, param = rest.split(".", 2)
    name = "downsample.0" if name == "conv3" else name
    return f"layer{int(stage)}.{unit}.{name}.{param}"


def test_d2l_resnet18_is_the_seed_network():
    torch.manual_seed(0)
    seed_net = reference_d2l.net("d2l_resnet18")
    ours = reslab.create_model("d2l_resnet18")
    assert n_params(seed_net) == n_params(ours) == PARAMS["d2l_resnet18"]
    mapped = {_seed_to_reslab_key(k): v for k, v in seed_net.state_dict().items()}
    assert sorted(mapped) == sorted(ours.state_dict())
    ours.load_state_dict(mapped)
    x = torch.randn(3, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), seed_net(x), rtol=0, atol=1e-5)


def test_d2l_resnet18_spec_is_the_seeds():
    spec = reslab.get_spec("d2l_resnet18")
    assert (spec.in_channels, spec.num_classes, spec.conv_bias) == (1, 10, True)
    assert spec.shortcut == "conv" and spec.depth == 18


@pytest.mark.parametrize(
    "name", [n for n in sorted(PARAMS)
             if n not in {"resnet1202", "preact_resnet1001", *TIMM_ONLY}]
)
def test_forward_and_backward_at_a_small_input(name):
    model = reslab.create_model(name, num_classes=7)
    cin = getattr(getattr(model, "spec", None), "in_channels", 1)
    size = 28 if name == "lenet_bn" else 32
    x = torch.randn(2, cin, size, size)
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet1202", "preact_resnet1001"])
def test_thousand_layer_networks_run(name):
    model = reslab.create_model(name)
    y = model(torch.randn(2, 3, 32, 32))
    y.sum().backward()
    assert y.shape == (2, 10) and torch.isfinite(model.conv1.weight.grad).all()


def test_overrides_reach_the_spec():
    model = reslab.create_model("resnet50", num_classes=10, in_channels=1, zero_init_residual=True)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    assert model.spec.zero_init_residual
    assert float(model.layer1[0].bn3.weight.detach().abs().sum()) == 0.0


def test_unknown_model_lists_the_closest_names():
    with pytest.raises(UnknownNameError, match="resnet50") as info:
        reslab.create_model("resnet05")
    assert "unknown model 'resnet05'" in str(info.value)


def test_unknown_override_is_refused_with_a_suggestion():
    with pytest.raises(SpecError, match="did you mean groups"):
        reslab.create_model("resnet18", grups=2)


def test_list_models_sorts_naturally_and_filters():
    assert reslab.list_models("resnet*")[:6] == [
        "resnet10t", "resnet14", "resnet14t", "resnet18", "resnet18d", "resnet20"
    ]
    assert reslab.list_models("resnext*") == [
        "resnext50_32x4d", "resnext50d_32x4d", "resnext101_32x8d", "resnext101_64x4d"
    ]


def test_model_api_features_head_and_classifier_reset():
    model = reslab.create_model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (1, 512, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (1, 512)
    torch.testing.assert_close(model.forward_head(features), model(x))
    stages = model.forward_stages(x)
    assert [tuple(f.shape[1:]) for f in stages] == [
        (64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)
    ]
    model.reset_classifier(5)
    assert model(x).shape == (1, 5) and model.spec.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (1, 512)
