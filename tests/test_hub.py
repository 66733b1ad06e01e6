"""Model folders (config.json + model.safetensors + README.md) written for timm and read back,
reslab's own and those in the layout timm's save_for_hf writes."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from reslab.cli import main
from reslab.deploy import predict_files
from reslab.errors import ConfigError, WeightsError
from reslab.hub import export_folder, timm_architecture
from reslab.models import create_model, get_spec, grow
from reslab.runtime.checkpoint import model_from_checkpoint, save_checkpoint
from reslab.training.config import TrainConfig
from reslab.training.finetune import start_from_weights

GOLDEN = Path(__file__).parent / "data" / "timm_resnet_family.json"
# timm 1.0.29's PretrainedCfg fields (timm/models/_pretrained.py): timm builds one from the
# folder's pretrained_cfg, and any other key raises TypeError
PRETRAINED_CFG_FIELDS = {
    "url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture",
    "tag", "custom_load", "input_size", "test_input_size", "min_input_size",
    "fixed_input_size", "interpolation", "crop_pct", "test_crop_pct", "crop_mode", "mean",
    "std", "num_classes", "label_offset", "label_names", "label_descriptions", "pool_size",
    "test_pool_size", "first_conv", "classifier", "license", "description", "origin_url",
    "paper_name", "paper_ids", "notes"}
CLASSES = ["shoe", "shirt", "bag"]


def _checkpoint(path: Path, model: torch.nn.Module, name: str, size=(1, 32, 32)) -> Path:
    """A weights-only reslab checkpoint of ``model`` with non-trivial BN statistics."""
    torch.manual_seed(0)
    for key, tensor in model.state_dict().items():
        if key.endswith("running_var"):
            tensor.uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            tensor.uniform_(-0.2, 0.2)
    meta = {"model": name, "spec": model.spec.to_dict(), "classes": CLASSES,
            "input_size": list(size), "mean": [0.3] * size[0], "std": [0.35] * size[0],
            "data": "fashion-mnist", "epoch": 2}
    return save_checkpoint(path, model.state_dict(), meta)


def test_a_folder_round_trips_bit_identically_and_carries_what_timm_reads(tmp_path):
    model = create_model("resnet18", num_classes=3, in_channels=1)
    ckpt = _checkpoint(tmp_path / "r18.safetensors", model, "resnet18")
    info = export_folder(ckpt, tmp_path / "r18")
    folder = tmp_path / "r18"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors"]
    assert info["architecture"] == "resnet18" and info["model_args"] == {}
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 3
    assert config["label_names"] == CLASSES
    cfg = config["pretrained_cfg"]
    assert set(cfg) <= PRETRAINED_CFG_FIELDS, set(cfg) - PRETRAINED_CFG_FIELDS
    assert cfg["input_size"] == [1, 32, 32] and cfg["num_classes"] == 3
    assert cfg["mean"] == [0.3] and cfg["std"] == [0.35]
    assert (cfg["first_conv"], cfg["classifier"]) == ("conv1", "fc")

    loaded, meta = model_from_checkpoint(folder)
    assert meta.classes == tuple(CLASSES) and meta.input_size == (1, 32, 32)
    assert meta.data == "fashion-mnist" and meta.mean == (0.3,)
    x = torch.randn(2, 1, 32, 32)
    original, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n")
    assert 'timm.create_model("local-dir:r18", pretrained=True)' in card
    assert "torchvision.models.resnet18(num_classes=3)" in card


def test_a_timm_variant_has_timms_keys_in_the_folder(tmp_path):
    golden = json.loads(GOLDEN.read_text())["models"]["resnet10t"]["state_dict"]
    model = create_model("resnet10t", num_classes=3)
    ckpt = _checkpoint(tmp_path / "r10t.safetensors", model, "resnet10t", size=(3, 64, 64))
    export_folder(ckpt, tmp_path / "r10t")
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "r10t" / "model.safetensors")
    head = {"fc.weight": [3, 512], "fc.bias": [3]}
    assert sorted([k, list(v.shape)] for k, v in weights.items()) == sorted(
        [[k, head.get(k, shape)] for k, shape in golden])
    cfg = json.loads((tmp_path / "r10t" / "config.json").read_text())["pretrained_cfg"]
    assert cfg["first_conv"] == "conv1.0"  # the tiered stem's first conv, as timm names it


def test_other_depths_travel_as_model_args_and_timm_less_nets_are_refused(tmp_path):
    grown = grow(create_model("resnet18", num_classes=3, in_channels=1), 2, 1)
    assert timm_architecture("resnet18", grown.spec) == ("resnet18", {"layers": [2, 3, 2, 2]})
    assert timm_architecture("mine", get_spec("resnet50d", drop_path_rate=0.1)) == (
        "resnet50d", {"drop_path_rate": 0.1})
    ckpt = _checkpoint(tmp_path / "g.safetensors", grown, "resnet18")
    export_folder(ckpt, tmp_path / "g")
    loaded, meta = model_from_checkpoint(tmp_path / "g")
    assert meta.spec["depths"] == [2, 3, 2, 2]
    with pytest.raises(ConfigError, match="stride-1 3x3 stem, option-A .zero-padding"):
        timm_architecture("resnet20", get_spec("resnet20"))
    ckpt = _checkpoint(tmp_path / "r20.safetensors", create_model("resnet20", num_classes=3,
                                                                  in_channels=1), "resnet20")
    with pytest.raises(ConfigError, match="cannot travel as a timm folder"):
        export_folder(ckpt, tmp_path / "r20")
    assert not (tmp_path / "r20").exists()


def _timm_style_folder(folder: Path, config: dict, model: torch.nn.Module) -> Path:
    """What timm's save_for_hf writes (its default: pytorch_model.bin)."""
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_save_for_hf_folder_loads_with_its_channels_from_the_weights(tmp_path):
    # save_for_hf keeps the architecture's 3-channel input_size for a 1-channel model
    model = create_model("seresnet50", num_classes=4, in_channels=1).eval()
    config = {"architecture": "seresnet50", "num_classes": 4, "num_features": 2048,
              "global_pool": "avg", "pretrained_cfg": {
                  "input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.95,
                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "num_classes": 1000, "first_conv": "conv1", "classifier": "fc"}}
    folder = _timm_style_folder(tmp_path / "se", config, model)
    loaded, meta = model_from_checkpoint(folder)
    assert meta.input_size == (1, 224, 224) and meta.classes == ("0", "1", "2", "3")
    assert meta.mean == pytest.approx((0.449,)) and meta.std == pytest.approx((0.226,))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    config["architecture"] = "vit_base_patch16_224"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="'vit_base_patch16_224' is not one reslab builds"):
        model_from_checkpoint(folder)
    config |= {"architecture": "seresnet50", "model_args": {"drop_rate": 0.2}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"model_args \['drop_rate'\]"):
        model_from_checkpoint(folder)


