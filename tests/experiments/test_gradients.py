import math

import torch

from reslab.experiments import gradients, run
from reslab.experiments.common import cifar_spec
from reslab.experiments.gradients import layer_gradient_norms, weighted_layers
from reslab.models import build

from .conftest import check_figure, check_report


def test_gradient_norms_are_those_autograd_gives(small_data):
    torch.manual_seed(0)
    model = build(cifar_spec(8, small_data, width=4))
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    norms = layer_gradient_norms(model, [(x, y)])
    layers = weighted_layers(model)
    assert [n for n, _ in layers][0] == "conv1" and layers[-1][0] == "fc"
    assert len(norms) == len(layers) == model.spec.depth == 8
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = [float(m.weight.grad.norm()) for _, m in layers]
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(norms, expected, strict=True))


def test_gradients_report(tmp_path, small_data, monkeypatch, figures):
    import reslab.training.loop as loop

    steps, real_step = [], loop.train_step

    def counted(state, x, y):  # the engine's own step, and nothing else, trains the nets
        steps.append(state.config.model)
        return real_step(state, x, y)

    monkeypatch.setattr(loop, "train_step", counted)
    out = tmp_path / "gradients"
    results = run("gradients", out, quick=True, data=small_data, depths=(8, 14), steps=3,
                  batch_size=32, measure_batches=2, width=4, quiet=True)
    check_report(out, results)
    for figure in figures.values():
        check_figure(figure, "gradient norm ||dL/dW|| (validation batches")
    assert "raw (no label smoothing)" in results["table"]
    assert steps == [net for net in ("plain8", "resnet8", "plain14", "resnet14")
                     for _ in range(3)]
    assert results["figures"] == ["gradients-8.png", "gradients-14.png"]
    assert [(r["net"], r["depth"]) for r in results["rows"]] == [
        ("plain8", 8), ("resnet8", 8), ("plain14", 14), ("resnet14", 14)]
    # one row per weighted layer of each net: its depth as the papers count it
    for row in results["rows"]:
        layers = [r for r in results["layers"] if r["net"] == row["net"]]
        assert len(layers) == row["depth"]
        assert [r["index"] for r in layers] == list(range(1, row["depth"] + 1))
        assert layers[0]["layer"] == "conv1" and layers[-1]["layer"] == "fc"
        assert all(r["init"] > 0 and r["trained"] > 0 for r in layers)
        assert row["ratio_init"] == layers[0]["init"] / layers[-2]["init"]
    by = {r["net"]: r for r in results["rows"]}
    # plain and residual nets start from the same weights, so their losses start close
    assert abs(by["plain14"]["loss_start"] - by["resnet14"]["loss_start"]) < 2
    assert "| 14    | resnet14 |" in results["table"]
    # the runs went through the engine: each left a run directory of 3 steps
    assert [r["steps"] for r in results["runs"]] == [3, 3, 3, 3]
    assert (out / "runs" / "resnet14" / "checkpoints" / "last.safetensors").is_file()


def test_findings_read_the_ratios():
    def row(net, depth, plain, ratio, loss, trained=1.0):
        return {"net": net, "depth": depth, "plain": plain, "ratio_init": ratio,
                "ratio_trained": trained, "loss_end": loss}

    vanishing = gradients.findings([row("plain20", 20, True, 0.5, 1.0),
                                    row("resnet20", 20, False, 0.9, 0.8),
                                    row("plain56", 56, True, 0.01, 1.5, trained=1e-6),
                                    row("resnet56", 56, False, 0.8, 0.7, trained=0.5)], 100)
    assert "0.01x the last layer's in plain56 and 0.8x in resnet56" in vanishing[0]
    assert "fades" in vanishing[0] and "only from 0.9 to 0.8" in vanishing[1]
    assert "After 100 steps the ratio is 1e-06 in plain56 and 0.5 in resnet56: now the " \
        "gradient fades on its way back through plain56" in vanishing[2]
    assert "learns faster" in vanishing[2]
    exploding = gradients.findings([row("plain56", 56, True, 300.0, 1.0),
                                    row("resnet56", 56, False, 5.0, 1.2)], 10)
    assert "grows" in exploding[0] and "not slower" in exploding[1]
    assert "fades" not in exploding[1]
    even = gradients.findings([row("plain56", 56, True, 1.1, 1.0),
                               row("resnet56", 56, False, 3.0, 1.2)], 10)
    assert "did not keep the gradient more even" in even[0]
