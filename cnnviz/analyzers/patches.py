"""Maximally activating patches over an image set (Zeiler & Fergus 2014), each optionally beside its
guided-backprop map (Springenberg et al. 2015).

The set is streamed: each image is read once, resized to every scale, batched with others of the same
size and run to the layer without gradients; per channel only a pool of the best candidates is kept,
so memory stays flat however many images there are. Candidates are local maxima of a channel's map
(non-maximum suppression by max-pooling over half a receptive field), so the top patches are different
spots, not shifted copies of one; at the end, the same spot found at two scales of one image is kept
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
from cnnviz.analyzers.common import model_record
from cnnviz.analyzers.saliency import display, gradient
from cnnviz.analyzers.target import Target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, atomic_write, check_size, image_set, resize, source_name
from cnnviz.core.receptive import Field, field
from cnnviz.core.records import Record
from cnnviz.errors import CnnvizError
from cnnviz.gallery.grid import Cell, draw_grid

SCALES = (224, 384)
MAX_PATCH = 128
BORDER = 0.5  # mid-grey where a receptive field crosses the image border
POOL_PER_SCALE = 2  # candidates kept per channel: top x scales x this, enough after cross-scale suppression


@dataclass(frozen=True)
class Tick:
    """Progress: ``images`` of ``total`` run at every scale after ``seconds``."""

    images: int
    total: int
    seconds: float


@dataclass
class Patches:
    """The top patches of each chosen channel: row r is channel ``channels[r]``, column k its k-th best.

    Arrays have shape (channels, top); a channel with fewer than ``top`` distinct spots of positive
    activation in the set has NaN ``values`` and ``image`` -1 there (an empty cell in the grid).
    ``image`` indexes ``sources``; ``scale`` is the long side the image was resized to and ``sizes`` its
    (H, W) then; ``y``, ``x`` the unit in the layer's map; ``boxes`` its receptive field (top, left,
    bottom, right) in the resized image's pixels, beyond them where it crosses the border, and
    ``supports`` the part of it that can change the unit (in the image, seen by the network). ``patches``
    (and ``guided``, the guided-backprop maps, if asked for) are (channels, top, 3, P, P). ``means`` is
    every channel's mean activation over the set.
    """

    layer: str
    channels: list[int]
    values: Tensor
    image: Tensor
    scale: Tensor
    y: Tensor
    x: Tensor
    boxes: Tensor
    supports: Tensor
    sizes: Tensor
    patches: Tensor
    guided: Tensor | None
    means: Tensor
    sources: list[str]
    record: Record

    def listing(self) -> list[dict]:
        """Every patch: channel, rank, image, scale, image size, unit (y, x), box, support and value."""
        rows = []
        for r, channel in enumerate(self.channels):
            for k in range(self.values.shape[1]):
                if self.image[r, k] < 0:
                    continue
                rows.append({"channel": channel, "rank": k + 1, "image": self.sources[int(self.image[r, k])],
                             "scale": int(self.scale[r, k]), "image_size": self.sizes[r, k].tolist(),
                             "y": int(self.y[r, k]), "x": int(self.x[r, k]), "box": self.boxes[r, k].tolist(),
                             "support": self.supports[r, k].tolist(), "value": round(float(self.values[r, k]), 6)})
        return rows

    def grid(self) -> list[list[Cell | None]]:
        """The grid's rows: each patch with its activation (and its guided map beside it)."""
        rows = []
        for r in range(len(self.channels)):
            row: list[Cell | None] = []
            for k in range(self.values.shape[1]):
                if self.image[r, k] < 0:
                    row += [None] * (1 if self.guided is None else 2)
                    continue
                name = Path(self.sources[int(self.image[r, k])]).stem
                label = f"{float(self.values[r, k]):.3g} · {name} {int(self.scale[r, k])}"
                row.append(Cell(self.patches[r, k].unsqueeze(0), label))
                if self.guided is not None:
                    row.append(Cell(self.guided[r, k].unsqueeze(0)))
            if all(cell is None for cell in row):
                row[0] = Cell(torch.full_like(self.patches[r, :1], BORDER), "no positive activation")
            rows.append(row)
        return rows

    def save(self, path: str | Path) -> Path:
        """Draw the grid (rows: channels) as PNG; its JSON sidecar holds the run record and every patch's
        listing; an .npz beside it holds the arrays. Returns the PNG path."""
        top = self.values.shape[1]
        cols = [f"#{k + 1}" for k in range(top)]
        if self.guided is not None:
            cols = [title for k in range(top) for title in (f"#{k + 1}", "guided")]
        params = self.record.params
        title = (f"Top patches, {self.record.model} ({self.record.weights}) {self.layer}: receptive field "
                 f"{params['receptive_field']} px, stride {params['stride']}; {params['images']} images at "
                 f"{params['scales']} px")
        extra = {"record": json.loads(self.record.to_json()), "patches": self.listing()}
        rows = [f"channel {c}\nmean {float(self.means[c]):.3g}" for c in self.channels]
        png = draw_grid(self.grid(), path, col_titles=cols, row_titles=rows, title=title, analyzer="patches", extra=extra)
        arrays = {"channels": np.array(self.channels), "values": self.values.numpy(), "image": self.image.numpy(),
                  "scale": self.scale.numpy(), "y": self.y.numpy(), "x": self.x.numpy(), "boxes": self.boxes.numpy(),
                  "supports": self.supports.numpy(),
                  "patches": self.patches.numpy(), "means": self.means.numpy()}
        if self.guided is not None:
            arrays["guided"] = self.guided.numpy()
        atomic_write(png.with_suffix(".npz"), lambda tmp: np.savez_compressed(tmp, **arrays))
        return png


