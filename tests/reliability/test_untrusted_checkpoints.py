"""Untrusted weights and checkpoints: pickles that would run code, tampered safetensors, weights
for another network, hostile metadata. Each is refused with a typed, one-line error that
names the file and what is wrong, and nothing in it ever runs."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import torch

import reslab
from reslab.cli import main
from reslab.errors import WeightsError
from reslab.models import ResNetSpec
from reslab.models.weights import load_weights, read_state_dict, save_weights
from reslab.runtime.checkpoint import load_checkpoint, model_from_checkpoint

from . import hostile

TINY = hostile.TINY

LOADERS = {
    "read_state_dict": read_state_dict,
    "load_weights": lambda path: load_weights(reslab.build(TINY), path),
    "create_model": lambda path: reslab.create_model("resnet20", weights=path),
    "load_checkpoint": load_checkpoint,
    "model_from_checkpoint": model_from_checkpoint,
}


def refused(call, path) -> str:
    """The message of the WeightsError ``call(path)`` raises: one line naming ``path``."""
    with pytest.raises(WeightsError) as failure:
        call(path)
    message = str(failure.value)
    assert str(path) in message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A valid tiny checkpoint with training state, as last.safetensors is written."""
    return hostile.write_checkpoint(tmp_path_factory.mktemp("good") / "last.safetensors",
                                    train_state=True)


# --- pickles that would run code ------------------------------------------------------------

EXPLOITS = sorted(hostile.exploits(Path("unused")))


