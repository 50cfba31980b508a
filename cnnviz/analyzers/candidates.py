"""Candidates for maximally activating patches, shared by ``patches`` and the microscope: local maxima of a
channel's map (non-maximum suppression by max-pooling over half a receptive field), a pool of the best per
channel that merges associatively, batches of one image shape, and the crop of a unit's exact receptive
field (mid-grey where it crosses the border), optionally with its guided-backprop map.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnviz.analyzers.saliency import attribute, picture
from cnnviz.analyzers.target import Target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, resize
from cnnviz.core.receptive import Field, field

MAX_PATCH = 128
BORDER = 0.5  # mid-grey where a receptive field crosses the image border
POOL_PER_SIZE = 2  # candidates kept per channel: top x sizes x this, enough after cross-size suppression


class Pool:
    """The best ``size`` candidates of every channel so far: value and (item, y, x), on the host, in the
    activations' own dtype (float32 from a device: MPS has no float64)."""

    def __init__(self, channels: int, size: int, dtype: torch.dtype) -> None:
        self.size = size
        self.values = torch.full((channels, size), -math.inf, dtype=dtype)
        self.where = torch.full((channels, size, 3), -1, dtype=torch.long)

    def add(self, values: Tensor, where: Tensor) -> None:
        merged = torch.cat([self.values, values], dim=1)
        places = torch.cat([self.where, where], dim=1)
        best = merged.topk(self.size, dim=1)
        self.values = best.values
        self.where = places.gather(1, best.indices.unsqueeze(-1).expand(-1, -1, 3))


