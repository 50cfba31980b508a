"""Objectives of feature visualization (Olah et al. 2017; Lucid's ``objectives``): what an image should
maximise, as composable ``Objective``s over named layers: ``channel``, ``neuron``, ``diversity``.

The per-image values they are made of (``channel_mean``, ``neuron_value``) are also the scores of a
``cnnviz.analyzers.target.Target``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from cnnviz.losses import Activations, gram


def channel_mean(activation: Tensor, channel: int) -> Tensor:
    """Mean activation of one channel, per batch item (B,) (Lucid's ``channel`` objective).

    On (B, C) outputs such as ``logits`` this is the score of class ``channel``.
    """
    return activation[:, channel].reshape(activation.shape[0], -1).mean(dim=1)


def neuron_value(activation: Tensor, channel: int, y: int | None = None, x: int | None = None,
                 frame: tuple[int, int] | None = None) -> Tensor:
    """One unit per batch item (B,): channel at (y, x); the centre when the position is not given.

    ``frame`` is the size (H, W) of the map the position was given on. A larger map (the image grown by
    random padding before the forward pass) is taken as centred on it, as Lucid takes positions relative
    to the centre, so that the same unit of the picture is meant, not one shifted by the padding."""
    if activation.dim() == 2:
        return activation[:, channel]
    h, w = activation.shape[-2:]
    dy, dx = ((h - frame[0]) // 2, (w - frame[1]) // 2) if frame is not None else (0, 0)
    return activation[:, channel, h // 2 if y is None else y + dy, w // 2 if x is None else x + dx]


class Objective:
    """What to maximise: one differentiable scalar from the activations of named layers (Lucid's
    objectives). Objectives compose: ``a + 0.5 * b``, ``a - b``, ``a * b``, ``-a``, ``a / 2``; the sum's
    gradient is the sum of the gradients. ``layers`` are what the forward pass must reach."""

    def __init__(self, fn: Callable[[Activations], Tensor], layers: Sequence[str], name: str) -> None:
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name

    def __call__(self, acts: Activations) -> Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return self.name

    def _join(self, other: Objective | float, op: Callable[[Tensor, Tensor | float], Tensor], symbol: str) -> Objective:
        if isinstance(other, Objective):
            return Objective(lambda acts: op(self(acts), other(acts)), self.layers + other.layers, f"({self.name} {symbol} {other.name})")
        return Objective(lambda acts: op(self(acts), float(other)), self.layers, f"({self.name} {symbol} {other:g})")

    def __add__(self, other: Objective | float) -> Objective:
        return self._join(other, lambda a, b: a + b, "+")

    def __radd__(self, other: float) -> Objective:
        return self if other == 0 else self + other

    def __sub__(self, other: Objective | float) -> Objective:
        return self._join(other, lambda a, b: a - b, "−")

    def __mul__(self, other: Objective | float) -> Objective:
        return self._join(other, lambda a, b: a * b, "×")

    def __rmul__(self, other: float) -> Objective:
        return Objective(lambda acts: float(other) * self(acts), self.layers, f"{other:g}·{self.name}")

    def __truediv__(self, other: float) -> Objective:
        return self * (1.0 / float(other))

    def __neg__(self) -> Objective:
        return -1.0 * self


def _items(values: Tensor, items: Sequence[int] | None) -> Tensor:
    """The sum of per-item ``values`` (B,) over ``items`` (None: all)."""
    return (values if items is None else values[list(items)]).sum()


def channel(layer: str, index: int, items: Sequence[int] | None = None) -> Objective:
    """Channel ``index``'s mean activation (class ``index``'s score on ``logits``), summed over batch ``items``
    (None: all)."""
    return Objective(lambda acts: _items(channel_mean(acts[layer], index), items), [layer], f"{layer}:{index}")


def neuron(layer: str, index: int, y: int | None = None, x: int | None = None, items: Sequence[int] | None = None,
           frame: tuple[int, int] | None = None) -> Objective:
    """One unit of channel ``index`` (the centre if no position is given), summed over batch ``items``;
    ``frame``: the map size the position refers to (see ``neuron_value``)."""
    return Objective(lambda acts: _items(neuron_value(acts[layer], index, y, x, frame), items), [layer],
                     f"{layer}:{index}@{y},{x}")


def diversity(layer: str, items: Sequence[int] | None = None) -> Objective:
    """Minus the mean cosine similarity between the Gram matrices of ``layer`` of each pair of batch
    ``items`` (Olah et al. 2017): adding λ·diversity to an objective pushes the images of a batch apart
    in style while each keeps its objective high. Zero for a single image."""

    def fn(acts: Activations) -> Tensor:
        features = acts[layer] if items is None else acts[layer][list(items)]
        b = features.shape[0]
        if b < 2:
            return features.new_zeros(())
        grams = torch.nn.functional.normalize(gram(features).flatten(1), dim=1)
        similarity = grams @ grams.T
        return -(similarity.sum() - similarity.diagonal().sum()) / (b * (b - 1))

    return Objective(fn, [layer], f"diversity({layer})")
