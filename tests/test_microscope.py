"""The microscope on a small generated image set: the examples are the true maxima, a bf16 scan stores what an
fp32 scan stores, the histograms count every readable image, unreadable images are skipped and listed, a killed
run keeps its finished shards and ``--resume`` redoes only what is missing, the class weights are the
classifier's, and the site links only files that exist."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnviz.core.device import one_thread
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.core.images import load_image, resize
from cnnviz.errors import CnnvizError
from cnnviz.microscope import run as runner
from cnnviz.microscope import scan as scanner
from cnnviz.microscope import store
from cnnviz.microscope.classes import class_weights
from cnnviz.microscope.listing import shards, walk

LAYER = "conv3_3"
UNITS = [0, 1, 2, 3, 4, 5]
SIZES = (48, 64)
FAST = {"layers": LAYER, "units": "0-5", "top": 3, "sizes": SIZES, "batch": 4, "guided": False, "fv_size": 32, "fv_iters": 2}


def generated_set(folder: Path, count: int = 40, seed: int = 0) -> Path:
    """``count`` pictures of coloured shapes (two shapes of picture, in a nested folder) and one damaged file."""
    rng = np.random.default_rng(seed)
    (folder / "nested").mkdir(parents=True)
    for i in range(count):
        size = (64, 48) if i % 3 else (48, 64)
        image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.integers(0, 40, 2)
            box = [int(x), int(y), int(x + rng.integers(6, 24)), int(y + rng.integers(6, 24))]
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        image.save(folder / ("nested" if i % 4 == 0 else "") / f"img{i:03d}.png")
    (folder / "damaged.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored\n")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return generated_set(tmp_path_factory.mktemp("set"))


@pytest.fixture(scope="module")
def fp32_run(vgg, images, tmp_path_factory):
    """The run with the scan in fp32 (the reference the fast scan must match)."""
    out = tmp_path_factory.mktemp("fp32")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HookedModel, "for_optimization", lambda self: self)
        runner.microscope(vgg, [images], out=out, **FAST)
    return out


def tables(out: Path, layer: str = LAYER) -> tuple[list[dict], list[dict]]:
    return store.read_table(out / layer / "examples.parquet"), store.read_table(out / layer / "units.parquet")


def test_listing_is_lazy_and_shards_are_consecutive(images):
    def endless():
        yield from walk([images])
        raise AssertionError("read past the first shard")

    first = next(shards(endless(), 8))
    assert first.index == 0 and first.first == 0 and len(first.paths) == 8
    everything = list(walk([images]))
    assert len(everything) == 41 and not any(p.endswith(".txt") for p in everything)
    cut = list(shards(iter(everything), 16))
    assert [s.first for s in cut] == [0, 16, 32] and sum(len(s.paths) for s in cut) == 41


def test_examples_are_the_true_maxima_of_every_unit(vgg, images, fp32_run):
    examples, units = tables(fp32_run)
    best: dict[int, float] = {}
    means = torch.zeros(len(UNITS), dtype=torch.float64)
    count = 0
    with one_thread(), torch.no_grad():
        for path in walk([images]):
            if path.endswith(".jpg"):
                continue
            image = load_image(path)
            for size in SIZES:
                act = vgg(resize(image, size), [LAYER])[LAYER][0, UNITS]
                means += act.mean(dim=(1, 2)).double()
                count += 1
                for unit, value in zip(UNITS, act.amax(dim=(1, 2)).tolist()):
                    best[unit] = max(best.get(unit, -np.inf), value)
    first = {row["unit"]: row["value"] for row in examples if row["rank"] == 1}
    for unit in UNITS:
        if best[unit] > 0:
            assert first[unit] == pytest.approx(best[unit], rel=1e-6), unit
    for unit, row in zip(UNITS, units):
        assert row["unit"] == unit and row["mean"] == pytest.approx(float(means[unit] / count), rel=1e-4, abs=1e-5)
        assert sum(row["histogram"]) == row["images"] == 40
    for unit, group in itertools.groupby(examples, key=lambda r: r["unit"]):
        values = [r["value"] for r in group]
        assert values == sorted(values, reverse=True) and len(values) <= 3 and min(values) > 0, unit


def test_a_bf16_scan_stores_what_an_fp32_scan_stores(vgg, images, fp32_run, tmp_path, monkeypatch):
    def bf16(self):
        fast = copy.copy(self)
        fast.autocast = torch.bfloat16
        return fast

    monkeypatch.setattr(HookedModel, "for_optimization", bf16)
    runner.microscope(vgg, [images], out=tmp_path, **FAST)
    assert tables(tmp_path)[0] == tables(fp32_run)[0]


def test_unreadable_images_are_skipped_and_listed(fp32_run):
    manifest = store.read_manifest(fp32_run)
    assert manifest["finished"] and manifest["images"] == 40
    assert [Path(p).name for p, _ in manifest["skipped"]] == ["damaged.jpg"]
    assert "damaged.jpg" in (fp32_run / "index.html").read_text()


def test_a_killed_run_keeps_its_shards_and_resume_redoes_only_the_rest(vgg, tmp_path, monkeypatch):
    images = generated_set(tmp_path / "set")
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "SHARD", 16)
    original = scanner.scan_shard
    scanned: list[int] = []
    kill = True

    def counted(model, spec, shard):
        scanned.append(shard.index)
        if len(scanned) == 2 and kill:
            raise KeyboardInterrupt
        return original(model, spec, shard)

    monkeypatch.setattr("cnnviz.microscope.engines.scan_shard", counted)
    with pytest.raises(KeyboardInterrupt):
        runner.microscope(vgg, [images], out=out, **FAST)
    assert store.shard_file(out, 0).is_file() and not store.shard_file(out, 1).exists()
    assert not [p for p in out.rglob(".*") if p.is_file()], "a half-written file was left"
    kill, scanned[:] = False, []
    runner.microscope(vgg, [images], out=out, resume=True, **FAST)
    assert scanned == [1, 2]
    before = {s.index: s.key for s in shards(walk([images]), 16)}
    sorted((images / "nested").iterdir())[0].unlink()
    changed = [s.index for s in shards(walk([images]), 16) if before.get(s.index) != s.key]
    scanned[:] = []
    runner.microscope(vgg, [images], out=out, resume=True, **FAST)
    assert scanned == changed and changed
    with pytest.raises(CnnvizError, match="--resume"):
        runner.microscope(vgg, [images], out=out, resume=True, **{**FAST, "top": 2})


def test_class_weights_are_the_classifiers_through_the_pooling():
    lite = load_model("efficientnet_lite0", device="cpu")
    linear = [m for m in lite.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert torch.equal(class_weights(lite, "head"), linear.weight.float())
    assert class_weights(lite, "block7_1") is None  # a convolution and a ReLU6 before the pooling
    resnet = load_model("resnet18", "random", device="cpu")
    assert class_weights(resnet, "layer4.1.relu_1").shape == (1000, 512)
    assert class_weights(load_model("vgg16", "random", device="cpu"), "relu5_3") is None  # fc6 and fc7 in between


def test_the_site_links_only_files_that_exist(fp32_run):
    pages = [fp32_run / "index.html", *sorted((fp32_run / LAYER).glob("*.html"))]
    assert len(pages) == 1 + 2 + len(UNITS)
    for page in pages:
        text = page.read_text()
        assert "cnnviz.microscope(" in text and "http" not in text.replace("http-equiv", "")
        for link in re.findall(r'(?:src|href)="([^"#]+)"', text):
            if not link.startswith("data:"):
                assert (page.parent / link).is_file(), f"{page.name} links {link}"


def test_redirected_relu6_moves_dead_items_and_keeps_live_gradients():
    from cnnviz.optvis.redirect import _Redirected

    x = torch.tensor([[-1.0, -2.0, 7.0], [1.0, 7.0, -3.0]], requires_grad=True)
    _Redirected.apply(x, 0.0, 6.0).backward(torch.tensor([[-1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]]))
    # item 0 gets nothing through ReLU6: the redirected gradient where a descent step moves x into [0, 6]
    # (up from below 0; down from above 6 it would be +1, and here it is -1: blocked); item 1 keeps the plain one
    assert x.grad.tolist() == [[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]


def test_a_relu6_layer_is_climbed_at_its_pre_activation():
    from cnnviz.optvis.redirect import redirected_relus

    lite = load_model("efficientnet_lite0", device="cpu")
    module = lite.net.get_submodule(lite.table.get("head").path)
    seen = {}
    handle = module.register_forward_pre_hook(lambda _m, inputs: seen.update(pre=inputs[0].detach().clone()))
    try:
        image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with redirected_relus(lite, "head"), torch.no_grad():
            inside = lite(image, ["head"])["head"]
        with torch.no_grad():
            outside = lite(image, ["head"])["head"]
    finally:
        handle.remove()
    assert torch.equal(inside, seen["pre"]) and torch.equal(outside, seen["pre"].clamp(0, 6))
    assert inside.min() < 0
