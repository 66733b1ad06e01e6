"""InferenceModel: the same predictions as the eval-mode model, with BN folded into convs."""

import pytest
import torch
from torch import nn

from reslab import create_model
from reslab.inference import InferenceModel


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "preact_resnet18", "resnext50_32x4d"])
def test_fp32_inference_matches_the_eval_model_with_every_bn_folded(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    for module in model.modules():  # non-trivial statistics, so that folding them matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    fast = InferenceModel(model, precision="fp32")
    got = fast(x)
    assert got.dtype == torch.float32 and got.shape == (3, 10)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # pre-activation units keep the BNs that no conv feeds (they follow an addition)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in fast.net.modules())
    assert (bns == 0) == (name != "preact_resnet18")
    # the model given is untouched, still trainable
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_bf16_inference_is_close_and_returns_fp32():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    got = InferenceModel(model, precision="bf16")(x)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_a_model_fx_cannot_trace_runs_unfused():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x)).mean((2, 3))

    model = DataDependent().eval()
    fast = InferenceModel(model, precision="fp32")
    assert not fast.fused
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))


@pytest.mark.slow
def test_a_compiled_model_gives_the_eager_answers():
    torch.manual_seed(0)
    model = create_model("resnet14", num_classes=10, in_channels=1).eval()
    x = torch.randn(4, 1, 28, 28)
    eager = InferenceModel(model, precision="fp32")
    compiled = InferenceModel(model, precision="fp32", compile=True)
    assert compiled.compiled and not eager.compiled
    torch.testing.assert_close(compiled(x), eager(x), atol=1e-4, rtol=1e-4)
    # another batch size still answers (recompiled), and the model given is untouched
    torch.testing.assert_close(compiled(x[:1]), eager(x[:1]), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
