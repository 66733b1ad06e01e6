import pytest
import torch
from torch import nn

import reslab
from reslab.errors import ConfigError, InputShapeError, UnknownNameError
from reslab.models.summary import format_count, parse_input
from reslab.tables import count


def shapes(summary):
    return [(row.name, row.output_shape) for row in summary.rows]


def test_d2l_resnet18_at_224_matches_the_seed_listing():
    s = reslab.summary("d2l_resnet18", "1x224x224")
    assert s.input_shape == (1, 224, 224)
    assert shapes(s) == [
        ("stem", (64, 56, 56)), ("layer1", (64, 56, 56)), ("layer2", (128, 28, 28)),
        ("layer3", (256, 14, 14)), ("layer4", (512, 7, 7)), ("avgpool", (512, 1, 1)),
        ("fc", (10,)),
    ]
    assert [row.kind for row in s.rows] == ["stem", *["stage"] * 4, "head", "head"]


def test_d2l_resnet18_at_its_training_size_96():
    s = reslab.summary("d2l_resnet18")  # the natural input: 1x96x96
    assert s.input_shape == (1, 96, 96)
    assert [row.output_shape for row in s.rows] == [
        (64, 24, 24), (64, 24, 24), (128, 12, 12), (256, 6, 6), (512, 3, 3), (512, 1, 1), (10,),
    ]
    assert reslab.summary("d2l_resnet18", 96) == s == reslab.summary("d2l_resnet18", (1, 96, 96))


@pytest.mark.parametrize("name, gmacs", [
    ("resnet18", 1.81), ("resnet50", 4.09), ("resnext50_32x4d", 4.23),  # torchvision's "GFLOPS"
])
def test_macs_match_torchvision(name, gmacs):
    s = reslab.summary(name, "3x224x224")
    assert s.macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert s.flops == 2 * s.macs


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "preact_resnet18", "resnet20",
                                  "d2l_resnet18", "lenet_bn"])
def test_row_parameters_sum_to_the_models(name):
    s = reslab.summary(name)
    assert sum(row.params for row in s.rows) == s.params
    assert s.params == sum(p.numel() for p in reslab.create_model(name).parameters())
    assert sum(row.flops for row in s.rows) == s.flops


def test_stage_rows_follow_the_stem_in_order():
    s = reslab.summary("resnet152")
    assert [row.name for row in s.rows if row.kind == "stage"] == [
        "layer1", "layer2", "layer3", "layer4"
    ]
    assert s.rows[0].name == "stem" and s.rows[-1].name == "fc"
    # pre-activation nets end with a BN-ReLU of their own, before the pool
    names = [row.name for row in reslab.summary("preact_resnet110").rows]
    assert names == ["stem", "layer1", "layer2", "layer3", "final_act", "avgpool", "fc"]


def test_a_real_model_gives_the_same_summary_as_its_meta_twin():
    model = reslab.create_model("resnet20").train()
    s = reslab.summary(model)
    zoo = reslab.summary("resnet20")
    assert (s.rows, s.params, s.input_shape) == (zoo.rows, zoo.params, zoo.input_shape)
    assert model.training  # the summary's eval() is undone


def test_resnet50_and_resnext50_cost_about_the_same():
    # The seed's comparison: cardinality 32 at (nearly) equal parameters and MACs.
    comparison = reslab.compare(["resnet50", "resnext50_32x4d"])
    r50, rx50 = comparison.summaries
    assert rx50.params == pytest.approx(r50.params, rel=0.03)
    assert rx50.macs == pytest.approx(r50.macs, rel=0.04)
    assert shapes(r50) == shapes(rx50)
    text = comparison.render()
    assert "resnext50_32x4d" in text and "1024x14x14" in text and "2048x7x7" in text