class _Pool:
    """The best ``size`` candidates of every channel so far: value and (item, y, x)."""

    def __init__(self, channels: int, size: int) -> None:
        self.size = size
        self.values = torch.full((channels, size), -math.inf, dtype=torch.float64)
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
    scales: Sequence[int] = SCALES,
    batch: int = 8,
    guided: bool = False,
    seed: int = 0,
    callback: Callable[[Tick], None] | None = None,
) -> Patches:
    """The ``top`` image patches that activate each chosen channel of ``layer`` most, over ``images``
    (bundled names, files, folders searched recursively, PIL images or tensors; None: every bundled
    image), each resized to every long side in ``scales``. ``channels``: see ``cnnviz.analyzers.channels``.
    ``guided`` adds each patch's guided-backprop map of its neuron. ``callback`` gets a ``Tick`` per batch run."""
    start = time.perf_counter()
    sources = image_set(images)
    choice = parse_channels(channels)
    _check(top, scales, batch)
    name = model.table.get(layer).name
    channels_in = _check_layer(model, name, sources[0], min(scales), choice)
    pool, means, shapes = _scan(model, name, sources, scales, top, batch, channels_in, callback, start)
    chosen = choice.choose(means, seed)
    picks = [_select(pool, c, top, shapes, model, name, len(scales)) for c in chosen]
    result = _gather(model, name, sources, scales, chosen, picks, top, guided)
    rf = field(model, name, (min(scales), min(scales)))
    names = [source_name(s) for s in sources]
    params = {"images": len(sources), "sources": names[:20] + (["..."] if len(names) > 20 else []),
              "scales": list(scales), "top": top, "channels_spec": choice.text, "channels": chosen, "batch": batch,
              "guided": guided, "receptive_field": rf.size[0] if rf.size[0] == rf.size[1] else list(rf.size),
              "stride": rf.stride[0] if rf.stride[0] == rf.stride[1] else list(rf.stride),
              "nms": "local maxima within half a receptive field; one spot per image across scales",
              "border": f"grey {BORDER}"}
    record = model_record("patches", model, [name], params, seed=seed, seconds=round(time.perf_counter() - start, 3))
    return Patches(layer=name, channels=chosen, means=means, sources=names, record=record, **result)


def _check(top: int, scales: Sequence[int], batch: int) -> None:
    if top < 1:
        raise CnnvizError(f"--top must be at least 1, got {top}")
    if batch < 1:
        raise CnnvizError(f"--batch must be at least 1, got {batch}")
    if not scales:
        raise CnnvizError("--scales needs at least one long side")
    for scale in scales:
        check_size(scale, "--scales")


def _check_layer(model: HookedModel, layer: str, source: ImageSource, side: int, choice: Channels) -> int:
    """The layer's channel count, from the first image at the smallest scale (before any long work):
    the layer must keep a spatial map and have the chosen channels."""
    with torch.no_grad():
        act = model(resize(as_image(source, None, model.device), side), [layer])[layer]
    if act.dim() != 4:
        raise CnnvizError(f"patches need a layer with a spatial map; {layer} has shape {tuple(act.shape)}")
    choice.check(act.shape[1], layer)
    return act.shape[1]


