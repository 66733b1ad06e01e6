"""A learning rate that makes training blow up stops the run with one line, keeping the last
good checkpoint: one whose weights are all finite, that loads and resumes."""

import re

import pytest
import torch

from reslab.cli import main
from reslab.runtime.checkpoint import load_checkpoint


def _finite(weights) -> bool:
    return all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.parametrize("lr", ["1e30", "1e38"])  # the loss goes non-finite; the weights do
def test_divergence_stops_with_a_message_and_keeps_a_finite_checkpoint(lr, image_folder,
                                                                      tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
                 "--image-size", "16", "--channels", "1", "--epochs", "2",
                 "--train-subset", "96", "--batch-size", "32", "--val-size", "40",
                 "--schedule", "constant", "--warmup-epochs", "0", "--label-smoothing", "0",
                 "--lr", lr, "--checkpoint-every", "1", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and err.count("\n") == 1, err
    match = re.search(r"reslab: error: the (loss|weights) became (nan|inf|-inf) at step (\d+) "
                      r"\(epoch 1\): training diverged; try --lr "
                      + re.escape(f"{float(lr) / 2:g} (now {float(lr):g})")
                      + r"( or --precision fp32 \(now bf16\))?\. The last good checkpoint is "
                      r"kept", err)
    assert match, err
    failed_step = int(match[3])
    last = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert _finite(last.weights)
    assert last.meta.step == failed_step - 1  # the step before the blow-up
    assert not (out / "results.json").exists()
    assert not list((out / "checkpoints").glob(".*.part"))


def test_weights_made_non_finite_by_a_step_are_never_checkpointed(image_folder, tmp_path,
                                                                  capsys, monkeypatch):
    """The loss shows a blow-up only one step later: the checkpoint of that step is refused."""
    original_step = torch.optim.SGD.step
    steps = []

    def step_that_blows_up_at_3(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", step_that_blows_up_at_3)
    out = tmp_path / "run"
    code = main(["train", "--model", "resnet14", "--data", f"folder:{image_folder}",
                 "--image-size", "16", "--channels", "1", "--epochs", "1",
                 "--train-subset", "160", "--batch-size", "32", "--val-size", "40",
                 "--checkpoint-every", "1", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "the weights became inf at step 3 (epoch 1): training diverged" in err, err
    last = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert last.meta.step == 2 and _finite(last.weights)
