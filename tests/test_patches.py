"""Maximally activating patches: each patch is exactly where its activation comes from, the top patches are
distinct spots, channel choices parse, the scan streams in bounded batches, and the CLI writes its grid."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnviz.analyzers.candidates import batches
from cnnviz.analyzers.channels import parse_channels
from cnnviz.analyzers.patches import patches
from cnnviz.core.convention import Convention
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import image_set, resize
from cnnviz.core.models import ModelSpec
from cnnviz.core.receptive import field
from cnnviz.core.weights import Weights
from cnnviz.errors import CnnvizError

from conftest import run_cli

IDENTITY = Convention("identity", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, False)
LAYER = "pool"


class Tiny(nn.Module):
    """A 3x3 convolution padding columns only; a stride-2 convolution after asymmetric padding (one
    column before, one row after, as TF "same" pads), which leaves the last row of an even-sized image
    unseen; a depthwise residual branch; 2x2 average pooling. Leaky ReLUs, so that every pixel a unit
    can see reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=(0, 1))
        self.act1 = nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.act2 = nn.LeakyReLU(0.1)
        self.branch = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(F.pad(self.act1(self.conv1(x)), (1, 0, 0, 1))))
        return self.pool(x + self.branch(x))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """float64 convolutions take torch's slow path, far slower on several threads of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> HookedModel:
    torch.manual_seed(1)
    return HookedModel(Tiny().double(), ModelSpec("tiny"), Weights("tiny", None, IDENTITY), torch.device("cpu"))


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.rand(1, 3, h, w, generator=generator, dtype=torch.float64) for h, w in ((28, 36), (40, 30), (33, 33), (20, 44))]


def _only_its_support_reaches(model: HookedModel, image: torch.Tensor, channel: int, y: int, x: int,
                              support: tuple[int, int, int, int], layer: str = LAYER) -> float:
    """Check that noise everywhere outside ``support`` leaves unit (channel, y, x) exactly as it was,
    and that flipping a corner, edge or centre pixel inside it changes the unit; return its value."""

    def activation(picture: torch.Tensor) -> float:
        with torch.no_grad():
            return float(model(picture, [layer])[layer][0, channel, y, x])

    top, left, bottom, right = support
    inside = torch.zeros(image.shape[-2:], dtype=torch.bool)
    inside[top:bottom, left:right] = True
    elsewhere = torch.where(inside, image, torch.rand_like(image))
    assert activation(elsewhere) == activation(image), "a pixel outside the patch changed the activation"
    for py in (top, (top + bottom) // 2, bottom - 1):
        for px in (left, (left + right) // 2, right - 1):
            poked = image.clone()
            poked[0, :, py, px] = 1 - poked[0, :, py, px]
            assert activation(poked) != activation(image), f"pixel ({py}, {px}) inside the patch had no effect"
    return activation(image)


def test_each_patch_is_where_its_activation_comes_from(tiny, images):
    result = patches(tiny, images, layer=LAYER, channels="0-5", top=4, sizes=(32, 25), batch=2)
    assert result.values.shape == (6, 4) and result.patches.shape[:2] == (6, 4)
    checked = 0
    for r, channel in enumerate(result.channels):
        for k in range(4):
            if result.source[r, k] < 0:
                continue
            image = resize(images[int(result.source[r, k])], int(result.size[r, k]))
            top, left, bottom, right = result.boxes[r, k].tolist()
            assert (bottom - top, right - left) == (11, 11)
            support = tuple(result.supports[r, k].tolist())
            assert support[:2] == (max(top, 0), max(left, 0))
            value = _only_its_support_reaches(tiny, image, channel, int(result.y[r, k]), int(result.x[r, k]), support)
            assert value == float(result.values[r, k])
            checked += 1
    assert checked >= 12


def test_each_channels_first_patch_is_its_maximum_over_every_image_and_size(tiny, images):
    sizes = (32, 25)
    result = patches(tiny, images, layer=LAYER, channels="0-5", top=2, sizes=sizes, batch=3)
    with torch.no_grad():
        maps = [tiny(resize(image, size), [LAYER])[LAYER][0] for image in images for size in sizes]
    checked = 0
    for r, channel in enumerate(result.channels):
        best = max(float(m[channel].max()) for m in maps)
        if best > 0:
            assert float(result.values[r, 0]) == best, channel
            checked += 1
    assert checked >= 3


def test_pixels_the_network_never_sees_are_outside_the_support():
    """A stride-2 convolution without padding drops the last column of an even-sized image: the last
    units' boxes (padded by the next layer) reach past it, but nothing there changes them."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, stride=2), nn.LeakyReLU(0.1), nn.Conv2d(2, 2, 3, padding=1))
    model = HookedModel(net.double(), ModelSpec("tiny"), Weights("tiny", None, IDENTITY), torch.device("cpu"))
    rf = field(model, "2", (9, 10))
    assert (rf.y.seen_to, rf.x.seen_to) == (9, 9) and rf.box(3, 3) == (4, 4, 11, 11)
    image = torch.rand(1, 3, 9, 10, dtype=torch.float64)
    for y, x in [(0, 0), (3, 3), (1, 2)]:
        _only_its_support_reaches(model, image, 1, y, x, rf.support(y, x), layer="2")


