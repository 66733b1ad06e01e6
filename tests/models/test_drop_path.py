"""Stochastic depth: off by default, linear in the unit index as timm sets it, identity in
evaluation, and in training a whole branch per sample dropped, the rest scaled up."""

import pytest
import torch

import reslab
from reslab.errors import SpecError
from reslab.models.layers import DropPath


def test_off_by_default():
    model = reslab.create_model("resnet50")
    assert model.spec.drop_path_rate == 0
    assert not any(isinstance(m, DropPath) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "preact_resnet18", "resnetv2_50"])
def test_rate_rises_linearly_from_zero_to_the_spec_rate(name):
    with torch.device("meta"):
        model = reslab.create_model(name, drop_path_rate=0.2)
    rates = [0.0 if u.drop_path is None else u.drop_path.rate for u in model.units()]
    n = len(rates)
    assert rates == pytest.approx([0.2 * i / (n - 1) for i in range(n)])


def test_identity_in_eval_mode():
    torch.manual_seed(0)
    dropping = reslab.create_model("resnet18", drop_path_rate=0.5).eval()
    reference = reslab.create_model("resnet18").eval()
    reference.load_state_dict(dropping.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dropping(x), reference(x), rtol=0, atol=0)


def test_training_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    y = drop(torch.ones(4000, 3, 2, 2))
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    assert float((per_sample[:, 0] == 0).float().mean()) == pytest.approx(0.25, abs=0.03)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.05)


def test_training_with_drop_path_differs_between_calls_and_learns():
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", drop_path_rate=0.5).train()
    x = torch.randn(8, 3, 32, 32)
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)
    a.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_rates_are_refused():
    with pytest.raises(SpecError, match=r"drop_path_rate must be a number in \[0, 1\)"):
        reslab.get_spec("resnet18", drop_path_rate=1.0)
    with pytest.raises(SpecError, match="shortcut='none'"):
        reslab.get_spec("plain18", drop_path_rate=0.1)
