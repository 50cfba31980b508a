import json

from conftest import run_cli


def test_layers_lists_every_layer_with_channels_and_writes_them(tmp_path):
    result = run_cli("layers", "vgg16", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if " relu4_3 " in line)
    assert "512" in row
    rows = json.loads((tmp_path / "layers_vgg16.json").read_text())
    assert {"layer": "relu4_3", "kind": "relu", "channels": 512, "stride": 8, "receptive_field": 92} in rows


def test_layers_of_resnet18_name_each_call_of_a_reused_module(tmp_path):
    result = run_cli("layers", "--model", "resnet18", "-o", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    names = [row["layer"] for row in json.loads((tmp_path / "layers_resnet18.json").read_text())]
    assert names.index("layer3.1.relu") < names.index("layer3.1.relu_1") < names.index("layer4.0.conv1")


def test_models_images_and_classes_list_what_is_offline(tmp_path):
    result = run_cli("models")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any("vgg16" in line and "bundled" in line for line in lines)
    assert any("efficientnet_lite0" in line and "bundled" in line for line in lines)
    images = run_cli("images").stdout
    assert "starry_night" in images and "chelsea" in images and "brick" in images
    classes = run_cli("classes", "--find", "cat").stdout
    assert " 282  tiger cat" in classes and " 285  Egyptian cat" in classes and "tabby" not in classes
