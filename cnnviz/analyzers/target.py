"""What saliency explains and gradient ascent maximises: a class score, a channel's mean activation,
or one neuron of a named layer; one scalar per image."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cnnviz.core.hooked import HookedModel
from cnnviz.core.layers import LOGITS
from cnnviz.errors import CnnvizError, CnnvizNote, unknown
from cnnviz.losses import Activations
from cnnviz.optvis.objectives import Objective, channel, channel_mean, neuron, neuron_value

TOP = "top"
MAX = "max"


@dataclass(frozen=True)
class Target:
    """A class score (``layer`` = ``logits``, ``channel`` = class index, ``name`` = class name), else
    channel ``channel`` of ``layer``: its mean activation, or the neuron at (y, x) if a position is given,
    on a map of size ``frame`` (a map grown by padding is taken as centred on it)."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None
    name: str | None = None
    frame: tuple[int, int] | None = None

    @property
    def is_neuron(self) -> bool:
        return self.y is not None or self.x is not None

    def score(self, acts: Activations) -> Tensor:
        """The target's value per batch item, shape (B,)."""
        activation = acts[self.layer]
        if self.is_neuron:
            return neuron_value(activation, self.channel, self.y, self.x, self.frame)
        return channel_mean(activation, self.channel)

    def objective(self, items: Sequence[int] | None = None) -> Objective:
        """The target as a composable ``Objective``, summed over batch ``items`` (None: all)."""
        if self.is_neuron:
            return neuron(self.layer, self.channel, self.y, self.x, items, self.frame)
        return channel(self.layer, self.channel, items)

    @property
    def label(self) -> str:
        """``class brick``, ``relu4_3 channel 10``, ``relu4_3 channel 10 at (3, 4)``."""
        if self.layer == LOGITS:
            return f"class {self.name if self.name is not None else self.channel}"
        where = f" at ({self.y}, {self.x})" if self.is_neuron else ""
        return f"{self.layer} channel {self.channel}{where}"

    @property
    def tag(self) -> str:
        """The target in a file name: ``brick``, ``relu4_3-c10``, ``relu4_3-c10-y3x4``."""
        if self.layer == LOGITS:
            return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(self.name or self.channel))
        where = f"-y{self.y}x{self.x}" if self.is_neuron else ""
        return f"{self.layer}-c{self.channel}{where}"

    def params(self) -> dict[str, Any]:
        """The target's fields for a run record."""
        return {"target": self.label, "target_tag": self.tag, "target_layer": self.layer, "channel": self.channel, "y": self.y,
                "x": self.x, "class_name": self.name}


def is_class(layer: str | None) -> bool:
    """Whether a target on ``layer`` (None: no layer given) is a class score."""
    return layer is None or layer == LOGITS


def classes_of(model: HookedModel) -> tuple[str, ...]:
    """The model's class names; a clear error if it has no class scores."""
    if model.classes is None:
        raise CnnvizError(
            f"{model.name} ({model.weights.id}) has no class scores: use --model {model.spec.name}+head:FILE "
            "(a head from cnnviz head train) or --weights imagenet"
        )
    return model.classes


def _words(name: str) -> frozenset[str]:
    return frozenset(name.lower().replace("-", " ").replace(",", " ").replace("'", "").split())


def class_index(model: HookedModel, name: str | int) -> int:
    """The index of a class given by name or index. Names match case-insensitively; a longer everyday
    name matches the one class whose words it contains all of, preferring the longest ("tabby cat" is
    torchvision's "tabby", "tiger cat" stays "tiger cat", not "tiger"), when each of its other words is a
    word of some class name ("volcano-dream-x" is no class). A match that is not exact is said in a
    ``CnnvizNote``. Unknown names suggest the closest."""
    classes = classes_of(model)
    if isinstance(name, int) or name.strip().isdigit():
        index = int(name)
        if not 0 <= index < len(classes):
            raise CnnvizError(f"class index {index} is out of range for {model.name}: 0 to {len(classes) - 1}")
        return index
    lowered = {c.lower(): i for i, c in enumerate(classes)}
    if name.strip().lower() in lowered:
        return lowered[name.strip().lower()]
    words = _words(name)
    contained = [(len(_words(c)), i) for i, c in enumerate(classes) if _words(c) and _words(c) <= words]
    longest = [i for n, i in contained if n == max(contained)[0]] if contained else []
    vocabulary = frozenset().union(*(_words(c) for c in classes))
    if len(longest) == 1 and words - _words(classes[longest[0]]) <= vocabulary:
        warnings.warn(CnnvizNote(f"'{name}' taken as class {longest[0]} {classes[longest[0]]}"), stacklevel=2)
        return longest[0]
    raise unknown(f"class of {model.name}", name, classes)


def class_probabilities(model: HookedModel, image: Tensor) -> Tensor:
    """The softmax of the model's class scores for each image of a batch, (B, classes), without grad."""
    with torch.no_grad():
        return model(image, [LOGITS])[LOGITS].float().softmax(dim=1)


def top_classes(model: HookedModel, image: Tensor, k: int = 5) -> list[tuple[str, float]]:
    """The model's ``k`` most probable classes for ``image`` (1, 3, H, W), with their softmax probabilities."""
    classes = classes_of(model)
    values, indices = class_probabilities(model, image)[0].topk(min(k, len(classes)))
    return [(classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def check_target_given(target: str | int | None, layer: str | None) -> None:
    """Refuse a request that names neither a class nor a layer (gradient ascent needs one of them)."""
    if is_class(layer) and target is None:
        raise CnnvizError("give a class (--class NAME or index) or a layer and channel (--layer relu4_3 --channel 10)")


def resolve_target(
    model: HookedModel,
    image: Tensor,
    target: str | int | None = None,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
) -> Target:
    """Check a target against the model and ``image`` (1, 3, H, W) and resolve ``top`` (the image's
    highest class score, the default for class targets) and ``max`` (its most activated channel)."""
    if is_class(layer):
        if channel is not None or y is not None or x is not None:
            raise CnnvizError("--channel, --y and --x go with --layer, not with a class")
        classes = classes_of(model)
        if target is None or target == TOP:
            with torch.no_grad():
                index = int(model(image, [LOGITS])[LOGITS][0].argmax())
        else:
            index = class_index(model, target)
        return Target(LOGITS, index, name=classes[index])
    if target is not None:
        raise CnnvizError("give either a class or --layer (with --channel), not both")
    model.table.get(layer)
    with torch.no_grad():
        activation = model(image, [layer])[layer]
    channels = activation.shape[1]
    if channel is None:
        raise CnnvizError(f"--layer {layer} needs --channel (0 to {channels - 1}, or '{MAX}')")
    if channel == MAX:
        channel = int(activation[0].reshape(channels, -1).mean(dim=1).argmax())
    elif isinstance(channel, str) and not channel.isdigit():
        raise CnnvizError(f"--channel must be a whole number or '{MAX}', got '{channel}'")
    channel = int(channel)
    if not 0 <= channel < channels:
        raise CnnvizError(f"channel {channel} is out of range for {layer}: 0 to {channels - 1}")
    if y is None and x is None:
        return Target(layer, channel)
    if activation.dim() != 4:
        raise CnnvizError(f"{layer} has no spatial positions: leave out --y and --x")
    h, w = activation.shape[-2:]
    y, x = h // 2 if y is None else y, w // 2 if x is None else x
    if not (0 <= y < h and 0 <= x < w):
        raise CnnvizError(f"position ({y}, {x}) is outside {layer}'s {h}x{w} map at this image size")
    return Target(layer, channel, y, x, frame=(h, w))