def test_lenet_is_summarised_layer_by_layer_at_28x28():
    s = reslab.summary("lenet_bn")
    assert s.input_shape == (1, 28, 28)
    assert [row.output_shape for row in s.rows] == [(6, 12, 12), (256,), (120,), (84,), (10,)]
    assert (s.block, s.depth) == ("-", 5)


def test_to_dict_and_render():
    s = reslab.summary("d2l_resnet18", "1x224x224")
    d = s.to_dict()
    assert d["input"] == [1, 224, 224] and d["rows"][0]["output"] == [64, 56, 56]
    assert d["total"] == {"params": 11_178_378, "flops": s.flops, "macs": s.flops // 2}
    assert "multiply-accumulates" in d["convention"]
    text = s.render()
    for cell in ("64x56x56", "128x28x28", "256x14x14", "512x7x7", "512x1x1", "11,178,378"):
        assert cell in text
    assert str(s) == text


def test_a_notebook_shows_one_line_and_print_the_table():
    s = reslab.summary("resnet20")
    assert repr(s) == ("<Summary resnet20 at 3x32x32: 269,722 params, 40.55 M MACs, depth 20; "
                       "print() it for the table>")
    both = reslab.compare(["resnet20", "resnet32"])
    assert repr(both) == "<Comparison of resnet20, resnet32; print() it for the table>"
    assert str(both).count("\n") > 10


def test_format_count():
    assert [format_count(n) for n in (1_814_073_344, 118_013_952, 5_120, 840, 0)] == [
        "1.81 G", "118.01 M", "5.12 K", "840", "0"
    ]


def test_count_names_one_or_many():
    assert count(1, "epoch") == "1 epoch"
    assert count(1_500, "epoch") == "1,500 epochs"
    assert count(1, "batch", "batches") == "1 batch"
    assert count(4, "batch", "batches") == "4 batches"


def test_parse_input():
    assert parse_input("1x96x96") == (1, 96, 96)
    assert parse_input(" 96 ", channels=3) == (3, 96, 96)
    for bad in ("1x96", "96x96", "1x96x96x2", "abc", "", "-3x32x32", "1 x 96 x 96", "3x32.5x32"):
        with pytest.raises(ConfigError, match="CxHxW"):
            parse_input(bad, channels=3)


def test_a_channel_mismatch_says_what_the_model_takes():
    with pytest.raises(InputShapeError, match=r"resnet18 takes 3-channel.*use 3x224x224"):
        reslab.summary("resnet18", "1x224x224")


def test_resnets_take_any_side_down_to_1_but_not_0():
    # Every downsampling layer is padded, so a 1x1 map stays 1x1 through all five of them.
    s = reslab.summary("resnet18", "3x1x1")
    assert s.row("layer4").output_shape == (512, 1, 1)
    with pytest.raises(InputShapeError, match="positive"):
        reslab.summary("resnet18", "3x0x0")


@pytest.mark.parametrize("size", ["1x27x27", "1x32x32", "1x28x29"])
def test_lenet_needs_exactly_28x28(size):
    with pytest.raises(InputShapeError, match=r"exactly 1x28x28"):
        reslab.summary("lenet_bn", size)


def test_a_network_too_small_for_its_input_gets_a_typed_error():
    net = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Conv2d(8, 8, 5))
    assert reslab.summary(net, (3, 9, 9)).rows[0].output_shape == (8, 1, 1)
    with pytest.raises(InputShapeError, match=r"Sequential cannot take a 3x8x8 input") as info:
        reslab.summary(net, (3, 8, 8))
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(InputShapeError, match="no natural input size"):
        reslab.summary(net)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownNameError, match="resnet50"):
        reslab.summary("resnet05")


def test_the_whole_zoo_is_summarised_on_meta_without_memory():
    s = reslab.summary("wide_resnet101_2")
    assert s.params == 126_886_696 and s.macs / 1e9 == pytest.approx(22.75, rel=0.01)
    assert torch.empty(0).device.type == "cpu"  # the meta device context did not leak