def test_patches_crop_the_field_with_grey_where_the_unit_sees_nothing(tiny, images):
    result = patches(tiny, images[:1], layer=LAYER, channels=[0], top=3, sizes=(32,))
    rf = field(tiny, LAYER, tuple(resize(images[0], 32).shape[-2:]))
    assert rf.box(0, 0)[:2] == (-2, -4)
    image = resize(images[0], 32)
    for k in range(3):
        top, left, bottom, right = result.boxes[0, k].tolist()
        s_top, s_left, s_bottom, s_right = result.supports[0, k].tolist()
        crop = result.patches[0, k]
        for i, py in enumerate(range(top, bottom)):
            for j, px in enumerate(range(left, right)):
                outside = not (s_top <= py < s_bottom and s_left <= px < s_right)
                expected = torch.full((3,), 0.5) if outside else image[0, :, py, px].float()
                assert torch.allclose(crop[:, i, j], expected, atol=1e-6)


def test_top_patches_are_distinct_spots(tiny):
    """One bright square on grey: without suppression the top patches would be shifted copies of it."""
    image = torch.full((1, 3, 48, 48), 0.4, dtype=torch.float64)
    image[..., 20:26, 18:24] = 1.0
    scales = (48, 36)
    result = patches(tiny, [image], layer=LAYER, channels="top:3", top=9, sizes=scales)
    for r in range(len(result.channels)):
        found = [k for k in range(9) if result.source[r, k] >= 0]
        assert len(found) >= 2, "the most active channels fire at several spots"
        for a in found:
            for b in found:
                if a >= b:
                    continue
                if result.size[r, a] == result.size[r, b]:
                    apart = max(abs(int(result.y[r, a] - result.y[r, b])), abs(int(result.x[r, a] - result.x[r, b])))
                    assert apart * 4 > 11 / 2, "two patches of one map overlap by more than half"
                else:
                    boxes = [result.boxes[r, i].double() / result.shapes[r, i].double().repeat(2) for i in (a, b)]
                    centres = [(box[:2] + box[2:]) / 2 for box in boxes]
                    half = torch.minimum(boxes[0][2:] - boxes[0][:2], boxes[1][2:] - boxes[1][:2]) / 2
                    assert ((centres[0] - centres[1]).abs() >= half).any(), "one spot shown at two scales"
        values = result.values[r][~result.values[r].isnan()]
        assert torch.all(values[:-1] >= values[1:]) and torch.all(values > 0)


