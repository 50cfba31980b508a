"""The candidate machinery of patches and the microscope, piece by piece against values worked out by hand:
crops, the square frame, same-spot suppression, the NMS radius, the peaks, batching, selection and gathering."""

from __future__ import annotations

import math

import pytest
import torch

from cnnviz.analyzers import candidates
from cnnviz.analyzers.candidates import BORDER, Pool, batches, crop, gather, nms_radius, peaks, same_spot, select, square
from cnnviz.analyzers.saliency import attribute, picture
from cnnviz.analyzers.target import Target
from cnnviz.core.images import load_image, resize
from cnnviz.core.receptive import Field, Span, field


def test_a_crop_is_the_box_with_fill_outside_its_support():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)[:1]
    out = crop(image, (-1, -2, 3, 4), (0, 1, 3, 4), -7.0)  # 1 row above, 2 columns left; column 0 not supported
    assert out.shape == (1, 3, 4, 6)
    expected = torch.full((1, 3, 4, 6), -7.0)
    expected[:, :, 1:4, 3:6] = image[:, :, 0:3, 1:4]
    assert torch.equal(out, expected)


def test_the_square_frame_is_centred_on_the_support():
    assert square((10, 20, 30, 60)) == (0, 20, 40, 60)
    assert square((5, 0, 50, 9)) == (5, -18, 50, 27)
    assert square((3, 4, 9, 10)) == (3, 4, 9, 10)


def test_same_spot_compares_centres_with_half_the_smaller_box_on_both_axes():
    a = (0.0, 0.0, 0.4, 0.4)
    assert same_spot(a, (0.1, 0.1, 0.5, 0.5))  # centres 0.1 apart, half the box is 0.2
    assert not same_spot(a, (0.3, 0.0, 0.7, 0.4))  # rows 0.3 apart
    assert not same_spot(a, (0.0, 0.3, 0.4, 0.7))  # columns 0.3 apart: each axis counts
    assert same_spot((0.0, 0.0, 0.4, 0.4), (0.18, 0.18, 0.22, 0.22))  # centres 0.0 apart on both axes
    assert not same_spot((0.0, 0.0, 0.4, 0.4), (0.28, 0.28, 0.32, 0.32))  # 0.1 apart, the small box's half is 0.02


def test_same_spot_reads_each_axis_from_its_own_sides_on_boxes_of_unequal_height_and_width():
    """Boxes 0.25 high and 0.75 or 0.5 wide (dyadic, so every comparison is exact): rows are decided by the
    heights, columns by the widths, and a centre exactly half the smaller box away is not the same spot."""
    a = (0.0, 0.0, 0.25, 0.75)  # centre (0.125, 0.375)
    assert same_spot(a, (0.0625, 0.125, 0.3125, 0.625))  # centres (0.0625, 0) apart; halves (0.125, 0.25)
    assert same_spot((0.0625, 0.125, 0.3125, 0.625), a)
    assert same_spot(a, (0.09375, 0.0, 0.34375, 0.75))  # rows 0.09375 apart: under half the height (0.125)
    assert not same_spot(a, (0.125, 0.0, 0.375, 0.75))  # rows exactly 0.125 apart
    assert not same_spot(a, (0.15625, 0.0, 0.40625, 0.75))  # rows 0.15625 apart
    assert same_spot(a, (0.0, 0.25, 0.25, 0.75))  # columns 0.125 apart: under half the smaller width (0.25)
    assert not same_spot(a, (0.0, 0.375, 0.25, 0.875))  # columns exactly 0.25 apart


def test_same_spot_takes_half_the_smaller_box_whichever_comes_first():
    small, large = (0.25, 0.25, 0.375, 0.375), (0.0, 0.0, 0.75, 0.75)  # centres 0.0625 apart on both axes
    assert not same_spot(small, large) and not same_spot(large, small)  # the small box's half: exactly 0.0625
    assert same_spot(small, (0.25, 0.25, 0.4375, 0.4375)) and same_spot((0.25, 0.25, 0.4375, 0.4375), small)


def test_the_nms_radius_is_half_a_field_in_units_and_at_least_one():
    def rf(size: int, stride: int) -> Field:
        span = Span(0, stride, size, 0, 100)
        return Field(span, span)

    assert nms_radius(rf(92, 8)) == 6
    assert nms_radius(rf(3, 2)) == 1
    assert nms_radius(Field(Span(0, 4, 40, 0, 99), Span(0, 2, 9, 0, 99))) == 5


def test_peaks_are_local_maxima_and_at_most_the_map():
    act = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]]])
    values, ys, xs = peaks(act, 1, 6)
    assert values.shape == (1, 1, 6)  # 6 asked, 9 positions
    assert values[0, 0, :2].tolist() == [3.0, 1.0] and (ys[0, 0, :2].tolist(), xs[0, 0, :2].tolist()) == ([2, 0], [2, 0])
    # the two zeros at the other corners are flat local maxima; the five next to the 1 or the 3 are not
    assert values[0, 0, 2:4].tolist() == [0.0, 0.0] and torch.isinf(values[0, 0, 4:]).all()
    small = torch.rand(1, 5, 2, 2)
    assert peaks(small, 1, 6)[0].shape == (1, 5, 4)  # never more than the map holds


