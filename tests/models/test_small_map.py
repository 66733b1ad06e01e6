"""Convolutions on maps smaller than their kernel train as a dense matrix product: the same
function and the same gradients as nn.Conv2d, and untouched wherever that does not apply."""

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import reslab
from reslab.inference import InferenceModel
from reslab.models import small_map
from reslab.models.small_map import conv_forward

# (in side h, w, kernel, stride, padding, bias): 1x1 and 2x2 maps as d2l_resnet18 meets them
# on 28x28 input, rectangular maps, a 5x5 kernel, a bias
SMALL = [
    ((1, 1), 3, 1, 1, False), ((2, 2), 3, 1, 1, True), ((2, 2), 3, 2, 1, False),
    ((1, 2), 3, 1, 1, False), ((2, 1), 3, 2, 1, True), ((3, 1), 3, 1, 1, False),
    ((2, 3), 5, 1, 2, True), ((1, 1), 5, 2, 2, False),
]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("side", "k", "stride", "pad", "bias"), SMALL)
def test_a_small_map_gives_nn_conv2d_values_and_gradients(side, k, stride, pad, bias, layout):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, k, stride, pad, bias=bias).double().to(memory_format=layout)
    x = torch.randn(4, 5, *side, dtype=torch.double, requires_grad=True)
    assert small_map._dense_applies(conv, *side)
    expected = F.conv2d(x, conv.weight, conv.bias, stride, pad)
    got = conv_forward(conv, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    upstream = torch.randn_like(expected)
    params = (x, conv.weight) + ((conv.bias,) if bias else ())
    for a, b in zip(torch.autograd.grad(expected, params, upstream),
                    torch.autograd.grad(got, params, upstream), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_bf16_autocast_on_channels_last_input_is_close_and_keeps_the_memory_format():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 32, 3, 1, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 2, 2).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        got = conv_forward(conv, x)
        expected = conv(x)
    assert got.dtype == torch.bfloat16
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("side", "stride"), [((1, 1), 1), ((2, 2), 1), ((2, 2), 2)])
def test_the_weight_gradient_comes_back_in_the_weights_own_layout(side, stride, layout):
    # a gradient in another layout is copied by AccumulateGrad and again by torch's fused
    # SGD, every step: for d2l_resnet18 at 28x28 that was a third of the step (AVX-512)
    conv = nn.Conv2d(16, 8, 3, stride, 1, bias=False).to(memory_format=layout)
    x = torch.randn(4, 16, *side).contiguous(memory_format=torch.channels_last)
    (grad,) = torch.autograd.grad(conv_forward(conv, x).square().sum(), conv.weight)
    assert grad.stride() == conv.weight.stride()


def test_only_the_taps_that_meet_the_map_are_read():
    # at 1x1 the centre tap alone; from 2x2 to 1x1 at stride 2 the lower right 2x2 block
    for side, stride, rows, cols in (((1, 1), 1, (1, 2), (1, 2)), ((2, 2), 2, (1, 3), (1, 3)),
                                     ((2, 2), 1, (0, 3), (0, 3)), ((1, 2), 1, (1, 2), (0, 3))):
        select, _, used = small_map._tap_selection(*side, (3, 3), (stride,) * 2, (1, 1),
                                                   torch.device("cpu"), torch.float32)
        assert used == (slice(*rows), slice(*cols))
        assert select.shape[1] == (rows[1] - rows[0]) * (cols[1] - cols[0])
        assert select.sum(1).max() == 1  # each pair of positions joined by one tap at most


@pytest.mark.parametrize("why", ["large map", "eval", "groups", "dilation", "circular"])
def test_everything_else_is_the_layer_itself(why):
    dilation = 2 if why == "dilation" else 1
    conv = nn.Conv2d(4, 4, 3, padding=dilation, groups=2 if why == "groups" else 1,
                     dilation=dilation,
                     padding_mode="circular" if why == "circular" else "zeros")
    conv.train(why != "eval")
    calls = []
    conv.register_forward_hook(lambda *_: calls.append(1))
    side = 3 if why == "large map" else 1
    conv_forward(conv, torch.randn(2, 4, side, side))
    assert calls == [1]  # it ran as a module: hooks fired


def test_a_map_too_small_for_the_kernel_is_refused_as_nn_conv2d_refuses_it():
    conv = nn.Conv2d(3, 3, 3, padding=0)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        conv_forward(conv, torch.randn(1, 3, 1, 1))


def test_d2l_resnet18_on_28x28_trains_through_it_and_still_traces_and_folds(monkeypatch):
    torch.manual_seed(0)
    net = reslab.create_model("d2l_resnet18", num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 28, 28)
    dense_calls = []
    real = small_map._tap_selection
    monkeypatch.setattr(small_map, "_tap_selection",
                        lambda *a: dense_calls.append(a[:2]) or real(*a))
    net(x).sum().backward()
    # layer3 at 2x2 (3 convs) and layer4: its stride-2 conv from 2x2, then 3 convs at 1x1
    assert sorted(dense_calls) == [(1, 1)] * 3 + [(2, 2)] * 4
    # torch.fx still sees every conv as a module (BN folding for inference depends on it)
    traced = fx.symbolic_trace(net)
    assert sum(n.op == "call_module" and n.target.endswith(("conv1", "conv2"))
               for n in traced.graph.nodes) == 17
    fast = InferenceModel(net, precision="fp32")
    assert fast.fused
    with torch.no_grad():
        expected = net.eval()(x)
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)


def test_torch_compile_traces_it_without_a_graph_break():
    # a data-dependent shape here broke the graph at every residual unit, and the pieces
    # recompiled per shape until dynamo gave up (slower than eager); fullgraph raises on one
    torch._dynamo.reset()
    conv = nn.Conv2d(8, 8, 3, 1, 1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 2, 2).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(conv_forward, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(conv, x), conv(x))