def test_the_exploit_pickles_do_run_code_when_unpickled_naively(tmp_path):
    """The control: each payload is live, so the refusals below are worth something."""
    marker = tmp_path / "ran"
    for name, data in hostile.exploits(marker).items():
        if name.startswith("raw-pickle"):
            pickle.loads(data)
        else:
            torch.load(io.BytesIO(data), weights_only=False)
        assert marker.exists(), name
        marker.unlink()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", EXPLOITS)
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(name, loader, tmp_path):
    marker = tmp_path / "pwned"
    data = hostile.exploits(marker)[name]
    for path in (tmp_path / name, tmp_path / "disguised.safetensors"):
        path.write_bytes(data)
        message = refused(LOADERS[loader], path)
        if loader in ("load_checkpoint", "model_from_checkpoint") and path.suffix != ".safetensors":
            assert "not a reslab checkpoint (.safetensors expected)" in message
        elif path.suffix == ".safetensors":
            assert "not a valid safetensors file" in message or "not a readable" in message
        else:  # torch.load(weights_only=True) met the payload's global and stopped there
            assert "refusing to load" in message and "could run code (" in message
            assert "GLOBAL" in message or "Unsupported operand" in message
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
@pytest.mark.parametrize("name", ["torch-save-os-system.pt", "raw-pickle-exec.ckpt"])
def test_the_cli_refuses_an_exploit_checkpoint_with_one_line(command, name, tmp_path, capsys):
    marker = tmp_path / "pwned"
    data = hostile.exploits(marker)[name]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.safetensors").write_bytes(data)  # a run directory, poisoned
    (tmp_path / name).write_bytes(data)
    image = tmp_path / "x.png"
    image.write_bytes(hostile.png_claiming(16, 16, rows=16))
    extra = {"eval": [], "predict": [str(image)], "export": ["--onnx", str(tmp_path / "m.onnx")]}
    for target, path in ((tmp_path / name, tmp_path / name),
                         (run, run / "checkpoints" / "best.safetensors")):
        assert main([command, str(target), *extra[command]]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("reslab: error: ") and captured.err.count("\n") == 1
        assert str(path) in captured.err and "Traceback" not in captured.err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


# --- tampered safetensors -------------------------------------------------------------------

def _tamper(data: bytes, case: str) -> bytes:
    header, body = hostile.safetensors_parts(data)
    key = "conv1.weight"  # [8, 1, 3, 3] float32, 288 bytes
    start, end = header[key]["data_offsets"]
    length = len(data) - len(body) - 8
    if case == "truncated in the length field":
        return data[:5]
    if case == "truncated in the header":
        return data[:8 + length // 2]
    if case == "truncated in the data":
        return data[:len(data) - len(body) // 2]
    if case == "one byte short":
        return data[:-1]
    if case == "header bytes flipped":
        return data[:8] + bytes(b ^ 0x5A for b in data[8:40]) + data[40:]
    if case == "header length 2**63":
        return (2**63).to_bytes(8, "little") + data[8:]
    if case == "header length 100 GB":
        return (100 << 30).to_bytes(8, "little") + data[8:]
    if case == "header length past the end":
        return (len(data)).to_bytes(8, "little") + data[8:]
    if case == "header length short":
        return (length - 1).to_bytes(8, "little") + data[8:]
    entry = header[key]
    if case == "offsets past the end":
        entry["data_offsets"] = [len(body) - 4, len(body) + 284]
    elif case == "offsets of 10**12":
        entry["data_offsets"] = [start, start + 10**12]
    elif case == "offsets reversed":
        entry["data_offsets"] = [end, start]
    elif case == "tensors overlap":
        fc_start = header["fc.weight"]["data_offsets"][0]
        entry["data_offsets"] = [fc_start, fc_start + end - start]
    elif case == "shape of a terabyte":
        entry["shape"] = [10**6, 10**6]
    elif case == "shape disagrees with its bytes":
        entry["shape"] = [8, 1, 3, 4]
    elif case == "dtype F64 (twice the bytes)":
        entry["dtype"] = "F64"
    elif case == "dtype unknown":
        entry["dtype"] = "Q99"
    elif case == "header not JSON":
        return data[:8] + b"[" * length + data[8 + length:]
    return hostile.safetensors_join(header, body)


TAMPERED = {  # case: why safetensors refuses it (the message carries it)
    "truncated in the length field": "header too small",
    "truncated in the header": "invalid header length",
    "truncated in the data": "incomplete metadata, file not fully covered",
    "one byte short": "incomplete metadata, file not fully covered",
    "header bytes flipped": "invalid JSON in header",
    "header length 2**63": "header too large",
    "header length 100 GB": "header too large",
    "header length past the end": "invalid header length",
    "header length short": "incomplete metadata, file not fully covered",
    "offsets past the end": "invalid offset for tensor `fc.bias`",
    "offsets of 10**12": "invalid shape, data type, or offset for tensor",
    "offsets reversed": "invalid offset for tensor `conv1.weight`",
    "tensors overlap": "invalid offset for tensor `fc.bias`",
    "shape of a terabyte": "invalid shape, data type, or offset for tensor",
    "shape disagrees with its bytes": "invalid shape, data type, or offset for tensor",
    "dtype F64 (twice the bytes)": "invalid shape, data type, or offset for tensor",
    "dtype unknown": "unknown variant `Q99`",
    "header not JSON": "invalid JSON in header",
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_safetensors_file_is_refused_by_every_loader(case, good, tmp_path):
    path = tmp_path / "tampered.safetensors"
    path.write_bytes(_tamper(good.read_bytes(), case))
    for name in ("read_state_dict", "load_weights", "load_checkpoint", "model_from_checkpoint"):
        message = refused(LOADERS[name], path)
        assert "safetensors file (Error while deserializing header: " in message, message
        assert TAMPERED[case] in message, message


def test_a_dtype_changed_to_one_of_the_same_size_is_named(good, tmp_path):
    """F32 -> I32 keeps every offset valid, so only the model can tell: the key is named."""
    header, body = hostile.safetensors_parts(good.read_bytes())
    header["conv1.weight"]["dtype"] = "I32"
    path = tmp_path / "retyped.safetensors"
    path.write_bytes(hostile.safetensors_join(header, body))
    assert read_state_dict(path)["conv1.weight"].dtype == torch.int32  # a valid file
    for name in ("load_weights", "model_from_checkpoint"):
        message = refused(LOADERS[name], path)
        assert "1 wrong dtype: conv1.weight (file torch.int32, model torch.float32)" in message


def test_a_huge_claim_is_refused_before_allocating(good, tmp_path):
    """In a child whose memory may grow only 256 MiB: claims of terabytes, and a header
    describing a 10 GB network, each end in WeightsError, not MemoryError (nor a swap storm)."""
    data = good.read_bytes()
    paths = {}
    for case in ("header length 2**63", "header length 100 GB", "offsets of 10**12",
                 "shape of a terabyte"):
        paths[case] = tmp_path / f"{case.replace(' ', '_').replace('*', '')}.safetensors"
        paths[case].write_bytes(_tamper(data, case))
    wide = ResNetSpec(**{**TINY.to_dict(), "widths": (8, 16384)})  # 2.4 G parameters
    paths["a 10 GB network"] = tmp_path / "wide.safetensors"
    save_weights(reslab.build(TINY), paths["a 10 GB network"], hostile.checkpoint_metadata(wide))
    calls = "\n".join(
        f"attempt({case!r} + ' ' + {fn!r}, lambda: reslab.runtime.checkpoint.{fn}({str(p)!r}))"
        for case, p in paths.items() for fn in ("load_checkpoint", "model_from_checkpoint"))
    results = hostile.run_capped(calls)
    assert results.pop("control") == "MemoryError"
    assert results.pop("peak_rss_mib") < 1024
    assert results.pop("a 10 GB network load_checkpoint") == ["ok", ""]  # its tensors are fine
    assert len(results) == 2 * len(paths) - 1
    for case, (kind, message) in results.items():
        assert kind == "WeightsError", (case, kind, message)
    wide_message = results["a 10 GB network model_from_checkpoint"][1]
    # refused from the spec alone, before anything is built
    assert "at least 2,417,263,744 parameters but the file holds 5,272 numbers" in wide_message


# --- weights for another network, wrong shapes, hostile metadata ---------------------------

def test_weights_of_another_depth_name_the_missing_keys(tmp_path):
    path = save_weights(reslab.create_model("resnet20"), tmp_path / "resnet20.safetensors")
    message = refused(lambda p: reslab.create_model("resnet32", weights=p), path)
    assert "missing: layer1.3.conv1.weight" in message and "another architecture" in message
    message = refused(lambda p: load_weights(reslab.build(TINY), p), path)
    assert "6 missing: layer2.0.downsample.0.weight" in message
    assert "84 unexpected: layer1.1.bn1.num_batches_tracked" in message
    assert "25 wrong shape: bn1.bias (file [16], model [8])" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"depths": (1, 2)}, "12 missing: layer2.1.conv1.weight, layer2.1.bn1.weight"),
    ({"depths": (1,), "widths": (8,)}, "18 unexpected: layer2.0.bn1.num_batches_tracked, "
     "layer2.0.bn2.num_batches_tracked, layer2.0.downsample.1.num_batches_tracked and 15 more; "
     "1 wrong shape: fc.weight (file [10, 16], model [10, 8])"),
    ({"widths": (8, 32)}, "wrong shape: fc.weight (file [10, 16], model [10, 32])"),
    ({"in_channels": 3}, "1 wrong shape: conv1.weight (file [8, 1, 3, 3], model [8, 3, 3, 3])"),
    ({"block": "bottleneck"}, "missing: layer1.0.conv3.weight"),
])
def test_a_checkpoint_whose_spec_disagrees_with_its_tensors_names_the_keys(change, expected,
                                                                          tmp_path):
    claimed = ResNetSpec(**{**TINY.to_dict(), **change})
    path = hostile.write_checkpoint(tmp_path / "lying.safetensors",
                                    weights=reslab.build(TINY).state_dict(),
                                    spec=claimed.to_dict())
    message = refused(model_from_checkpoint, path)
    assert "weights do not match the model its metadata describes" in message
    assert expected in message, message


