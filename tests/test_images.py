import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.core.convention import CAFFE_BGR, IMAGENET
from cnnviz.core.images import bundled_images, load_image, resize, save_png
from cnnviz.errors import CnnvizError

RGB = np.stack(np.meshgrid(np.arange(40), np.arange(30)), -1)  # 30 x 40 gradient


def _rgb_image() -> Image.Image:
    array = np.zeros((30, 40, 3), np.uint8)
    array[..., 0] = RGB[..., 0] * 6
    array[..., 1] = RGB[..., 1] * 8
    array[..., 2] = 200
    return Image.fromarray(array, "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_formats_load_as_float_rgb(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    _rgb_image().save(path, format=fmt, **({"quality": 100} if fmt in ("JPEG", "WEBP") else {}))
    x = load_image(path)
    assert x.shape == (1, 3, 30, 40) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert abs(float(x[0, 2].mean()) - 200 / 255) < 0.02


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "I;16", "LA"])
def test_modes(tmp_path, mode):
    img = _rgb_image()
    if mode == "I;16":
        gray = (np.asarray(img.convert("L"), np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(gray)
    else:
        img = img.convert(mode)
    suffix = ".tiff" if mode == "CMYK" else ".png"
    path = tmp_path / f"x{suffix}"
    img.save(path)
    x = load_image(path)
    assert x.shape == (1, 3, 30, 40)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    if mode in ("L", "I;16", "LA"):
        torch.testing.assert_close(x[:, 0], x[:, 1])
        reference = load_image(_rgb_image().convert("L"))
        torch.testing.assert_close(x, reference, atol=2 / 255, rtol=0)


def test_16_bit_keeps_its_range(tmp_path):
    gray = np.full((16, 16), 40000, np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert abs(float(x.mean()) - 40000 / 65535) < 1e-3


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert float(load_image(rgba).min()) == 1.0


def test_resize_long_side_and_bundled_names():
    x = load_image("coffee", size=128)
    assert max(x.shape[-2:]) == 128 and x.shape[-2] < 128
    assert resize(x, (10, 20)).shape[-2:] == (10, 20)
    assert {"astronaut", "starry_night", "brick"} <= set(bundled_images())


def test_unknown_image_is_a_clear_error(tmp_path):
    with pytest.raises(CnnvizError, match="did you mean astronaut"):
        load_image("astronot")
    with pytest.raises(CnnvizError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(CnnvizError, match="cannot read image"):
        load_image(tmp_path / "bad.png")


def test_save_png_is_atomic_and_roundtrips(tmp_path):
    x = torch.rand(1, 3, 17, 19)
    path = save_png(x, tmp_path / "sub" / "out.png")
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, as a normal file
    torch.testing.assert_close(load_image(path), x, atol=0.5 / 255 + 1e-6, rtol=0)


@pytest.mark.parametrize("convention", [CAFFE_BGR, IMAGENET])
def test_normalization_roundtrip(convention):
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(convention.denormalize(convention.normalize(x)), x, atol=1e-5, rtol=1e-5)


def test_normalization_constants_are_the_networks_own():
    """RGB (1, 0.5, 0) as each network sees it: Caffe's VGG in BGR, 0-255, minus its BGR mean; torchvision's
    ImageNet weights (x - mean) / std in RGB; TensorFlow's EfficientNet-Lite (x - 0.5) / 0.5."""
    from cnnviz.core.convention import TF_RGB

    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(CAFFE_BGR.normalize(pixel).flatten(),
                               torch.tensor([0 - 103.939, 127.5 - 116.779, 255 - 123.68]))
    torch.testing.assert_close(IMAGENET.normalize(pixel).flatten(),
                               torch.tensor([(1 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0 - 0.406) / 0.225]))
    torch.testing.assert_close(TF_RGB.normalize(pixel).flatten(), torch.tensor([1.0, 0.0, -1.0]))


def test_every_analyzer_input_kind_gives_the_same_tensor(tmp_path):
    from cnnviz.core.images import as_image, image_path

    path = image_path("coffee")
    reference = as_image("coffee", 64)
    for source in (path, str(path), Image.open(path)):
        torch.testing.assert_close(as_image(source, 64), reference)
    torch.testing.assert_close(as_image(load_image("coffee")[0], 64), reference)


def test_degenerate_images_and_sizes_are_refused(tmp_path):
    from cnnviz.core.images import as_image

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(CnnvizError, match="at least 16 px"):
        load_image(tmp_path / "dot.png", 256)
    for size in (0, -3, 8, 2.5):
        with pytest.raises(CnnvizError, match="at least 16 pixels"):
            as_image("coffee", size)
    with pytest.raises(CnnvizError, match="one image at a time"):
        as_image(torch.rand(2, 3, 32, 32))
    with pytest.raises(CnnvizError, match=r"in \[0, 1\]"):
        as_image(torch.full((1, 3, 32, 32), float("nan")))
