"""Feature maps: ``features_only`` as timm gives them, and torch.fx node extraction as
torchvision's ``create_feature_extractor`` gives it."""

import pytest
import torch

import reslab
from reslab.errors import ConfigError, SpecError
from reslab.models import create_feature_extractor, get_graph_node_names, load_weights


@pytest.mark.parametrize(("name", "stem_module"), [("resnet50", "relu"), ("resnet26t", "relu"),
                                                   ("resnetv2_50d", "stem.conv3")])
def test_features_only_gives_every_map_as_feature_info_describes_it(name, stem_module):
    model = reslab.create_model(name, features_only=True).eval()
    maps = model(torch.randn(1, 3, 64, 64))
    info = model.feature_info
    assert info.channels() == [64, 256, 512, 1024, 2048]
    assert info.reduction() == [2, 4, 8, 16, 32]
    assert info.module_name()[0] == stem_module
    assert [tuple(m.shape[1:]) for m in maps] == [
        (c, 64 // r, 64 // r) for c, r in zip(info.channels(), info.reduction(), strict=True)]


def test_features_only_is_the_backbone_of_the_classifier():
    torch.manual_seed(0)
    classifier = reslab.create_model("resnet18d").eval()
    features = reslab.create_model("resnet18d", features_only=True, out_indices=(1, 4)).eval()
    assert set(features.state_dict()) == {k for k in classifier.state_dict()
                                          if not k.startswith("fc.")}
    report = load_weights(features, classifier.state_dict())  # a classifier's file loads
    assert report.dropped == ["fc.weight", "fc.bias"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        every = classifier.forward_intermediates(x)
        got = features(x)
    assert len(got) == 2 and features.feature_info.channels() == [64, 512]
    torch.testing.assert_close(got[0], every[1])
    torch.testing.assert_close(got[1], every[4])
    torch.testing.assert_close(classifier.forward_head(classifier.forward_features(x)),
                               classifier.fc(every[4].mean((2, 3))))


def test_cifar_stem_features_keep_the_input_resolution():
    model = reslab.create_model("resnet20", features_only=True)
    assert model.feature_info.reduction() == [1, 1, 2, 4]
    assert [m.shape[-1] for m in model(torch.randn(1, 3, 32, 32))] == [32, 32, 16, 8]


def test_bad_out_indices_are_refused():
    with pytest.raises(ConfigError, match="out_indices"):
        reslab.create_model("resnet18", features_only=True, out_indices=(1, 5))
    with pytest.raises(SpecError, match="features_only=True"):
        reslab.create_model("resnet18", out_indices=(1, 2))


def test_graph_node_names_follow_the_module_tree():
    model = reslab.create_model("resnet18")
    train_names, eval_names = get_graph_node_names(model)
    assert model.training  # left in its mode
    assert train_names == eval_names
    assert eval_names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert {"layer1.0.add", "layer1.0.relu_1", "layer4.1.bn2", "fc"} <= set(eval_names)


def test_drop_path_shows_only_in_the_training_graph():
    model = reslab.create_model("resnet18", drop_path_rate=0.1)
    train_names, eval_names = get_graph_node_names(model)
    assert "layer4.1.drop_path.bernoulli_" in train_names
    assert not any("bernoulli" in n for n in eval_names)


@pytest.mark.parametrize("name", ["resnet34", "seresnet50", "ecaresnet50d", "resnetblur50",
                                  "resnetv2_50"])
def test_feature_extractor_returns_the_nodes_asked_for(name):
    torch.manual_seed(0)
    model = reslab.create_model(name).eval()
    first, last = model.stage_names[0], model.stage_names[-1]
    extractor = create_feature_extractor(model, {first: "c2", last: "c5"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        stages = model.forward_stages(x)
    assert list(out) == ["c2", "c5"]
    torch.testing.assert_close(out["c2"], stages[1])
    torch.testing.assert_close(out["c5"], stages[-1])
    # nothing after the last output is kept
    assert not any(k.startswith(("fc.", "head.")) for k in extractor.state_dict())


def test_unknown_node_is_refused_with_the_way_to_list_them():
    with pytest.raises(ConfigError, match="get_graph_node_names"):
        create_feature_extractor(reslab.create_model("resnet18"), ["layer9"])


def test_a_features_only_backbone_is_summarised_without_a_head():
    from reslab.models.summary import summary

    backbone = reslab.create_model("resnet18", features_only=True)
    s = summary(backbone, "3x64x64")
    assert [row.name for row in s.rows] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert s.params == summary("resnet18").params - (512 * 1000 + 1000)
