import json

import pytest
import torch

from cnnviz.core.head import BUNDLED_HEAD, FEATURES, save_head
from cnnviz.core.hooked import load_model, with_head
from cnnviz.core.images import bundled_images, load_image, resize
from cnnviz.core.layers import LOGITS
from cnnviz.core.models import ModelSpec, get_spec
from cnnviz.core.records import read_sidecar
from cnnviz.errors import CnnvizError
from cnnviz.training import HeadConfig, held_out_crops, split, train_head

from conftest import run_cli

IMAGES = ["brick", "grass", "starry_night", "chelsea"]
TINY = HeadConfig(image_size=192, crop=64, train_crops=8, test_crops=6, epochs=100)


@pytest.fixture(scope="module")
def trained(vgg):
    return train_head(vgg, IMAGES, TINY)


def test_head_trains_well_above_chance_on_held_out_crops(trained):
    head, record = trained
    assert record.params["classes"] == IMAGES and record.params["chance"] == 0.25
    assert record.params["accuracy"] >= 0.5, record.params
    assert record.params["train_accuracy"] >= record.params["accuracy"]
    assert record.analyzer == "head" and record.layers == [FEATURES] and record.weights == "vgg16-hed-bsds500-fp16"


def test_held_out_crops_come_from_the_right_part_only():
    image = torch.zeros(1, 3, 40, 100)
    image[..., 75:] = 1.0
    left, right = split(image, 0.25)
    assert left.shape[-1] == 75 and float(left.max()) == 0.0 and float(right.min()) == 1.0
    crops = held_out_crops(right, 3, 32)
    assert crops.shape == (3, 3, 32, 32) and float(crops.min()) == 1.0


def test_saved_head_loads_as_vgg16_plus_head_and_gives_its_logits(trained, vgg, tmp_path):
    head, record = trained
    path = save_head(head, tmp_path / "h.safetensors", record)
    assert read_sidecar(path)["params"]["classes"] == IMAGES
    model = load_model(f"vgg16+head:{path}", device="cpu")
    assert model.classes == tuple(IMAGES) and model.name == f"vgg16+head:{path}"
    assert model.weights.id.startswith("vgg16-hed-bsds500-fp16+head:h.safetensors@")
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        logits = model(image, [LOGITS])[LOGITS]
        expected = head(vgg(image, [FEATURES])[FEATURES])
    torch.testing.assert_close(logits, expected)
    with pytest.raises(CnnvizError, match="trained on vgg16 \\(vgg16-hed-bsds500-fp16\\)"):
        load_model(f"vgg16+head:{path}", weights="random", device="cpu")


def test_bundled_head_is_the_class_default_for_the_bundled_vgg16():
    """Run on the bundled images: each whole image is its own top-1 class, and the held-out right quarters
    (never trained on) are recognised far above chance."""
    record = read_sidecar(BUNDLED_HEAD)
    model = load_model("vgg16+head", device="cpu")
    config = HeadConfig()
    right, whole = 0, 0
    for name, path in bundled_images().items():
        image = load_image(path, config.image_size)
        crops = held_out_crops(split(image, config.test_fraction)[1], 4, config.crop)
        with torch.no_grad():
            right += int((model(crops, [LOGITS])[LOGITS].argmax(dim=1) == model.classes.index(name)).sum())
            whole += int(model(resize(image, 224), [LOGITS])[LOGITS].argmax(dim=1)[0] == model.classes.index(name))
    assert whole == len(model.classes) == 12
    assert right / (4 * 12) > 4 / 12  # four times chance
    assert model.classes == tuple(record["params"]["classes"]) and "brick" in model.classes
    assert with_head("vgg16") == "vgg16+head" and with_head("vgg16", "imagenet") == "vgg16"
    assert with_head("vgg19") == "vgg19" and with_head("vgg16+head:x.safetensors") == "vgg16+head:x.safetensors"


def test_model_names_with_heads():
    assert get_spec("vgg16+head") == ModelSpec("vgg16", "bundled")
    assert get_spec("vgg19+head:/tmp/h.safetensors") == ModelSpec("vgg19", "/tmp/h.safetensors")
    assert get_spec("vgg16+head:h.safetensors").label == "vgg16+head:h.safetensors"
    for bad, message in [("resnet18+head", "VGG convolutions only"), ("vgg16+heads", "write a head as"),
                         ("vgg16+head:", "write a head as"), ("vgg61+head", "did you mean")]:
        with pytest.raises(CnnvizError, match=message):
            get_spec(bad)
    with pytest.raises(CnnvizError, match="head not found"):
        load_model("vgg16+head:/no/such/head.safetensors", device="cpu")


def test_cli_head_train_writes_weights_and_sidecar(tmp_path):
    result = run_cli("head", "train", "brick", "starry_night", "--image-size", "96", "--crop", "48", "--train-crops", "2",
                     "--test-crops", "2", "--epochs", "5", "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stderr
    record = json.loads((tmp_path / "vgg16_head.json").read_text())
    assert record["params"]["classes"] == ["brick", "starry_night"]
    trained = load_model(f"vgg16+head:{tmp_path / 'vgg16_head.safetensors'}", device="cpu")
    right = 0
    for index, name in enumerate(record["params"]["classes"]):  # the held-out accuracy, recomputed apart
        part = split(load_image(name, 96), record["params"]["test_fraction"])[1]
        with torch.no_grad():
            right += int((trained(held_out_crops(part, 2, 48), [LOGITS])[LOGITS].argmax(dim=1) == index).sum())
    assert record["params"]["accuracy"] == pytest.approx(right / 4)
    bad = run_cli("head", "train", "brick", "--epochs", "0", "--out", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg16_head.json", "vgg16_head.safetensors"]