def peaks(act: Tensor, radius: int, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per image and channel, the ``count`` highest local maxima of the map (no higher value within
    ``radius`` units): values, rows and columns, each (B, C, count)."""
    pooled = F.max_pool2d(act, 2 * radius + 1, stride=1, padding=radius)
    scores = act.masked_fill(act < pooled, -math.inf).flatten(2)
    best = scores.topk(min(count, scores.shape[-1]), dim=2)
    width = act.shape[-1]
    return best.values, best.indices // width, best.indices % width


def batches(images: Iterator[tuple[int, Tensor]], size: int) -> Iterator[tuple[list[int], Tensor]]:
    """Group (item, image) pairs into batches of up to ``size`` images of one shape, holding at most
    ``2 * size`` images back (memory stays bounded whatever the mix of shapes)."""
    pending: dict[tuple[int, ...], list[tuple[int, Tensor]]] = {}
    for item, image in images:
        bucket = pending.setdefault(tuple(image.shape), [])
        bucket.append((item, image))
        if len(bucket) < size and sum(map(len, pending.values())) < 2 * size:
            continue
        full = bucket if len(bucket) == size else max(pending.values(), key=len)
        del pending[tuple(full[0][1].shape)]
        yield [i for i, _ in full], torch.cat([t for _, t in full])
    for bucket in pending.values():
        yield [i for i, _ in bucket], torch.cat([t for _, t in bucket])


def nms_radius(rf: Field) -> int:
    """Half a receptive field, in units: local maxima closer than that would show overlapping patches."""
    return max(1, max(math.ceil(s / (2 * j)) for s, j in zip(rf.size, rf.stride)))


def same_spot(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two boxes of one image, as fractions of its size (top, left, bottom, right), show the same
    spot: their centres are closer than half the smaller box on both axes."""
    return all(abs((a[i] + a[i + 2]) - (b[i] + b[i + 2])) / 2 < min(a[i + 2] - a[i], b[i + 2] - b[i]) / 2
               for i in (0, 1))


def crop(image: Tensor, box: Sequence[int], support: Sequence[int], fill: float) -> Tensor:
    """The box (top, left, bottom, right) of a (1, 3, H, W) image, ``fill`` outside the support in it
    (the pixels that can reach the unit: inside the image and seen by the network)."""
    top, left, bottom, right = box
    s_top, s_left, s_bottom, s_right = support
    inside = image[:, :, s_top:s_bottom, s_left:s_right]
    return F.pad(inside, (s_left - left, right - s_right, s_top - top, bottom - s_bottom), value=fill)


def select(
    pool: Pool, channel: int, top: int, shapes: dict[int, tuple[int, int]], model: HookedModel, layer: str,
    n_sizes: int,
) -> list[tuple[float, int, int, int]]:
    """A channel's best candidates, (value, item, y, x), skipping any that shows a spot already chosen
    from the same image (at another size). Only positive activations count: a unit that does not fire
    (a ReLU's flat zeros) shows nothing about its channel."""
    chosen: list[tuple[float, int, int, int]] = []
    spots: list[tuple[int, tuple[float, ...]]] = []
    for value, (item, y, x) in zip(pool.values[channel].tolist(), pool.where[channel].tolist()):
        if item < 0 or value <= 0 or len(chosen) == top:
            break
        height, width = shapes[item]
        upper, left, lower, right = field(model, layer, (height, width)).box(y, x)
        spot = (upper / height, left / width, lower / height, right / width)
        source = item // n_sizes
        if any(s == source and same_spot(spot, other) for s, other in spots):
            continue
        chosen.append((value, item, y, x))
        spots.append((source, spot))
    return chosen


def square(support: Sequence[int]) -> tuple[int, int, int, int]:
    """The smallest square box (top, left, bottom, right) centred on a support: what a patch shows when
    only the part of the receptive field the network sees matters (a deep layer's field is far larger
    than the image, and would show it as a speck in grey)."""
    top, left, bottom, right = support
    side = max(bottom - top, right - left)
    top -= (side - (bottom - top)) // 2
    left -= (side - (right - left)) // 2
    return top, left, top + side, left + side


def gather(
    model: HookedModel, layer: str, sources: list[ImageSource], sizes: Sequence[int], channels: list[int],
    picks: list[list[tuple[float, int, int, int]]], top: int, guided: bool, dtype: torch.dtype, framed: bool = False,
) -> dict[str, Tensor | None]:
    """Crop every chosen patch (and its guided map), reading each image once more; values in ``dtype``. A patch
    is the unit's whole receptive field, or with ``framed`` the ``square`` around the part of it in the image."""
    rows = len(channels)
    sample = field(model, layer, (max(sizes), max(sizes)))
    side = min(max(sample.size), MAX_PATCH)
    whole = torch.long
    out = {
        "values": torch.full((rows, top), math.nan, dtype=dtype), "source": torch.full((rows, top), -1, dtype=whole),
        "size": torch.zeros(rows, top, dtype=whole), "y": torch.zeros(rows, top, dtype=whole),
        "x": torch.zeros(rows, top, dtype=whole), "boxes": torch.zeros(rows, top, 4, dtype=whole),
        "supports": torch.zeros(rows, top, 4, dtype=whole),
        "shapes": torch.zeros(rows, top, 2, dtype=whole), "patches": torch.full((rows, top, 3, side, side), BORDER),
        "guided": torch.full((rows, top, 3, side, side), 0.5) if guided else None,
    }
    by_source: dict[int, list[tuple[int, int, tuple[float, int, int, int]]]] = {}
    for r, chosen in enumerate(picks):
        for k, pick in enumerate(chosen):
            by_source.setdefault(pick[1] // len(sizes), []).append((r, k, pick))
    for index, wanted in sorted(by_source.items()):
        image = as_image(sources[index], None, model.device)
        resized = {size: resize(image, size) for size in {sizes[pick[1] % len(sizes)] for _r, _k, pick in wanted}}
        for r, k, (value, item, y, x) in wanted:
            scaled = resized[sizes[item % len(sizes)]]
            rf = field(model, layer, tuple(scaled.shape[-2:]))
            box, support = rf.box(y, x), rf.support(y, x)
            out["values"][r, k], out["source"][r, k], out["size"][r, k] = value, index, sizes[item % len(sizes)]
            out["y"][r, k], out["x"][r, k] = y, x
            out["boxes"][r, k], out["supports"][r, k] = torch.tensor(box), torch.tensor(support)
            out["shapes"][r, k] = torch.tensor(scaled.shape[-2:])
            shown_box = square(support) if framed else box
            out["patches"][r, k] = resize(crop(scaled, shown_box, support, BORDER), (side, side))[0].float().cpu()
            if guided:
                raw = attribute(model, scaled, Target(layer, channels[r], y, x), "guided")
                shown = picture(crop(raw, shown_box, support, 0.0), "guided", scaled)
                out["guided"][r, k] = resize(shown, (side, side))[0].float().cpu()
    return out