def test_batches_hold_back_at_most_twice_the_batch_and_yield_a_full_bucket_at_once():
    pulled = []

    def items(shapes):
        for i, shape in enumerate(shapes):
            pulled.append(i)
            yield i, torch.zeros(1, 3, *shape)

    first = next(iter(batches(items([(4, 4), (4, 5), (5, 4), (5, 5), (6, 6)]), 2)))
    assert first[0] == [0] and len(pulled) == 4  # four shapes held: the oldest largest bucket goes
    pulled.clear()
    first = next(iter(batches(items([(4, 5), (4, 4), (4, 4), (5, 5)]), 2)))
    assert first[0] == [1, 2] and len(pulled) == 3
    pulled.clear()
    out = list(batches(items([(4, 5), (4, 4), (4, 5), (5, 5), (6, 6)]), 3))
    assert out[0][0] == [0, 2] and len(pulled) == 5  # with 6 held at most, the pair of one shape goes first


def _pool(entries: list[tuple[float, int, int, int]], size: int = 4) -> Pool:
    pool = Pool(1, size, torch.float32)
    values = torch.tensor([[v for v, *_ in entries]])
    where = torch.tensor([[w for _, *w in entries]])
    pool.add(values, where)
    return pool


def test_select_keeps_positive_distinct_spots_in_order(vgg):
    shapes = {0: (32, 32), 1: (64, 64), 2: (32, 32), 3: (32, 32)}
    # item = image × 2 sizes + size: items 0 and 1 are image 0 at two sizes, 2 is image 1
    pool = _pool([(5.0, 0, 8, 8), (4.0, 1, 16, 16), (0.5, 2, 8, 8), (0.0, 3, 1, 1)])
    chosen = select(pool, 0, 4, shapes, vgg, "conv1_1", 2)
    assert chosen == [(5.0, 0, 8, 8), (0.5, 2, 8, 8)]  # the same spot at the second size goes; a zero never counts
    pool = _pool([(5.0, 0, 8, 8), (4.0, 1, 4, 40), (3.0, 2, 8, 8)])
    assert [c[1] for c in select(pool, 0, 4, shapes, vgg, "conv1_1", 2)] == [0, 1, 2]  # another spot of image 0 stays
    assert len(select(pool, 0, 2, shapes, vgg, "conv1_1", 2)) == 2
    empty = Pool(1, 3, torch.float32)
    assert select(empty, 0, 3, shapes, vgg, "conv1_1", 2) == []


@pytest.mark.parametrize("framed", [False, True])
def test_gather_crops_each_pick_as_a_direct_crop_does(vgg, framed):
    layer, sizes = "conv3_3", (48, 64)
    sources = ["coffee", "chelsea"]
    picks = [[(7.5, 1, 2, 3), (2.5, 2, 5, 0)], [(1.0, 3, 0, 7)]]  # (value, item = image × 2 + size, y, x)
    out = gather(vgg, layer, sources, sizes, [4, 9], picks, 3, True, torch.float64, **({"framed": True} if framed else {}))
    assert out["values"].dtype == torch.float64
    assert all(out[key].dtype == torch.long for key in ("source", "size", "y", "x", "boxes", "supports", "shapes"))
    side = min(max(field(vgg, layer, (64, 64)).size), candidates.MAX_PATCH)
    for r, chosen in enumerate(picks):
        for k, (value, item, y, x) in enumerate(chosen):
            image = resize(load_image(sources[item // 2]), sizes[item % 2])
            rf = field(vgg, layer, tuple(image.shape[-2:]))
            box, support = rf.box(y, x), rf.support(y, x)
            shown = square(support) if framed else box
            assert out["values"][r, k] == value and out["source"][r, k] == item // 2 and out["size"][r, k] == sizes[item % 2]
            assert (out["y"][r, k], out["x"][r, k]) == (y, x)
            assert out["boxes"][r, k].tolist() == list(box) and out["supports"][r, k].tolist() == list(support)
            assert out["shapes"][r, k].tolist() == list(image.shape[-2:])
            assert torch.allclose(out["patches"][r, k], resize(crop(image, shown, support, BORDER), (side, side))[0])
            guided = attribute(vgg, image, Target(layer, [4, 9][r], y, x), "guided")
            expected = resize(picture(crop(guided, shown, support, 0.0), "guided", image), (side, side))[0]
            assert torch.allclose(out["guided"][r, k], expected, atol=1e-6)
    assert math.isnan(out["values"][1, 1]) and out["source"][1, 1] == -1 and (out["patches"][1, 2] == BORDER).all()
    assert (out["guided"][1, 1] == 0.5).all() and out["boxes"][1, 1].tolist() == [0, 0, 0, 0]


def test_gather_without_guided_maps_has_none(vgg):
    out = gather(vgg, "conv1_1", ["coffee"], (32,), [0], [[(1.0, 0, 3, 3)]], 1, False, torch.float32)
    assert out["guided"] is None and out["values"][0, 0] == 1.0
