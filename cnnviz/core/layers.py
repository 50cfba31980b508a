"""The one place for layer names: the papers' VGG names and module paths for other CNNs.

VGG layers are named as in the papers (conv1_1, relu1_1, ..., pool5; fc6, relu6, fc7, relu7, fc8 when
the classifier is present). Any other network's layers are named by their module paths
(``layer3.1.relu``); a module called more than once per forward (torchvision ResNet's ``relu`` in each
block) gets one name per call, as torchvision's ``create_feature_extractor`` names them:
``layer3.1.relu`` for the first call, ``layer3.1.relu_1`` for the second. ``logits`` always names the
network's output (class scores before softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnviz.errors import unknown

LOGITS = "logits"

# The 13 relu layers of VGG-16 from relu1_1 to relu5_3, the inversion sweep of Mahendran & Vedaldi's figure.
VGG16_RELUS = (
    "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3",
    "relu4_1", "relu4_2", "relu4_3", "relu5_1", "relu5_2", "relu5_3",
)


@dataclass(frozen=True)
class Layer:
    """One addressable layer: its user-facing name, module path, kind (conv, relu, pool, ...) and which
    call of the module it is (0: the first; modules reused within one forward have several)."""

    name: str
    path: str
    kind: str
    call: int = 0


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return "pool"
    if isinstance(module, nn.Linear):
        return "fc"
    return type(module).__name__.lower()


def vgg_layers(net: nn.Module) -> list[Layer]:
    """Name ``net.features`` (and ``net.classifier`` if present) with the papers' VGG names."""
    table: list[Layer] = []
    block, depth = 1, 0
    for index, module in net.features.named_children():
        kind = _kind(module)
        if kind == "conv":
            depth += 1
            name = f"conv{block}_{depth}"
        elif kind == "relu":
            name = f"relu{block}_{depth}"
        elif kind == "pool":
            name = f"pool{block}"
            block, depth = block + 1, 0
        else:
            name = f"{kind}{block}_{depth}"
        table.append(Layer(name, f"features.{index}", kind))
    classifier = getattr(net, "classifier", None)
    if isinstance(classifier, nn.Sequential):
        fc = 5
        for index, module in classifier.named_children():
            kind = _kind(module)
            if kind == "fc":
                fc += 1
            prefix = {"fc": "fc", "relu": "relu"}.get(kind, "drop")
            table.append(Layer(f"{prefix}{fc}", f"classifier.{index}", kind))
    return table


TRACE_SIZE = 224


def module_layers(net: nn.Module) -> list[Layer]:
    """Name every call of every sub-module of a generic CNN, in the order the calls finish during one
    forward pass of a blank ``TRACE_SIZE`` px image: the module path for the first call, ``path_N``
    for call N + 1. Modules the forward pass never calls are left out. A network that cannot take
    that image (a toy with fixed input shape) is listed untraced, one name per module."""
    calls: list[tuple[str, nn.Module]] = []
    handles = [
        module.register_forward_hook(lambda mod, _i, _o, path=path: calls.append((path, mod)))
        for path, module in net.named_modules() if path
    ]
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, TRACE_SIZE, TRACE_SIZE, device=device))
    except RuntimeError:
        return [Layer(path, path, _kind(module)) for path, module in net.named_modules() if path]
    finally:
        for handle in handles:
            handle.remove()
    seen: dict[str, int] = {}
    layers = []
    for path, module in calls:
        call = seen.get(path, 0)
        seen[path] = call + 1
        layers.append(Layer(path if call == 0 else f"{path}_{call}", path, _kind(module), call))
    return layers


class LayerTable:
    """Resolve layer names of one network to modules, with suggestions for unknown names."""

    def __init__(self, layers: list[Layer], model_name: str) -> None:
        self.layers = layers
        self.model_name = model_name
        self._by_name = {layer.name: layer for layer in layers}
        self._order = {layer.name: i for i, layer in enumerate(layers)}

    def __iter__(self):
        return iter(self.layers)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name or name == LOGITS

    def get(self, name: str) -> Layer:
        """The layer called ``name``; an unknown name is a user error naming the closest ones."""
        if name == LOGITS:
            return Layer(LOGITS, "", "output")
        try:
            return self._by_name[name]
        except KeyError:
            raise unknown(f"layer of {self.model_name}", name, [*self._by_name, LOGITS]) from None

    def names(self, kind: str | None = None) -> list[str]:
        """Layer names in forward order, optionally only those of one kind."""
        return [layer.name for layer in self.layers if kind is None or layer.kind == kind]

    def parse(self, spec: str) -> list[str]:
        """Parse a comma list of layer names ("all" = every relu layer), checking each name."""
        if spec.strip() == "all":
            return self.names("relu") if self.names("relu") else self.names()
        names = [part.strip() for part in spec.split(",") if part.strip()]
        for name in names:
            self.get(name)
        return names

    def up_to(self, name: str, kind: str = "relu") -> list[str]:
        """All layers of ``kind`` before (and including) ``name``, e.g. for Gatys' texture layer sets."""
        end = self._order[self.get(name).name]
        return [layer.name for layer in self.layers[: end + 1] if layer.kind == kind]
