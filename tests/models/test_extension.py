"""Blocks open to extension: an attention module and a unit kind registered from outside
reslab are built by name, train, are counted, grow, fold their BNs and export to ONNX."""

import pytest
import torch
from torch import nn

import reslab
from reslab.errors import SpecError, WeightsError
from reslab.export import export_onnx
from reslab.inference import InferenceModel
from reslab.models import (
    FeatureNet,
    ResidualUnit,
    ResNetSpec,
    grow,
    register_attention,
    register_unit,
)
from reslab.models.summary import summary
from reslab.runtime.checkpoint import model_from_checkpoint, save_checkpoint


@register_attention("test_spatial_gate", replace=True)
class SpatialGate(nn.Module):
    """Not in reslab: a 1x1 conv over the channel mean and max gates each position."""

    def __init__(self, channels: int, ratio: float | None = None):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * self.conv(pooled).sigmoid()


class ScaledUnit(ResidualUnit):
    """Not in reslab: a residual unit whose branch is scaled by a learned per-channel gain."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1), 0.5))

    def forward(self, x):
        h = self._run(self.pre, x)
        shortcut = x if self.downsample is None else self.downsample(h)
        return self._run(self.post, self.gain * self._run(self.branch, h) + shortcut)


register_unit("test_scaled", ScaledUnit.from_spec, replace=True)

SMALL = dict(block="basic", depths=(1, 1, 1), widths=(8, 16, 32), stem="cifar", stem_width=8,
             num_classes=3, input_size=16)


def _sgd_step(model):
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    return loss


def test_a_registered_attention_builds_trains_counts_grows_and_exports(tmp_path):
    torch.manual_seed(0)
    spec = ResNetSpec(**SMALL, attention="test_spatial_gate")
    model = reslab.build(spec)
    gates = [m for m in model.modules() if isinstance(m, SpatialGate)]
    assert len(gates) == 3 and model.layer1[0].se is gates[0]
    before = gates[0].conv.weight.detach().clone()
    _sgd_step(model)
    assert not torch.equal(gates[0].conv.weight, before)  # the gate learns
    # counted by summary: each gate adds 2 + 1 parameters
    plain = summary(reslab.build(ResNetSpec(**SMALL)))
    assert summary(model).params == plain.params + 3 * 3
    # grown by identity units of the same kind: the function is kept
    model.eval()
    grown = grow(model, stage=2, blocks=2)
    assert isinstance(grown.layer2[-1].se, SpatialGate) and grown.spec.depths == (1, 3, 1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x))
        # BN folded into the convs for inference, same answers
        fast = InferenceModel(grown, precision="fp32", channels_last=False)
        assert fast.fused
        torch.testing.assert_close(fast(x), grown(x), rtol=1e-4, atol=1e-5)
    # written as a checkpoint whose spec names the gate, rebuilt by name and exported
    checkpoint = save_checkpoint(tmp_path / "gated.safetensors", grown.state_dict(), {
        "model": "gated", "classes": ["a", "b", "c"], "input_size": [3, 16, 16],
        "mean": [0.5] * 3, "std": [0.25] * 3, "spec": grown.spec.to_dict()})
    exported = export_onnx(checkpoint, tmp_path / "gated.onnx")
    assert exported["max_abs_diff"] < 1e-4


def test_a_registered_unit_kind_builds_trains_and_grows():
    torch.manual_seed(0)
    model = reslab.build(ResNetSpec(**SMALL, unit="test_scaled"))
    units = model.units()
    assert len(units) == 3 and all(isinstance(u, ScaledUnit) for u in units)
    assert "layer1.0.gain" in model.state_dict()
    _sgd_step(model)
    assert units[0].gain.grad is not None and summary(model).params > 0
    grown = grow(model.eval(), stage=1, blocks=1)
    assert isinstance(grown.layer1[-1], ScaledUnit)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x))


def test_names_are_checked_before_the_network_is_built(tmp_path):
    # the spec is plain data: a name registered later is still a spec, to_dict and back
    spec = ResNetSpec(**SMALL, norm="layernorm")
    assert ResNetSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="unknown norm 'layernorm'.*batchnorm, groupnorm"):
        reslab.build(spec)
    with pytest.raises(SpecError, match="unknown attention 'sse'.*did you mean se"):
        reslab.create_model("resnet18", attention="sse")
    with pytest.raises(SpecError, match="unknown unit 'bottle'"):
        FeatureNet(ResNetSpec(**SMALL, unit="bottle"))
    with pytest.raises(SpecError, match=r"unknown act \['relu'\]"):
        reslab.build(ResNetSpec(**SMALL, act=["relu"]))  # a JSON list is no name
    # a checkpoint naming one is refused, naming the file and the field, before it is built
    checkpoint = save_checkpoint(tmp_path / "ln.safetensors", reslab.build(ResNetSpec(
        **SMALL)).state_dict(), {"model": "ln", "classes": ["a", "b", "c"],
                                 "input_size": [3, 16, 16], "mean": [0.5] * 3,
                                 "std": [0.25] * 3, "spec": spec.to_dict()})
    with pytest.raises(WeightsError, match="describes no model.*unknown norm 'layernorm'"):
        model_from_checkpoint(checkpoint)


def test_a_spec_checks_what_needs_no_registry_when_it_is_made():
    with pytest.raises(SpecError, match="attention is None"):
        ResNetSpec(attention_ratio=0.25)
    with pytest.raises(SpecError, match="avg_down pools before a 1x1-conv shortcut"):
        ResNetSpec(avg_down=True, shortcut="pad", stem="cifar", widths=(64, 128, 256, 512))
    with pytest.raises(SpecError, match="use ordering='full_preact'"):
        ResNetSpec(naming="resnetv2")
    with pytest.raises(SpecError, match="already registered"):
        register_attention("se", SpatialGate)
    with pytest.raises(SpecError, match="identifier"):
        register_attention("my gate", SpatialGate)


def test_a_unit_kind_without_zero_init_last_is_refused_where_it_is_needed():
    class Bare(nn.Module):
        def __init__(self, spec, in_channels, width, stride, drop_path):
            super().__init__()
            self.out_channels = width * spec.expansion
            self.conv = nn.Conv2d(in_channels, self.out_channels, 3, stride, 1)

        def forward(self, x):
            return self.conv(x).relu()

    register_unit("test_bare", Bare, replace=True)
    model = reslab.build(ResNetSpec(**SMALL, unit="test_bare"))  # builds and runs
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)
    with pytest.raises(SpecError, match="Bare units have no zero_init_last"):
        reslab.build(ResNetSpec(**SMALL, unit="test_bare", zero_init_residual=True))
