import operator

import pytest
import torch
import torch.fx as fx

import reslab
from reslab.errors import SpecError
from reslab.models import Block, Ordering, ResidualUnit, ResNetSpec, Shortcut

# He et al. 2016, Fig. 4: the order of operations each ordering's name promises.
EXPECTED_ORDER = {
    "original": ["conv1", "bn1", "relu", "conv2", "bn2", "add", "relu"],
    "bn_after_add": ["conv1", "bn1", "relu", "conv2", "add", "bn2", "relu"],
    "relu_before_add": ["conv1", "bn1", "relu", "conv2", "bn2", "relu", "add"],
    "relu_preact": ["relu", "conv1", "bn1", "relu", "conv2", "bn2", "add"],
    "full_preact": ["bn1", "relu", "conv1", "bn2", "relu", "conv2", "add"],
}


def traced_ops(module):
    ops = []
    for node in fx.symbolic_trace(module).graph.nodes:
        if node.op == "call_module":
            ops.append(node.target)
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            ops.append("add")
    return ops


@pytest.mark.parametrize("ordering", list(EXPECTED_ORDER))
def test_ordering_runs_the_layers_its_name_says(ordering):
    unit = ResidualUnit(Block.BASIC, 16, 16, ordering=Ordering(ordering))
    assert traced_ops(unit) == EXPECTED_ORDER[ordering]


def test_bottleneck_full_preact_order_and_projection_on_the_activated_input():
    unit = ResidualUnit(Block.BOTTLENECK, 16, 16, 2, ordering=Ordering.FULL_PREACT)
    assert traced_ops(unit) == [
        "bn1", "relu", "conv1", "bn2", "relu", "conv2", "bn3", "relu", "conv3",
        "downsample.0", "downsample.1", "add",
    ]
    graph = fx.symbolic_trace(unit).graph
    projection = next(n for n in graph.nodes if n.target == "downsample.0")
    assert projection.args[0].target == "relu"  # shares the pre-activation


def test_bottleneck_stride_placement():
    v15 = ResidualUnit(Block.BOTTLENECK, 64, 64, 2)
    paper = ResidualUnit(Block.BOTTLENECK, 64, 64, 2, bottleneck_stride="1x1")
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))
    assert (paper.conv1.stride, paper.conv2.stride) == ((2, 2), (1, 1))
    x = torch.randn(1, 64, 8, 8)
    assert v15(x).shape == paper(x).shape == (1, 256, 4, 4)


@pytest.mark.parametrize("name", ["plain20", "plain56", "plain18", "plain34"])
def test_plain_networks_contain_no_addition(name):
    model = reslab.create_model(name)
    assert "add" not in traced_ops(model)
    assert all(unit.downsample is None for unit in model.units())
    assert "add" in traced_ops(reslab.create_model(name.replace("plain", "resnet")))


@pytest.mark.parametrize("ordering", ["original", "relu_before_add", "relu_preact", "full_preact"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_zero_init_makes_every_identity_unit_the_identity(ordering, block):
    spec = ResNetSpec(block=block, depths=(2, 2), widths=(8, 16), stem="cifar", stem_width=32,
                      ordering=ordering, zero_init_residual=True, num_classes=10)
    model = reslab.build(spec)
    identity_units = [u for u in model.units() if u.downsample is None]
    assert len(identity_units) >= 2
    # inputs as the unit sees them inside a network: post-ReLU (non-negative) for (a)
    x = torch.rand(4, identity_units[0].in_channels, 6, 6)
    for mode in ("train", "eval"):
        for unit in identity_units:
            getattr(unit, mode)()
            xin = torch.rand(4, unit.in_channels, 6, 6) if unit is not identity_units[0] else x
            assert torch.equal(unit(xin), xin)


def test_bn_after_addition_is_not_the_identity_even_zero_initialised():
    # the paper's point about ordering (b): the BN on the sum alters the shortcut signal
    unit = ResidualUnit(Block.BASIC, 8, 8, ordering=Ordering.BN_AFTER_ADD)
    unit.zero_init_last()
    x = torch.rand(4, 8, 6, 6) * 3 + 1
    assert not torch.allclose(unit(x), x, atol=1e-2)


def test_pad_shortcut_subsamples_and_zero_pads():
    unit = ResidualUnit(Block.BASIC, 16, 32, 2, shortcut=Shortcut.PAD)
    x = torch.randn(1, 16, 8, 8)
    padded = unit.downsample(x)
    assert padded.shape == (1, 32, 4, 4)
    assert torch.equal(padded[:, :16], x[:, :, ::2, ::2]) and not padded[:, 16:].any()
    assert sum(p.numel() for p in unit.downsample.parameters()) == 0


def test_resnext_grouped_convolution_width():
    model = reslab.create_model("resnext50_32x4d")
    conv = model.layer1[0].conv2
    assert (conv.groups, conv.in_channels, conv.out_channels) == (32, 128, 128)


def test_spec_round_trips_through_a_plain_dict():
    spec = reslab.get_spec("resnext50_32x4d", num_classes=10)
    assert ResNetSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["block"] == "bottleneck" and spec.to_dict()["depths"] == [3, 4, 6, 3]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(depths=(), widths=()), "at least one stage"),
        (dict(depths=(2, 2), widths=(64,)), "one width per stage"),
        (dict(depths=(2, 0, 2, 2)), "must be >= 1"),
        (dict(groups=3), "does not divide"),
        (dict(ordering="preactivation"), "unknown ordering 'preactivation': choose one of"),
        (dict(block="dense"), "unknown block"),
        (dict(stem="huge"), "unknown stem"),
        (dict(shortcut="B"), "unknown shortcut"),
        (dict(num_classes=-1), "num_classes"),
        (dict(in_channels=0), "in_channels must be a positive integer"),
        (dict(width_per_group=4), "only applies to bottleneck"),
        (dict(block="bottleneck", widths=(16, 32, 64, 128), width_per_group=3), "fractional"),
        (dict(shortcut="pad", widths=(64, 32, 16, 8)), "can only add channels"),
        (dict(depths=4), "sequence of integers"),
    ],
)
def test_invalid_specs_are_refused_with_a_reason(changes, message):
    with pytest.raises(SpecError, match=message):
        ResNetSpec().replace(**changes)


def test_depth_counts_weighted_layers_like_the_papers():
    names = ("resnet18", "resnet50", "resnet110")
    assert [reslab.get_spec(n).depth for n in names] == [18, 50, 110]
    assert reslab.get_spec("resnet18", stem="deep").depth == 20


def test_deep_stem_builds_and_keeps_the_resolution_schedule():
    model = reslab.create_model("resnet18", stem="deep")
    assert isinstance(model.conv1, torch.nn.Sequential)
    assert model.forward_stem(torch.randn(1, 3, 64, 64)).shape == (1, 64, 16, 16)
