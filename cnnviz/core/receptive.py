"""Receptive fields, computed exactly from the operations a layer's forward pass runs.

The units of a layer sit on a regular grid: along each axis, unit ``i`` sees the input pixels
``[start + i * stride, start + i * stride + size)``; pixels outside the image are padding, so ``start``
is often negative. ``field(model, layer, (H, W))`` finds ``start``, ``stride`` and ``size`` per axis
by running the network on the meta device (shapes only: no arithmetic, no memory) under a dispatch
mode that sees every aten operation and composes the grids:

- convolutions and poolings: kernel, stride, padding and dilation (depthwise ones alike);
- explicit zero pads (TensorFlow "same" padding, which depends on the input size and puts the odd pixel
  after): they shift ``start``, which is why a field belongs to one input size;
- element-wise operations, normalisations, residual sums and concatenations: the union of their
  inputs' fields; reshapes, permutes and linear layers over channels (ShuffleNet's channel shuffle,
  ConvNeXt's (N, H, W, C) blocks) carry the grid to wherever they put its rows and columns;
- global pooling (a 1x1 output): the whole map.

It also tracks which pixels the layer sees at all: a strided layer that drops the last row of its
input never sees the pixels only that row covered, so a unit's ``support`` (what can change it) is its
box within the image and within those pixels. This is exact for any network built from these, branches
included, and needs no gradients; the tests check it against the support of a gradient. One departure:
a 1x1 map broadcast over every position (squeeze-excitation's channel weights) is context without a
position and is not counted, or every unit after it would see the whole image. Operations that mix
positions by other rules (upsampling, transposed convolutions, attention) leave the field unknown: a
clear error, as do reflection and replication pads (their borders repeat units from inside the map).
"""

from __future__ import annotations

import copy
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from cnnviz.core.hooked import HookedModel
from cnnviz.core.layers import LOGITS
from cnnviz.errors import CnnvizError

aten = torch.ops.aten


@dataclass(frozen=True)
class Span:
    """One axis of a layer's grid: unit ``i`` sees input pixels [start + i*stride, start + i*stride + size),
    of which only those in [seen_from, seen_to) can reach it: the image's pixels that some real unit of
    every layer below covers (a strided layer that drops the map's last row never sees its pixels)."""

    start: int
    stride: int
    size: int
    seen_from: int
    seen_to: int

    def then(self, kernel: int, stride: int, padding: int = 0, dilation: int = 1) -> Span:
        """The grid after a sliding window (convolution or pooling) over this one."""
        return replace(self, start=self.start - padding * self.stride, stride=self.stride * stride,
                       size=self.size + (kernel - 1) * dilation * self.stride)

    def shifted(self, units: int) -> Span:
        """The grid after ``units`` of padding before its first unit (negative: cropped)."""
        return replace(self, start=self.start - units * self.stride)

    def covering(self, units: int) -> Span:
        """The grid with ``units`` real units: what they cannot see leaves ``seen_from``-``seen_to``."""
        return replace(self, seen_from=max(self.seen_from, self.start),
                       seen_to=min(self.seen_to, self.start + (units - 1) * self.stride + self.size))

    def union(self, other: Span) -> Span | None:
        """Each unit sees what it sees in either grid (a sum of branches); None if the grids differ in stride."""
        if other.stride != self.stride:
            return None
        start = min(self.start, other.start)
        return Span(start, self.stride, max(self.start + self.size, other.start + other.size) - start,
                    min(self.seen_from, other.seen_from), max(self.seen_to, other.seen_to))

    def whole(self, units: int) -> Span:
        """One unit that sees all ``units`` of this grid (global pooling)."""
        return replace(self, stride=self.stride * units, size=self.size + (units - 1) * self.stride)


@dataclass(frozen=True)
class Field:
    """The receptive field of every unit of a layer at one input size, per axis (rows ``y``, columns ``x``)."""

    y: Span
    x: Span

    @property
    def size(self) -> tuple[int, int]:
        return self.y.size, self.x.size

    @property
    def stride(self) -> tuple[int, int]:
        return self.y.stride, self.x.stride

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """The input pixels of unit (row, col): (top, left, bottom, right), bottom and right exclusive;
        they may lie outside the image (padding)."""
        top, left = self.y.start + row * self.y.stride, self.x.start + col * self.x.stride
        return top, left, top + self.y.size, left + self.x.size

    def support(self, row: int, col: int) -> tuple[int, int, int, int]:
        """The part of the box that can change the unit: inside the image, and seen by the layers below."""
        top, left, bottom, right = self.box(row, col)
        return (max(top, self.y.seen_from), max(left, self.x.seen_from),
                min(bottom, self.y.seen_to), min(right, self.x.seen_to))