def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(tmp_path):
    weights = reslab.build(TINY).state_dict()
    weights["layer1.0.conv2.weight"] = torch.zeros(8, 8, 5, 5)
    path = hostile.write_checkpoint(tmp_path / "reshaped.safetensors", weights=weights)
    expected = "1 wrong shape: layer1.0.conv2.weight (file [8, 8, 5, 5], model [8, 8, 3, 3])"
    assert expected in refused(model_from_checkpoint, path)
    assert expected in refused(LOADERS["load_weights"], path)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"classes": None}, "metadata field 'classes' is None, expected a list of class names"),
    ({"classes": ["a", "b"]}, "metadata names 2 classes but the model has 10 outputs"),
    ({"input_size": "big"}, "'input_size' is 'big', expected [channels, height, width]"),
    ({"input_size": [1, -16, 16]}, "expected [channels, height, width]"),
    ({"input_size": []}, "metadata field 'input_size' is [], expected [channels, height, width]"),
    ({"input_size": [1.5, 16, 16]}, "'input_size' is [1.5, 16, 16], expected [channels,"),
    ({"mean": [float("nan")]}, "metadata field 'mean' is [nan], expected 1 numbers"),
    ({"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.2] * 3},
     "metadata input_size [3, 16, 16] does not fit the model (Invalid channel dimensions)"),
    ({"std": [0.0]}, "metadata field 'std' is [0.0], expected 1 positive numbers"),
    ({"mean": [0.5, 0.5, 0.5]}, "metadata field 'mean' is [0.5, 0.5, 0.5], expected 1 numbers"),
    ({"spec": ["not", "a", "spec"]}, "field 'spec' is ['not', 'a', 'spec'], expected a ResNetSpec"),
    ({"spec": {"widths": "wide"}}, "describes no model reslab can build (widths must be"),
    ({"spec": {"colour": "red"}}, "unknown ResNetSpec fields ['colour']"),
    ({"spec": None, "model": "resnet404"}, "unknown model 'resnet404'"),
    ({"spec": None, "num_classes": "ten"}, "'num_classes' is 'ten', expected a positive integer"),
    ({"config": [1, 2]}, "metadata field 'config' is [1, 2], expected a JSON object"),
])
def test_hostile_metadata_is_refused_naming_the_field(changes, expected, tmp_path):
    path = hostile.write_checkpoint(tmp_path / "edited.safetensors", **changes)
    assert expected in refused(model_from_checkpoint, path)


