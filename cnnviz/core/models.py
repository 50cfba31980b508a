"""Model specs: which networks cnnviz knows, how to build them, and how their layers are named."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torchvision
from torch import Tensor, nn

from cnnviz.core.layers import Layer, LayerTable, module_layers, vgg_layers
from cnnviz.errors import CnnvizError, unknown

VGG_NAMES = ("vgg11", "vgg13", "vgg16", "vgg19")


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


@dataclass(frozen=True)
class ModelSpec:
    """A network cnnviz can load: its name and whether it gets the papers' VGG layer names."""

    name: str

    @property
    def is_vgg(self) -> bool:
        return self.name in VGG_NAMES

    @property
    def default_weights(self) -> str:
        """The offline default for VGG-16 is the bundled file; everything else needs ImageNet weights."""
        return "bundled" if self.name == "vgg16" else "imagenet"

    def build(self, features_only: bool = False) -> nn.Module:
        """An un-initialised torchvision network (or VGG's convolutions only)."""
        net = torchvision.models.get_model(self.name, weights=None)
        if features_only:
            if not self.is_vgg:
                raise CnnvizError(f"{self.name} has no separate convolution stack")
            return VGGTrunk(net.features)
        return net

    def table(self, net: nn.Module) -> LayerTable:
        layers: list[Layer] = vgg_layers(net) if self.is_vgg else module_layers(net)
        return LayerTable(layers, self.name)


def get_spec(name: str) -> ModelSpec:
    """The spec of a model by name; unknown names get the closest suggestions."""
    if name not in model_names():
        raise unknown("model", name, model_names())
    return ModelSpec(name)
