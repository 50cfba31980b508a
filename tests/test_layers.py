import pytest

from cnnviz.core.hooked import describe, load_model
from cnnviz.core.layers import VGG16_RELUS
from cnnviz.errors import CnnvizError


def test_vgg16_papers_names_channels_and_strides(vgg):
    rows = {name: (kind, channels, stride) for name, kind, channels, stride in describe(vgg, size=64)}
    assert rows["relu4_3"] == ("relu", 512, 8)
    assert rows["conv1_1"] == ("conv", 64, 1)
    assert rows["pool5"] == ("pool", 512, 32)
    assert "relu5_4" not in rows
    assert vgg.table.names("relu") == list(VGG16_RELUS)


def test_vgg19_has_relu5_4_and_classifier_names():
    model = load_model("vgg19", weights="random", device="cpu")
    names = model.table.names()
    assert "relu5_4" in names and "fc6" in names and "fc8" in names
    assert model.table.get("relu5_4").path == "features.35"


def test_resnet18_uses_module_paths():
    model = load_model("resnet18", weights="random", device="cpu")
    assert "layer3.1.relu" in model.table.names()
    acts = model.run(__import__("torch").zeros(1, 3, 64, 64), ["layer3.1.conv2"])
    assert acts["layer3.1.conv2"].shape[1] == 256


def test_unknown_layer_suggests_closest(vgg):
    with pytest.raises(CnnvizError, match="did you mean relu4_3"):
        vgg.table.get("relu4_33")
    with pytest.raises(CnnvizError, match="unknown layer"):
        vgg.table.parse("relu1_1,relu9_9")


def test_unknown_model_suggests_closest():
    with pytest.raises(CnnvizError, match="did you mean vgg1"):
        load_model("vgg17")


def test_layer_sets_up_to(vgg):
    assert vgg.table.up_to("pool1") == ["relu1_1", "relu1_2"]
    assert vgg.table.parse("all")[-1] == "relu5_3"