def test_channel_choices(tiny, images):
    assert parse_channels("0-3,8").indices == (0, 1, 2, 3, 8)
    assert parse_channels("3,7,9").indices == (3, 7, 9)
    assert parse_channels([4, 2]).indices == (4, 2)
    assert (parse_channels("top").rule, parse_channels("top").count) == ("top", 16)
    assert parse_channels("random:5").count == 5
    for bad in ("", "a-b", "5-2", "1,,2", "top:0", "random", "random:x", "-3", "best"):
        with pytest.raises(CnnvizError, match="--channels"):
            parse_channels(bad)
    with pytest.raises(CnnvizError, match="out of range"):
        patches(tiny, images, layer=LAYER, channels="0,6", sizes=(24,))
    with pytest.raises(CnnvizError, match="asks for 7 channels"):
        patches(tiny, images, layer=LAYER, channels="top:7", sizes=(24,))
    top = patches(tiny, images, layer=LAYER, channels="top:2", top=1, sizes=(24,))
    with torch.no_grad():
        means = torch.stack([tiny(resize(image, 24), [LAYER])[LAYER][0].mean(dim=(1, 2)) for image in images]).mean(dim=0)
    torch.testing.assert_close(top.means, means)
    assert top.channels == means.argsort(descending=True)[:2].tolist()
    draws = [patches(tiny, images[:1], layer=LAYER, channels="random:3", top=1, sizes=(24,), seed=s).channels for s in range(5)]
    assert all(len(set(d)) == 3 for d in draws) and len({tuple(d) for d in draws}) > 1
    again = patches(tiny, images[:1], layer=LAYER, channels="random:3", top=1, sizes=(24,), seed=3).channels
    assert again == draws[3]


def test_batches_group_one_shape_and_hold_back_little():
    shapes = [(8, 8), (8, 6), (8, 8), (6, 8), (8, 6), (8, 8), (5, 5), (8, 8), (8, 8)] * 3
    pulled = 0

    def items():
        nonlocal pulled
        for i, shape in enumerate(shapes):
            pulled += 1
            yield i, torch.zeros(1, 3, *shape)

    seen, given = [], 0
    for batch_items, batch in batches(items(), 2):
        assert batch.shape[0] == len(batch_items) <= 2
        assert all(tuple(batch.shape[-2:]) == shapes[i] for i in batch_items)
        given += len(batch_items)
        assert pulled - given <= 4 - 1
        seen += batch_items
    assert sorted(seen) == list(range(len(shapes)))


def test_image_sets_search_folders_recursively(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("b.png", "sub/a.JPG", "sub/deeper/c.webp"):
        Image.new("RGB", (20, 20)).save(tmp_path / name, format="WEBP" if name.endswith("webp") else None
                                        if not name.endswith("JPG") else "JPEG")
    (tmp_path / "sub" / "notes.txt").write_text("not an image")
    found = image_set([tmp_path, "chelsea"])
    assert [p.relative_to(tmp_path).as_posix() for p in found[:3]] == ["b.png", "sub/a.JPG", "sub/deeper/c.webp"]
    assert found[3] == "chelsea"
    assert len(image_set(None)) == 12 and "starry_night" in image_set(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnvizError, match="no images"):
        image_set([tmp_path / "empty"])


def test_cli_writes_one_grid_per_layer_with_a_listing(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "red.png")
    result = run_cli("patches", "--layer", "relu1_2,relu2_2", "--channels", "0-1", "--images", "chelsea", "--images",
                     str(folder), "--sizes", "40,32", "--top", "2", "--guided", "--device", "cpu", "-q", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    for layer in ("relu1_2", "relu2_2"):
        png = tmp_path / "out" / f"patches_vgg16_{layer}_grid.png"
        assert png.is_file() and png.with_suffix(".npz").is_file()
        sidecar = json.loads(png.with_suffix(".json").read_text())
        assert sidecar["kind"] == "grid" and sidecar["analyzer"] == "patches"
        assert sidecar["col_titles"] == ["#1", "guided", "#2", "guided"]
        assert sidecar["record"]["params"]["receptive_field"] == {"relu1_2": 5, "relu2_2": 14}[layer]
        listing = sidecar["patches"]
        assert listing and {p["channel"] for p in listing} == {0, 1}
        first = listing[0]
        assert set(first) == {"channel", "rank", "image", "size", "image_size", "y", "x", "box", "support", "value"}
        assert first["size"] in (40, 32) and first["value"] > 0 and not math.isnan(first["value"])
        assert first["image"] == "chelsea" or first["image"].endswith("red.png")


@pytest.mark.parametrize("channels, message", [("3-x", "--channels"), ("999", "out of range")])
def test_cli_bad_channels_is_one_error_line(tmp_path, channels, message):
    result = run_cli("patches", "--layer", "relu1_2", "--channels", channels, "--images", "chelsea", "--sizes", "32",
                     "--device", "cpu", "-o", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
