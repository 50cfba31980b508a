"""Maximally activating patches over an image set (Zeiler & Fergus 2014), each optionally beside its
guided-backprop map (Springenberg et al. 2015).

The set is streamed: each image is read once, resized to every size, batched with others of the same
size and run to the layer without gradients; per channel only a pool of the best candidates is kept,
so memory stays flat however many images there are. Candidates are local maxima of a channel's map
(non-maximum suppression by max-pooling over half a receptive field), so the top patches are different
spots, not shifted copies of one; at the end, the same spot found at two sizes of one image is kept
once. A patch is its unit's exact receptive field (``cnnviz.core.receptive``) cropped from the resized
image, mid-grey where it crosses the border (or covers pixels the network never sees), and shown at most
``MAX_PATCH`` px wide.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cnnviz.analyzers.channels import Channels, parse_channels
from cnnviz.analyzers.common import model_record, save_arrays
from cnnviz.analyzers.saliency import attribute, picture
from cnnviz.analyzers.target import Target
from cnnviz.core.display import Picture
from cnnviz.core.files import atomic_write
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, check_size, image_set, resize, save_png, source_name
from cnnviz.core.progress import Tick
from cnnviz.core.receptive import Field, field
from cnnviz.core.records import Record, sidecar_path
from cnnviz.errors import CnnvizError

SIZES = (224, 384)
MAX_PATCH = 128
BORDER = 0.5  # mid-grey where a receptive field crosses the image border
POOL_PER_SIZE = 2  # candidates kept per channel: top x sizes x this, enough after cross-size suppression


@dataclass(repr=False)
class Patches(Picture):
    """The top patches of each chosen channel: row r is channel ``channels[r]``, column k its k-th best.

    Arrays have shape (channels, top); a channel with fewer than ``top`` distinct spots of positive
    activation in the set has NaN ``values`` and ``source`` -1 there (an empty cell). ``source`` indexes
    ``sources``; ``size`` is the long side the image was resized to and ``shapes`` its (H, W) then; ``y``,
    ``x`` the unit in the layer's map; ``boxes`` its receptive field (top, left, bottom, right) in the
    resized image's pixels, beyond them where it crosses the border, and ``supports`` the part of it that
    can change the unit (in the image, seen by the network). ``patches`` (and ``guided``, the
    guided-backprop maps, if asked for) are (channels, top, 3, P, P). ``means`` is every channel's mean
    activation over the set. Like an analyzer's ``Output`` it has an ``image`` (every patch tiled, rows:
    channels), a ``record`` and ``save``, and shows itself in a notebook (or with ``show()``);
    ``cnnviz.figures.draw_patches`` draws the captioned grid.
    """

    layer: str
    channels: list[int]
    values: Tensor
    source: Tensor
    size: Tensor
    y: Tensor
    x: Tensor
    boxes: Tensor
    supports: Tensor
    shapes: Tensor
    patches: Tensor
    guided: Tensor | None
    means: Tensor
    sources: list[str]
    record: Record

    def listing(self) -> list[dict]:
        """Every patch: channel, rank, image, size, image shape, unit (y, x), box, support and value."""
        rows = []
        for r, channel in enumerate(self.channels):
            for k in range(self.values.shape[1]):
                if self.source[r, k] < 0:
                    continue
                rows.append({"channel": channel, "rank": k + 1, "image": self.sources[int(self.source[r, k])],
                             "size": int(self.size[r, k]), "image_size": self.shapes[r, k].tolist(),
                             "y": int(self.y[r, k]), "x": int(self.x[r, k]), "box": self.boxes[r, k].tolist(),
                             "support": self.supports[r, k].tolist(), "value": round(float(self.values[r, k]), 6)})
        return rows

    @property
    def image(self) -> Tensor:
        """Every patch (each followed by its guided map, if any) tiled into one (1, 3, H, W) picture, a row per
        channel; empty cells are mid-grey."""
        tiles = self.patches if self.guided is None else torch.stack([self.patches, self.guided], dim=2).flatten(1, 2)
        rows, cols, _, p, q = tiles.shape
        return tiles.permute(2, 0, 3, 1, 4).reshape(1, 3, rows * p, cols * q)

    def save_arrays(self, path: str | Path) -> Path:
        """Every array (and the channel list) as one compressed .npz, atomically."""
        arrays = {"channels": np.array(self.channels), "values": self.values.numpy(), "source": self.source.numpy(),
                  "size": self.size.numpy(), "y": self.y.numpy(), "x": self.x.numpy(), "boxes": self.boxes.numpy(),
                  "supports": self.supports.numpy(), "patches": self.patches.numpy(), "means": self.means.numpy()}
        if self.guided is not None:
            arrays["guided"] = self.guided.numpy()
        return save_arrays(path, arrays)

    def save(self, path: str | Path) -> Path:
        """Write the tiled ``image`` as PNG, its JSON sidecar (the record and every patch's listing) and the
        arrays as .npz beside it, each atomically; returns the PNG path."""
        png = save_png(self.image, Path(path).with_suffix(".png"))
        text = json.dumps({**json.loads(self.record.to_json()), "patches": self.listing()}, indent=2)
        atomic_write(sidecar_path(png), lambda tmp: tmp.write_text(text + "\n"))
        self.save_arrays(png)
        return png


class _Pool:
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


def _peaks(act: Tensor, radius: int, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per image and channel, the ``count`` highest local maxima of the map (no higher value within
    ``radius`` units): values, rows and columns, each (B, C, count)."""
    pooled = F.max_pool2d(act, 2 * radius + 1, stride=1, padding=radius)
    scores = act.masked_fill(act < pooled, -math.inf).flatten(2)
    best = scores.topk(min(count, scores.shape[-1]), dim=2)
    width = act.shape[-1]
    return best.values, best.indices // width, best.indices % width


def _batches(images: Iterator[tuple[int, Tensor]], size: int) -> Iterator[tuple[list[int], Tensor]]:
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


def _radius(rf: Field) -> int:
    """Half a receptive field, in units: local maxima closer than that would show overlapping patches."""
    return max(1, max(math.ceil(s / (2 * j)) for s, j in zip(rf.size, rf.stride)))


def _same_spot(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two boxes of one image, as fractions of its size (top, left, bottom, right), show the same
    spot: their centres are closer than half the smaller box on both axes."""
    return all(abs((a[i] + a[i + 2]) - (b[i] + b[i + 2])) / 2 < min(a[i + 2] - a[i], b[i + 2] - b[i]) / 2
               for i in (0, 1))


def _crop(image: Tensor, box: Sequence[int], support: Sequence[int], fill: float) -> Tensor:
    """The box (top, left, bottom, right) of a (1, 3, H, W) image, ``fill`` outside the support in it
    (the pixels that can reach the unit: inside the image and seen by the network)."""
    top, left, bottom, right = box
    s_top, s_left, s_bottom, s_right = support
    inside = image[:, :, s_top:s_bottom, s_left:s_right]
    return F.pad(inside, (s_left - left, right - s_right, s_top - top, bottom - s_bottom), value=fill)


def patches(
    model: HookedModel,
    images: Sequence[ImageSource] | None = None,
    *,
    layer: str = "relu4_3",
    channels: str | int | Sequence[int] = "0-15",
    top: int = 9,
    sizes: Sequence[int] = SIZES,
    batch: int = 8,
    guided: bool = False,
    seed: int = 0,
    callback: Callable[[Tick], None] | None = None,
) -> Patches:
    """The ``top`` image patches that activate each chosen channel of ``layer`` most, over ``images``
    (bundled names, files, folders searched recursively, PIL images or tensors; None: every bundled
    image), each resized to every long side in ``sizes``. ``channels``: see ``cnnviz.analyzers.channels``.
    ``guided`` adds each patch's guided-backprop map of its neuron. ``callback`` gets a ``Tick`` per batch run."""
    start = time.perf_counter()
    sources = image_set(images)
    choice = parse_channels(channels)
    _check(top, sizes, batch)
    name = model.table.get(layer).name
    channels_in, dtype = _check_layer(model, name, sources[0], min(sizes), choice)
    pool, means, shapes = _scan(model, name, sources, sizes, top, batch, channels_in, dtype, callback, start)
    chosen = choice.choose(means, seed)
    picks = [_select(pool, c, top, shapes, model, name, len(sizes)) for c in chosen]
    result = _gather(model, name, sources, sizes, chosen, picks, top, guided, dtype)
    rf = field(model, name, (min(sizes), min(sizes)))
    names = [source_name(s) for s in sources]
    params = {"images": len(sources), "sources": names[:20] + (["..."] if len(names) > 20 else []),
              "sizes": list(sizes), "top": top, "channels_spec": choice.text, "channels": chosen, "batch": batch,
              "guided": guided, "receptive_field": rf.size[0] if rf.size[0] == rf.size[1] else list(rf.size),
              "stride": rf.stride[0] if rf.stride[0] == rf.stride[1] else list(rf.stride),
              "nms": "local maxima within half a receptive field; one spot per image across sizes",
              "border": f"grey {BORDER}"}
    record = model_record("patches", model, [name], params, seed=seed, seconds=round(time.perf_counter() - start, 3))
    return Patches(layer=name, channels=chosen, means=means, sources=names, record=record, **result)


def _check(top: int, sizes: Sequence[int], batch: int) -> None:
    if top < 1:
        raise CnnvizError(f"--top must be at least 1, got {top}")
    if batch < 1:
        raise CnnvizError(f"--batch must be at least 1, got {batch}")
    if not sizes:
        raise CnnvizError("--sizes needs at least one long side")
    for size in sizes:
        check_size(size, "--sizes")


def _check_layer(model: HookedModel, layer: str, source: ImageSource, side: int, choice: Channels) -> tuple[int, torch.dtype]:
    """The layer's channel count and dtype, from the first image at the smallest size (before any long
    work): the layer must keep a spatial map and have the chosen channels."""
    with torch.no_grad():
        act = model(resize(as_image(source, None, model.device), side), [layer])[layer]
    if act.dim() != 4:
        raise CnnvizError(f"patches need a layer with a spatial map; {layer} has shape {tuple(act.shape)}")
    choice.check(act.shape[1], layer)
    return act.shape[1], act.dtype


def _scan(
    model: HookedModel, layer: str, sources: list[ImageSource], sizes: Sequence[int], top: int, batch: int,
    channels: int, dtype: torch.dtype, callback: Callable[[Tick], None] | None, start: float,
) -> tuple[_Pool, Tensor, dict[int, tuple[int, int]]]:
    """Stream the set through the network once: the candidate pool, every channel's mean activation and
    each item's (image x size) shape."""
    pool = _Pool(channels, top * len(sizes) * POOL_PER_SIZE, dtype)
    total = torch.zeros(channels, dtype=dtype)
    shapes: dict[int, tuple[int, int]] = {}
    waiting: dict[int, int] = {}  # images read but not yet run at every size: their sizes to go
    done = 0

    def read() -> Iterator[tuple[int, Tensor]]:
        for index, source in enumerate(sources):
            image = as_image(source, None, model.device)
            waiting[index] = len(sizes)
            for s, size in enumerate(sizes):
                item = index * len(sizes) + s
                scaled = resize(image, size)
                shapes[item] = tuple(scaled.shape[-2:])
                yield item, scaled

    for items, x in _batches(read(), batch):
        with torch.no_grad():
            act = model(x, [layer])[layer]
        total += act.mean(dim=(2, 3)).sum(dim=0).cpu()
        values, ys, xs = _peaks(act, _radius(field(model, layer, tuple(x.shape[-2:]))), top * POOL_PER_SIZE)
        item = torch.tensor(items, device=act.device).view(-1, 1, 1).expand_as(ys)
        where = torch.stack([item, ys, xs], dim=-1)
        pool.add(values.transpose(0, 1).flatten(1).cpu(), where.transpose(0, 1).flatten(1, 2).cpu())
        for index in (i // len(sizes) for i in items):
            waiting[index] -= 1
            if not waiting[index]:
                del waiting[index]
                done += 1
        if callback is not None:
            callback(Tick(done, len(sources), time.perf_counter() - start))
    return pool, total / (len(sources) * len(sizes)), shapes


def _select(
    pool: _Pool, channel: int, top: int, shapes: dict[int, tuple[int, int]], model: HookedModel, layer: str,
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
        if any(s == source and _same_spot(spot, other) for s, other in spots):
            continue
        chosen.append((value, item, y, x))
        spots.append((source, spot))
    return chosen


def _gather(
    model: HookedModel, layer: str, sources: list[ImageSource], sizes: Sequence[int], channels: list[int],
    picks: list[list[tuple[float, int, int, int]]], top: int, guided: bool, dtype: torch.dtype,
) -> dict[str, Tensor | None]:
    """Crop every chosen patch (and its guided map), reading each image once more; values in ``dtype``."""
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
            out["patches"][r, k] = resize(_crop(scaled, box, support, BORDER), (side, side))[0].float().cpu()
            if guided:
                raw = attribute(model, scaled, Target(layer, channels[r], y, x), "guided")
                shown = picture(_crop(raw, box, support, 0.0), "guided", scaled)
                out["guided"][r, k] = resize(shown, (side, side))[0].float().cpu()
    return out
