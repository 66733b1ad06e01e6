import os
import pickle

import pytest
import torch

import reslab
from reslab.errors import WeightsError
from reslab.models import load_weights, read_metadata, save_weights


@pytest.fixture
def resnet18_file(tmp_path):
    torch.manual_seed(0)
    model = reslab.create_model("resnet18").eval()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_safetensors_round_trip_with_metadata(tmp_path):
    model = reslab.create_model("resnet20")
    path = save_weights(model, tmp_path / "w.safetensors", {"epoch": 3, "classes": ["a", "b"]})
    assert read_metadata(path) == {"epoch": 3, "classes": ["a", "b"]}
    fresh = reslab.create_model("resnet20")
    report = load_weights(fresh, path)
    assert report.dropped == [] and report.adapted == []
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(outputs(model, x), outputs(fresh, x))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_channels_last_weights_save(tmp_path):
    model = reslab.create_model("resnet20").to(memory_format=torch.channels_last)
    path = save_weights(model, tmp_path / "w.safetensors")
    assert torch.equal(reslab.models.weights.read_state_dict(path)["conv1.weight"],
                       model.conv1.weight.detach().contiguous())


def test_torchvision_pth_with_module_prefix_and_wrapper_loads(resnet18_file, tmp_path):
    model, _ = resnet18_file
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    path = tmp_path / "ddp.pth"
    torch.save(wrapped, path)
    fresh = reslab.create_model("resnet18", weights=path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(outputs(model, x), outputs(fresh, x))


def test_fine_tuning_swaps_the_head_and_says_so(resnet18_file):
    model, path = resnet18_file
    fresh = reslab.create_model("resnet18", num_classes=10)
    report = load_weights(fresh, path)
    assert report.dropped == ["fc.weight", "fc.bias"]
    assert "dropped fc.weight, fc.bias" in str(report)
    assert fresh.fc.weight.shape == (10, 512)
    torch.testing.assert_close(fresh.layer4[1].conv2.weight, model.layer4[1].conv2.weight)
    x = torch.randn(1, 3, 64, 64)
    assert outputs(fresh, x).shape == (1, 10) and not model.training
    torch.testing.assert_close(
        fresh.forward_head(fresh.forward_features(x), pre_logits=True),
        model.forward_head(model.forward_features(x), pre_logits=True),
    )


def test_rgb_weights_adapted_to_grey_give_the_same_output_on_grey_images(resnet18_file):
    model, path = resnet18_file
    grey = reslab.create_model("resnet18", in_channels=1)
    report = load_weights(grey, path)
    assert report.adapted == ["conv1.weight"]
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(outputs(grey, x), outputs(model, x.repeat(1, 3, 1, 1)),
                               rtol=1e-4, atol=1e-4)


def test_grey_weights_adapted_to_rgb_by_repeating(tmp_path):
    grey = reslab.create_model("d2l_resnet18")
    path = save_weights(grey, tmp_path / "grey.safetensors")
    rgb = reslab.create_model("d2l_resnet18", in_channels=3, weights=path)
    x = torch.rand(2, 1, 96, 96)
    torch.testing.assert_close(outputs(rgb, x.repeat(1, 3, 1, 1)), outputs(grey, x),
                               rtol=1e-4, atol=1e-4)


def test_weights_for_another_architecture_name_the_mismatch(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(WeightsError, match=r"missing: layer1\.2\..*another architecture"):
        reslab.create_model("resnet34", weights=path)
    with pytest.raises(WeightsError, match="wrong shape"):
        reslab.create_model("resnet50", weights=path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": torch.zeros(1), "x": _Exploit()}, f)
    torch.save({"payload": _Exploit()}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(WeightsError, match="refusing to load"):
            reslab.create_model("resnet18", weights=p)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_truncated_or_tampered_files_are_typed_errors(tmp_path):
    model = reslab.create_model("resnet20")
    good = save_weights(model, tmp_path / "w.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    pth = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(pth[: len(pth) // 3])
    for name in ("cut.safetensors", "garbage.safetensors", "cut.pth"):
        with pytest.raises(WeightsError, match=name):
            load_weights(reslab.create_model("resnet20"), tmp_path / name)
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights(model, tmp_path / "absent.pth")


def test_a_file_without_a_state_dict_is_refused(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(WeightsError, match="holds no state dict"):
        load_weights(reslab.create_model("resnet20"), tmp_path / "meta.pt")