def _scan(
    model: HookedModel, layer: str, sources: list[ImageSource], scales: Sequence[int], top: int, batch: int,
    channels: int, callback: Callable[[Tick], None] | None, start: float,
) -> tuple[_Pool, Tensor, dict[int, tuple[int, int]]]:
    """Stream the set through the network once: the candidate pool, every channel's mean activation and
    each item's (image x scale) size."""
    pool = _Pool(channels, top * len(scales) * POOL_PER_SCALE)
    total = torch.zeros(channels, dtype=torch.float64)
    shapes: dict[int, tuple[int, int]] = {}
    waiting: dict[int, int] = {}  # images read but not yet run at every scale: their scales to go
    done = 0

    def read() -> Iterator[tuple[int, Tensor]]:
        for index, source in enumerate(sources):
            image = as_image(source, None, model.device)
            waiting[index] = len(scales)
            for s, scale in enumerate(scales):
                item = index * len(scales) + s
                scaled = resize(image, scale)
                shapes[item] = tuple(scaled.shape[-2:])
                yield item, scaled

    for items, x in _batches(read(), batch):
        with torch.no_grad():
            act = model(x, [layer])[layer]
        total += act.mean(dim=(2, 3)).sum(dim=0).double().cpu()
        values, ys, xs = _peaks(act, _radius(field(model, layer, tuple(x.shape[-2:]))), top * POOL_PER_SCALE)
        item = torch.tensor(items, device=act.device).view(-1, 1, 1).expand_as(ys)
        where = torch.stack([item, ys, xs], dim=-1)
        pool.add(values.transpose(0, 1).flatten(1).double().cpu(), where.transpose(0, 1).flatten(1, 2).cpu())
        for index in (i // len(scales) for i in items):
            waiting[index] -= 1
            if not waiting[index]:
                del waiting[index]
                done += 1
        if callback is not None:
            callback(Tick(done, len(sources), time.perf_counter() - start))
    return pool, (total / (len(sources) * len(scales))).float(), shapes


def _select(
    pool: _Pool, channel: int, top: int, shapes: dict[int, tuple[int, int]], model: HookedModel, layer: str,
    n_scales: int,
) -> list[tuple[float, int, int, int]]:
    """A channel's best candidates, (value, item, y, x), skipping any that shows a spot already chosen
    from the same image (at another scale). Only positive activations count: a unit that does not fire
    (a ReLU's flat zeros) shows nothing about its channel."""
    chosen: list[tuple[float, int, int, int]] = []
    spots: list[tuple[int, tuple[float, ...]]] = []
    for value, (item, y, x) in zip(pool.values[channel].tolist(), pool.where[channel].tolist()):
        if item < 0 or value <= 0 or len(chosen) == top:
            break
        height, width = shapes[item]
        upper, left, lower, right = field(model, layer, (height, width)).box(y, x)
        spot = (upper / height, left / width, lower / height, right / width)
        source = item // n_scales
        if any(s == source and _same_spot(spot, other) for s, other in spots):
            continue
        chosen.append((value, item, y, x))
        spots.append((source, spot))
    return chosen


def _gather(
    model: HookedModel, layer: str, sources: list[ImageSource], scales: Sequence[int], channels: list[int],
    picks: list[list[tuple[float, int, int, int]]], top: int, guided: bool,
) -> dict[str, Tensor | None]:
    """Crop every chosen patch (and its guided map), reading each image once more."""
    rows = len(channels)
    sample = field(model, layer, (max(scales), max(scales)))
    side = min(max(sample.size), MAX_PATCH)
    whole = torch.long
    out = {
        "values": torch.full((rows, top), math.nan, dtype=torch.float64), "image": torch.full((rows, top), -1, dtype=whole),
        "scale": torch.zeros(rows, top, dtype=whole), "y": torch.zeros(rows, top, dtype=whole),
        "x": torch.zeros(rows, top, dtype=whole), "boxes": torch.zeros(rows, top, 4, dtype=whole),
        "supports": torch.zeros(rows, top, 4, dtype=whole),
        "sizes": torch.zeros(rows, top, 2, dtype=whole), "patches": torch.full((rows, top, 3, side, side), BORDER),
        "guided": torch.full((rows, top, 3, side, side), 0.5) if guided else None,
    }
    by_source: dict[int, list[tuple[int, int, tuple[float, int, int, int]]]] = {}
    for r, chosen in enumerate(picks):
        for k, pick in enumerate(chosen):
            by_source.setdefault(pick[1] // len(scales), []).append((r, k, pick))
    for index, wanted in sorted(by_source.items()):
        image = as_image(sources[index], None, model.device)
        resized = {scale: resize(image, scale) for scale in {scales[pick[1] % len(scales)] for _r, _k, pick in wanted}}
        for r, k, (value, item, y, x) in wanted:
            scaled = resized[scales[item % len(scales)]]
            rf = field(model, layer, tuple(scaled.shape[-2:]))
            box, support = rf.box(y, x), rf.support(y, x)
            out["values"][r, k], out["image"][r, k], out["scale"][r, k] = value, index, scales[item % len(scales)]
            out["y"][r, k], out["x"][r, k] = y, x
            out["boxes"][r, k], out["supports"][r, k] = torch.tensor(box), torch.tensor(support)
            out["sizes"][r, k] = torch.tensor(scaled.shape[-2:])
            out["patches"][r, k] = resize(_crop(scaled, box, support, BORDER), (side, side))[0].float().cpu()
            if guided:
                raw = gradient(model, scaled, Target(layer, channels[r], y, x), "guided")
                shown = display(_crop(raw, box, support, 0.0), "guided", scaled)
                out["guided"][r, k] = resize(shown, (side, side))[0].float().cpu()
    return out