def test_an_input_size_the_network_cannot_take_is_refused(tmp_path):
    path = tmp_path / "lenet.safetensors"
    meta = hostile.checkpoint_metadata(model="lenet_bn", spec=None, input_size=[1, 16, 16])
    save_weights(reslab.create_model("lenet_bn"), path, meta)
    assert "metadata input_size [1, 16, 16] does not fit the model (" in refused(
        model_from_checkpoint, path)
    save_weights(reslab.create_model("lenet_bn"), path, meta | {"input_size": [1, 28, 28]})
    model, _ = model_from_checkpoint(path)  # its natural size
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("header", ["[1, 2]", '"a string"', "[" * 100_000, "{not json"])
def test_a_metadata_header_that_is_no_json_object_is_refused(header, tmp_path):
    import safetensors.torch

    path = tmp_path / "odd-header.safetensors"
    path.write_bytes(safetensors.torch.save({"w": torch.zeros(2)}, metadata={"reslab": header}))
    for name in ("load_checkpoint", "model_from_checkpoint"):
        assert "corrupt reslab metadata header" in refused(LOADERS[name], path)


@pytest.mark.parametrize("train_state", [
    {"__dict__": 5}, {"__dict__": [[1, 2, 3]]}, {"__dict__": [[["a"], 1]]},
    {"__tensor__": ["not", "a", "key"]}, {"__tensor__": "_train/absent"},
])
def test_a_damaged_training_state_is_refused(train_state, good, tmp_path):
    header, body = hostile.safetensors_parts(good.read_bytes())
    meta = json.loads(header["__metadata__"]["reslab"]) | {"train_state": train_state}
    header["__metadata__"]["reslab"] = json.dumps(meta)
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(hostile.safetensors_join(header, body))
    message = refused(load_checkpoint, path)
    assert "training state is damaged" in message or "missing the tensor" in message