def test_init_from_predict_and_export_take_a_folder(tmp_path, tiny_data, capsys):
    model = create_model("resnet18", num_classes=3, in_channels=1)
    export_folder(_checkpoint(tmp_path / "c.safetensors", model, "resnet18"), tmp_path / "m")
    start = start_from_weights(TrainConfig(init_from=str(tmp_path / "m")), tiny_data, False)
    assert start.config.model == "resnet18" and start.data.mean == (0.3,)
    assert "init: weights from" in start.notes[0] and "timm model folder of resnet18" in \
        start.notes[0]
    assert start.model.fc.out_features == 10  # tiny_data's classes: a new head
    Image.fromarray((torch.rand(32, 32) * 255).byte().numpy(), mode="L").save(tmp_path / "a.png")
    (prediction,) = predict_files(tmp_path / "m", [tmp_path / "a.png"], top_k=2)
    assert prediction.error is None and {c for c, _ in prediction.top} <= set(CLASSES)
    # a folder exported again (from the folder) replaces its own files; other files are kept
    assert main(["export", str(tmp_path / "m"), "--folder", str(tmp_path / "m2")]) == 0
    assert "timm architecture resnet18, 3 classes, input 1x32x32" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "c.safetensors"), "--folder",
                 str(tmp_path / "m2")]) == 0
    (tmp_path / "m2" / "notes.txt").write_text("mine")
    assert main(["export", str(tmp_path / "m"), "--folder", str(tmp_path / "m2")]) == 1
    assert "holds other files (notes.txt)" in capsys.readouterr().err
