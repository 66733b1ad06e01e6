"""The checkpoint's metadata record: what a file holds comes back as it was written, older
layouts migrate, a newer reslab's keys are kept, bad values are refused with one line, and
a checkpoint is read from one opening of its file."""

import dataclasses
from pathlib import Path

import pytest
import torch

import reslab.models.weights
from reslab.errors import WeightsError
from reslab.models import ResNetSpec, build, read_metadata
from reslab.runtime.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from reslab.runtime.checkpoint_meta import CHECKPOINT_FORMAT, VERSION, CheckpointMeta, run_metadata
from reslab.training import TrainConfig

TINY = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 1), widths=(8, 16), in_channels=1,
                  num_classes=10, input_size=16)  # the fixture run's network
RUN = Path(__file__).parent / "fixtures" / "checkpoints" / "run" / "checkpoints"


def _header(name: str = "last") -> dict:
    header = read_metadata(RUN / f"{name}.safetensors")
    header.pop("train_state", None)
    return header


def test_a_written_header_comes_back_key_for_key():
    header = _header()
    meta = CheckpointMeta.from_dict(header)
    assert meta.to_dict() == header  # today's layout is version 1's: nothing added or lost
    assert (meta.version, meta.model, meta.classes[0], meta.input_size) == \
        (1, "fast_resnet10", "class0", (1, 16, 16))
    assert (meta.epoch, meta.step, meta.metrics["epoch"]) == (3, 30, 3)
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta


def test_a_header_without_a_format_is_version_1():
    header = {k: v for k, v in _header("best").items() if k != "format"}
    meta = CheckpointMeta.from_dict(header)
    assert meta.version == 1 and meta == CheckpointMeta.from_dict(_header("best"))
    assert meta.to_dict() == header | {"format": CHECKPOINT_FORMAT}


def test_a_zoo_model_without_a_spec_round_trips():
    header = {"model": "lenet_bn", "spec": None, "num_classes": 10, "in_channels": 1,
              "classes": [str(i) for i in range(10)], "input_size": [1, 28, 28],
              "mean": [0.5], "std": [0.25]}
    meta = CheckpointMeta.from_dict(header)
    assert meta.spec is None and (meta.num_classes, meta.in_channels) == (10, 1)
    assert meta.tta_flip is False and meta.tta_shift == 0
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta


def test_a_newer_versions_keys_are_kept_and_written_back():
    header = _header("best") | {"format": f"reslab-checkpoint/{VERSION + 1}",
                                "calibration": {"temperature": 1.5}}
    meta = CheckpointMeta.from_dict(header)
    assert meta.extra == {"calibration": {"temperature": 1.5}}
    assert meta.version == VERSION + 1 and meta.to_dict() == header


def test_the_record_of_a_run_is_what_its_checkpoints_hold(tiny_data):
    config = TrainConfig(epochs=1, tta_flip=False)
    meta = run_metadata(build(TINY), config, tiny_data, (1, 16, 16))
    assert meta.spec == TINY.to_dict() and meta.classes == tiny_data.classes
    assert meta.config == config.to_dict() and meta.data_identity == tiny_data.identity
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta


@pytest.mark.parametrize(("change", "expected"), [
    ({"format": "v1"}, "metadata field 'format' is 'v1', expected 'reslab-checkpoint/<version>'"),
    ({"format": 1}, "metadata field 'format' is 1,"),
    ({"epoch": -1}, "metadata field 'epoch' is -1, expected a count"),
    ({"step": "12"}, "metadata field 'step' is '12', expected a count"),
    ({"step": True}, "metadata field 'step' is True, expected a count"),
    ({"metrics": [1]}, "metadata field 'metrics' is [1], expected a JSON object"),
    ({"source": 5}, "metadata field 'source' is 5, expected a name"),
    ({"classes": []}, "metadata field 'classes' is [], expected a list of class names"),
    ({"input_size": [1, 16]}, "metadata field 'input_size' is [1, 16]"),
    ({"tta_shift": 9}, "metadata field 'tta_shift' is 9"),
])
def test_a_bad_value_is_refused_with_one_line_naming_the_field(change, expected):
    with pytest.raises(WeightsError) as error:
        CheckpointMeta.from_dict(_header() | change, "edited.safetensors")
    message = str(error.value)
    assert message.startswith("edited.safetensors: ") and expected in message
    assert "\n" not in message


def test_a_header_without_reslab_metadata_is_refused():
    with pytest.raises(WeightsError, match="has no reslab metadata: load it with load_weights"):
        CheckpointMeta.from_dict({"format": "pt"}, "plain.safetensors")


def test_a_checkpoint_is_read_from_one_opening_of_its_file(monkeypatch):
    opened = []
    real = reslab.models.weights.safe_open
    monkeypatch.setattr(reslab.models.weights, "safe_open",
                        lambda *args, **kwargs: opened.append(args[0]) or real(*args, **kwargs))
    checkpoint = load_checkpoint(RUN / "last.safetensors")
    assert opened == [str(RUN / "last.safetensors")]
    assert checkpoint.meta.step == 30 and checkpoint.train_state["state"]["step"] == 30
    assert set(checkpoint.weights) == set(build(TINY).state_dict())


def test_a_written_record_is_read_back(tmp_path):
    meta = read_checkpoint_meta(RUN / "best.safetensors")
    weights = load_checkpoint(RUN / "best.safetensors").weights
    changed = dataclasses.replace(meta, epoch=7, extra={"note": "kept"})
    path = save_checkpoint(tmp_path / "again.safetensors", weights, changed)
    again = load_checkpoint(path)
    assert again.meta == changed and again.train_state is None
    assert all(torch.equal(again.weights[k], v) for k, v in weights.items())
