"""reslab's tools on timm's variants: BN folding for inference, ONNX export, grow. Each
model's own spec at a quarter of the width and one unit per stage, so every layer kind it
has is there and each case takes a fraction of a second."""

import warnings

import pytest
import torch
from torch import nn

import reslab
from reslab.inference import InferenceModel
from reslab.models import grow

NAMES = ["resnet26t", "resnet50d", "seresnext50_32x4d", "ecaresnet50d", "resnetaa50d",
         "resnetblur50", "resnetrs50", "resnet50_gn", "resnetv2_50d"]


def small(name: str) -> nn.Module:
    torch.manual_seed(0)
    spec = reslab.get_spec(name).replace(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128),
                                         stem_width=32, num_classes=10)
    model = reslab.build(spec)
    for m in model.modules():  # non-trivial statistics and scales, so that folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_inference_model_folds_every_bn_a_conv_feeds(name):
    model = small(name)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = model(x)
        fast = InferenceModel(model, precision="fp32", channels_last=False)
        torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=1e-4)
    left = [m for m in fast.net.modules() if isinstance(m, nn.BatchNorm2d)]
    # only ResNetV2's pre-activation norms (after an addition or the input) stay
    assert (not left) == (name != "resnetv2_50d")


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_gives_the_same_outputs(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = small(name)
    x = torch.randn(2, 3, 48, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17,
                          input_names=["images"], dynamic_axes={"images": {0: "batch"}})
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    check = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        expected = model(check).numpy()
    got = session.run(None, {"images": check.numpy()})[0]
    assert abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_grow_keeps_the_function(name):
    model = small(name)
    grown = grow(model, stage=2, blocks=1)
    assert len(grown.stage_units()[1]) == 2 and grown.spec.depths == (1, 2, 1, 1)
    assert type(grown.stage_units()[1][1]) is type(grown.stage_units()[1][0])
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x))
    # the grown spec rebuilds the grown tree, key for key
    rebuilt = reslab.build(grown.spec)
    assert list(rebuilt.state_dict()) == list(grown.state_dict())
