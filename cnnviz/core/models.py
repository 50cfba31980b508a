"""Model specs: which networks cnnviz knows, how to build them, and how their layers are named."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torchvision
from torch import Tensor, nn

from cnnviz.core.efficientnet import EfficientNetLite0, efficientnet_layers
from cnnviz.core.layers import Layer, LayerTable, module_layers, vgg_layers
from cnnviz.errors import CnnvizError, unknown

VGG_NAMES = ("vgg11", "vgg13", "vgg16", "vgg19")
# Networks cnnviz builds itself (not in torchvision), each with bundled weights.
OWN_MODELS = ("efficientnet_lite0",)
HEAD = "+head"


class VGGTrunk(nn.Module):
    """VGG convolution layers with an optional small classifier head (no fc6-fc8).

    The bundled VGG-16 has only its convolutions; a head trained by ``cnnviz head train`` turns the
    pooled relu5_3 features into class scores.
    """

    def __init__(self, features: nn.Sequential, head: nn.Module | None = None) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        if self.head is None:
            raise CnnvizError("this model has no classifier: use a head (--model vgg16+head) or --weights imagenet")
        return self.head(features)


@lru_cache(maxsize=1)
def model_names() -> tuple[str, ...]:
    """Every torchvision image classification model name."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def known_names() -> tuple[str, ...]:
    """Every model name ``get_spec`` accepts: torchvision's and cnnviz's own."""
    return (*model_names(), *OWN_MODELS)


@dataclass(frozen=True)
class ModelSpec:
    """A network cnnviz can load: its name, whether it gets the papers' VGG layer names, and an
    optional classifier head on its convolutions (``bundled`` or a file; see ``cnnviz.core.head``)."""

    name: str
    head: str | None = None

    @property
    def is_vgg(self) -> bool:
        return self.name in VGG_NAMES

    @property
    def label(self) -> str:
        """The name as the user writes it: ``vgg16``, ``vgg16+head``, ``vgg16+head:FILE``."""
        if self.head is None:
            return self.name
        return self.name + HEAD + ("" if self.head == "bundled" else f":{self.head}")

    @property
    def is_own(self) -> bool:
        """Built by cnnviz (``efficientnet_lite0``), not by torchvision."""
        return self.name in OWN_MODELS

    def categories(self) -> tuple[str, ...]:
        """The ImageNet class names of torchvision's weights for this network (no download); our
        own networks use torchvision's ImageNet list (the same 1000 classes in the same order)."""
        name = "efficientnet_b0" if self.is_own else self.name
        return tuple(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])

    @property
    def default_weights(self) -> str:
        """The offline default for VGG-16 and our own networks is the bundled file; everything else
        needs ImageNet weights."""
        return "bundled" if self.name == "vgg16" or self.is_own else "imagenet"

    def build(self, features_only: bool = False) -> nn.Module:
        """An un-initialised network (or VGG's convolutions only, always so with a head)."""
        if (features_only or self.head) and not self.is_vgg:
            raise CnnvizError(f"{self.name} has no separate convolution stack")
        if self.is_own:
            return EfficientNetLite0()
        net = torchvision.models.get_model(self.name, weights=None)
        if features_only or self.head:
            return VGGTrunk(net.features)
        return net

    def table(self, net: nn.Module) -> LayerTable:
        if self.is_own:
            return LayerTable(efficientnet_layers(net), self.name)
        layers: list[Layer] = vgg_layers(net) if self.is_vgg else module_layers(net)
        return LayerTable(layers, self.name)


def get_spec(name: str) -> ModelSpec:
    """The spec of a model by name (``NAME``, ``NAME+head`` or ``NAME+head:FILE``); unknown names
    get the closest suggestions."""
    base, plus, head = name.partition(HEAD)
    if base not in known_names():
        raise unknown("model", base, known_names())
    if not plus:
        return ModelSpec(base)
    if base not in VGG_NAMES:
        raise CnnvizError(f"a classifier head goes on VGG convolutions only, not on {base}")
    if head and (not head.startswith(":") or head == ":"):
        raise CnnvizError(f"write a head as {base}+head (the bundled one) or {base}+head:FILE, not '{name}'")
    return ModelSpec(base, head[1:] or "bundled")