class _Unknown:
    """The field of a tensor made by an operation these rules do not cover (named for the error)."""

    def __init__(self, op: str) -> None:
        self.op = op


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (int(value[0]), int(value[0])) if len(value) == 1 else (int(value[0]), int(value[1]))


def _window(field: Field, kernel, stride, padding, dilation=1) -> Field:
    k, s, p, d = _pair(kernel), _pair(stride or kernel), _pair(padding), _pair(dilation)
    return Field(field.y.then(k[0], s[0], p[0], d[0]), field.x.then(k[1], s[1], p[1], d[1]))


def _convolution(field: Field, a: dict, _units: tuple[int, int]) -> Field | _Unknown:
    if a["transposed"]:
        return _Unknown("a transposed convolution")
    return _window(field, tuple(a["weight"].shape[-2:]), a["stride"], a["padding"], a["dilation"])


def _max_pool(field: Field, a: dict, _units: tuple[int, int]) -> Field:
    return _window(field, a["kernel_size"], a["stride"], a["padding"], a["dilation"])


def _avg_pool(field: Field, a: dict, _units: tuple[int, int]) -> Field:
    return _window(field, a["kernel_size"], a["stride"], a["padding"])


def _pad(field: Field, a: dict, _units: tuple[int, int]) -> Field:
    """Padding (left, right[, top, bottom]) moves the grid's first unit to the left and up."""
    pad = a["pad"]
    return Field(field.y.shifted(pad[2] if len(pad) > 2 else 0), field.x.shifted(pad[0]))


def _repeating_pad(field: Field, a: dict, _units: tuple[int, int]) -> _Unknown:
    """A reflection or replication pad fills its border with copies of units inside the map, so a unit near
    the edge sees those units' pixels, not the grid's next ones: no grid describes it."""
    return _Unknown("a reflection or replication pad (its border repeats units from inside the map)")


def _adaptive(field: Field, a: dict, units: tuple[int, int]) -> Field | _Unknown:
    spans = []
    for span, n, out in zip((field.y, field.x), units, _pair(a["output_size"])):
        if out == n:
            spans.append(span)
        elif n % out == 0:
            spans.append(span.then(n // out, n // out))
        else:
            return _Unknown(f"an adaptive pooling from {n} to {out}")
    return Field(*spans)


_RULES = {
    aten.convolution.default: _convolution,
    aten.max_pool2d_with_indices.default: _max_pool,
    aten.max_pool2d.default: _max_pool,
    aten.avg_pool2d.default: _avg_pool,
    aten.constant_pad_nd.default: _pad,
    aten.reflection_pad2d.default: _repeating_pad,
    aten.replication_pad2d.default: _repeating_pad,
    aten._adaptive_avg_pool2d.default: _adaptive,
    aten.adaptive_max_pool2d.default: _adaptive,
}


def _arguments(func, args: tuple, kwargs: dict | None) -> dict:
    """An operation's arguments by name, defaults filled in."""
    schema = func._schema.arguments
    bound = {a.name: a.default_value for a in schema if a.has_default_value()}
    bound.update(zip((a.name for a in schema), args))
    bound.update(kwargs or {})
    return bound


@dataclass(frozen=True)
class _Map:
    """A tensor that holds a grid of units: their field, the dims holding rows and columns (or one dim
    holding both, row after row, as a linear layer on a flattened map sees them) and the grid's size."""

    field: Field
    dims: tuple[int, ...]
    grid: tuple[int, int]

    def sizes(self) -> list[int]:
        return list(self.grid) if len(self.dims) == 2 else [self.grid[0] * self.grid[1]]


def _prefixes(shape: Sequence[int]) -> list[int]:
    """The number of elements before one step along each dim (row-major)."""
    return list(itertools.accumulate([1, *shape[:-1]], operator.mul))


def _reshaped(before: Sequence[int], after: Sequence[int], m: _Map) -> tuple[int, ...] | None:
    """Where a reshape (a view keeping each element's row-major index) puts the grid: the same dims,
    the rows and columns merged into one dim, or one such dim split back; None if they are mixed up."""
    p_in, p_out = _prefixes(before), _prefixes(after)
    start = p_in[m.dims[0]]
    exact = [next((d for d in range(len(after)) if p_out[d] == p_in[i] and after[d] == before[i]), None) for i in m.dims]
    if None not in exact:
        return tuple(exact)
    h, w = m.grid
    if len(m.dims) == 1 or m.dims[1] == m.dims[0] + 1:
        for d in range(len(after)):
            if p_out[d] == start and after[d] == h * w:
                return (d,)
            if p_out[d] == start and d + 1 < len(after) and (after[d], after[d + 1]) == (h, w):
                return (d, d + 1)
    return None


def _locate(source: Tensor, m: _Map, out: Tensor) -> _Map | None:
    """The grid of ``source`` in ``out``: at the same dims (element-wise operations, normalisations),
    reduced to one unit (global pooling, kept dims), or moved by a reshape; None if it cannot be found."""
    if out.dim() == source.dim():
        here = [out.shape[d] for d in m.dims]
        if here == m.sizes():
            return m
        if all(n == 1 for n in here):
            return _Map(Field(m.field.y.whole(m.grid[0]), m.field.x.whole(m.grid[1])), m.dims, (1, 1))
    if out.numel() == source.numel():
        dims = _reshaped(source.shape, out.shape, m)
        if dims is not None:
            return _Map(m.field, dims, m.grid)
    return None


_ROWS = {aten.mm.default: "self", aten.bmm.default: "self", aten.addmm.default: "mat1", aten.baddbmm.default: "batch1"}
_MOVES = {aten.permute.default, aten.transpose.int}


def _window_rule(func, a: dict, first: Tensor, m: _Map, out: Tensor) -> _Map | _Unknown:
    """A convolution, pooling or pad of an (N, C, H, W) map; its units see only what they cover."""
    if first.dim() != 4 or m.dims != (2, 3):
        return _Unknown(f"{func.name()} on a map not laid out as (N, C, H, W)")
    field = _RULES[func](m.field, a, tuple(first.shape[-2:]))
    if isinstance(field, _Unknown):
        return field
    rows, cols = out.shape[-2:]
    return _Map(Field(field.y.covering(rows), field.x.covering(cols)), (2, 3), (rows, cols))


def _move_rule(func, a: dict, first: Tensor, m: _Map) -> _Map:
    """A permute or transpose: the grid's dims move with the others."""
    order = list(range(first.dim()))
    if func is aten.transpose.int:
        i, j = a["dim0"] % first.dim(), a["dim1"] % first.dim()
        order[i], order[j] = order[j], order[i]
    else:
        order = [d % first.dim() for d in a["dims"]]
    return _Map(m.field, tuple(order.index(d) for d in m.dims), m.grid)


def _rows_rule(func, first: Tensor, m: _Map, others: list[Tensor]) -> _Map | _Unknown:
    """A matrix product whose rows are the map's positions (a linear layer over channels) keeps the grid."""
    if others:
        return _Unknown(f"{func.name()} of two maps (attention mixes every position)")
    if first.dim() - 1 in m.dims:
        return _Unknown(f"{func.name()} over the positions of a map")
    return m


def _union_rule(func, inputs: list[tuple[Tensor, _Map | _Unknown]], out: Tensor) -> _Map | _Unknown:
    """Element-wise operations, sums and concatenations: the union of the inputs' grids where ``out``
    holds them."""
    found: list[_Map] = []
    for t, m in inputs:
        if isinstance(m, _Unknown):
            return m
        if m.grid == (1, 1) and out.numel() > t.numel():
            continue  # broadcast context (squeeze-excitation): no position of its own
        located = _locate(t, m, out)
        if located is None:
            return _Unknown(f"{func.name()}, which moves the map's positions")
        found.append(located)
    if not found:
        return _Unknown(f"{func.name()} of context without positions")
    result = found[0]
    for other in found[1:]:
        if (other.dims, other.grid) != (result.dims, result.grid):
            return _Unknown(f"{func.name()} of differently laid out maps")
        y, x = result.field.y.union(other.field.y), result.field.x.union(other.field.x)
        if y is None or x is None:
            return _Unknown(f"{func.name()} of grids with different strides")
        result = _Map(Field(y, x), result.dims, result.grid)
    return result


class _Tracer(TorchDispatchMode):
    """Follows the grid of units through the aten operations of one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.maps = WeakTensorKeyDictionary()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [(t, self.maps[t]) for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor) and t in self.maps]
        if inputs:
            a = _arguments(func, args, kwargs)
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor):
                    self.maps[t] = self._rule(func, a, inputs, t)
        return out

    @staticmethod
    def _rule(func, a: dict, inputs: list[tuple[Tensor, _Map | _Unknown]], out: Tensor) -> _Map | _Unknown:
        first = a.get(_ROWS.get(func, "input"), a.get("self"))
        m = next((m for t, m in inputs if t is first), None)
        if isinstance(m, _Unknown):
            return m
        if m is not None and func in _RULES:
            return _window_rule(func, a, first, m, out)
        if m is not None and func in _MOVES:
            return _move_rule(func, a, first, m)
        if m is not None and func in _ROWS:
            return _rows_rule(func, first, m, [t for t, _ in inputs if t is not first])
        return _union_rule(func, inputs, out)


@lru_cache(maxsize=4)
def _meta_net(model: HookedModel) -> nn.Module:
    """The model's network with its weights on the meta device, in float32 whatever their type (geometry
    does not depend on it): same modules, no storage, no arithmetic."""
    memo = {}
    for tensor in [*model.net.parameters(), *model.net.buffers()]:
        meta = torch.empty_like(tensor, device="meta", dtype=torch.float32 if tensor.is_floating_point() else tensor.dtype)
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=False) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model.net, memo)


def _layer_field(tracer: _Tracer, output: object) -> Field | _Unknown | None:
    """The field of a layer's output: None unless it is a 4-D map; its units must be laid out (N, C, H, W)."""
    if not isinstance(output, Tensor) or output.dim() != 4:
        return None
    m = tracer.maps.get(output, _Unknown("an operation that does not keep a spatial map"))
    if isinstance(m, _Map) and m.dims != (2, 3):
        return _Unknown("a layout other than (N, C, H, W)")
    return m.field if isinstance(m, _Map) else m


@lru_cache(maxsize=64)
def _fields(model: HookedModel, shape: tuple[int, int]) -> dict[tuple[str, int], Field | _Unknown | None]:
    """The field of every module call's output, by (module path, call), from one forward pass. Each is
    taken when the call returns: a later in-place operation (a residual ``+=``) changes the tensor, not
    what that layer output. A pass that fails part-way (an input too small for the deeper layers, a VGG
    trunk without a classifier) keeps what it reached."""
    net = _meta_net(model)
    tracer = _Tracer()
    image = torch.empty(1, 3, *shape, device="meta")
    tracer.maps[image] = _Map(Field(Span(0, 1, 1, 0, shape[0]), Span(0, 1, 1, 0, shape[1])), (2, 3), shape)
    fields: dict[tuple[str, int], Field | _Unknown | None] = {}
    calls: dict[str, int] = {}

    def snapshot(path: str):
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            call = calls[path] = calls.get(path, -1) + 1
            fields[(path, call)] = _layer_field(tracer, output)
        return hook

    handles = [module.register_forward_hook(snapshot(path)) for path, module in net.named_modules() if path]
    try:
        with torch.no_grad(), tracer:
            net(image)
    except (RuntimeError, CnnvizError):
        pass
    finally:
        for handle in handles:
            handle.remove()
    return fields


def field(model: HookedModel, layer: str, shape: tuple[int, int] = (224, 224)) -> Field | None:
    """The receptive field of ``layer``'s units for an input of ``shape`` (H, W) px; None for a layer
    without a spatial map (fully connected, pooled vectors, logits). Cached per model and input size.
    An operation with no rule here, or an input too small to reach the layer, is a clear error."""
    named = model.table.get(layer)
    if named.name == LOGITS:
        return None
    size = (int(shape[0]), int(shape[1]))
    fields = _fields(model, size)
    if (named.path, named.call) not in fields:
        raise CnnvizError(f"a {size[0]}x{size[1]} input is too small to reach {named.name} in {model.name}")
    result = fields[(named.path, named.call)]
    if isinstance(result, _Unknown):
        raise CnnvizError(f"cannot compute the receptive field of {named.name} in {model.name}: it passes through {result.op}")
    return result
