"""HookedModel: run a network to the deepest requested layer and return {layer name: activation}."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import nullcontext
from functools import lru_cache

import torch
from torch import Tensor, nn

from cnnviz.core.convention import Convention
from cnnviz.core.device import autocast_dtype, check_precision, keep_freed_memory, resolve_device
from cnnviz.core.head import load_head
from cnnviz.core.layers import LOGITS, LayerTable
from cnnviz.core.models import ModelSpec, VGGTrunk, get_spec
from cnnviz.core.weights import Weights, build, resolve
from cnnviz.errors import CnnvizError


class _Stop(Exception):
    """Raised by a forward hook once every requested layer has been captured (early exit)."""


class HookedModel:
    """A frozen network with named layers, fed RGB images in [0, 1].

    ``model(image, ["relu2_2", "relu4_3"])`` normalises the image with the model's convention, runs
    the forward pass only as far as the deepest requested layer (a hook raises once all are
    captured) and returns the activations. Hooks are removed in ``finally``, so a failed pass leaves
    nothing behind. Gradients flow to ``image`` unless called under ``torch.no_grad``.
    Weights and inputs use the channels-last layout: about 20% faster convolutions on the CPU.
    ``classes`` names the outputs of ``logits`` (None: the network has no class scores).

    ``precision`` (auto, fp32, bf16, fp16) sets the dtype the forward pass is autocast to; activations
    come back as float32 whatever it is, so losses, the image and optimizer state stay fp32. ``auto``
    means exact fp32 except in the copy ``for_optimization()`` returns, which the optimizing analyzers use:
    they tolerate bf16's rounding, while saliency and patches report exact gradients and activations.
    """

    def __init__(
        self, net: nn.Module, spec: ModelSpec, weights: Weights, device: torch.device,
        classes: Sequence[str] | None = None, precision: str = "auto",
    ) -> None:
        check_precision(precision, device)
        self.net = net.to(device, memory_format=torch.channels_last)
        self.spec = spec
        self.weights = weights
        self.device = device
        self.classes = tuple(classes) if classes is not None else None
        self.table: LayerTable = spec.table(self.net)
        self.precision = precision
        self.autocast: torch.dtype | None = None if precision == "auto" else autocast_dtype(precision, device)
        self._modules = dict(self.net.named_modules())

    def for_optimization(self) -> HookedModel:
        """This model (sharing its network) with ``auto`` resolved for optimization: bf16 where the CPU
        or GPU computes it natively, fp32 elsewhere (``core.device.autocast_dtype``)."""
        fast = copy.copy(self)
        fast.autocast = autocast_dtype(self.precision, self.device)
        return fast

    def clone(self) -> HookedModel:
        """This model with a deep copy of its network: changing the copy's weights leaves this one as it is."""
        twin = copy.copy(self)
        twin.net = copy.deepcopy(self.net)
        twin._modules = dict(twin.net.named_modules())
        return twin

    def to(self, device: str | torch.device) -> HookedModel:
        """This model (its network moved, not copied) on ``device``."""
        return HookedModel(self.net, self.spec, self.weights, torch.device(device), self.classes, self.precision)

    @property
    def compute_precision(self) -> str:
        """The precision the forward pass runs in: fp32, bf16 or fp16 (for the run's record)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def convention(self) -> Convention:
        return self.weights.convention

    def normalize(self, image: Tensor) -> Tensor:
        return self.convention.normalize(image)

    def __call__(self, image: Tensor, layers: Sequence[str], native: bool = False) -> dict[str, Tensor]:
        """Activations of ``layers`` for ``image`` (B, 3, H, W) in [0, 1] (``native``: see ``run``)."""
        return self.run(self.normalize(image), layers, native)

    def run(self, x: Tensor, layers: Sequence[str], native: bool = False) -> dict[str, Tensor]:
        """Activations of ``layers`` for an input already in the model's convention; float32, or with
        ``native`` in the dtype the network computed them in (bf16 under bf16 autocast), for callers whose
        losses promote to float32 themselves: a cast of every activation there and back is then saved."""
        wanted = {name: self.table.get(name) for name in dict.fromkeys(layers)}
        captured: dict[str, Tensor] = {}
        by_path: dict[str, dict[int, list[str]]] = {}
        for name, layer in wanted.items():
            if name != LOGITS:
                by_path.setdefault(layer.path, {}).setdefault(layer.call, []).append(name)
        need_logits = LOGITS in wanted
        upcast = self.autocast is not None and not native
        x = x.contiguous(memory_format=torch.channels_last)

        def hook(path: str):
            calls = 0

            def capture(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
                nonlocal calls
                for name in by_path[path].get(calls, ()):
                    captured[name] = output.float() if upcast else output
                calls += 1
                if not need_logits and len(captured) == len(wanted):
                    raise _Stop

            return capture

        handles = [self._modules[path].register_forward_hook(hook(path)) for path in by_path]
        try:
            with torch.autocast(self.device.type, self.autocast, cache_enabled=False) if self.autocast is not None else nullcontext():
                out = self.net(x)
            if need_logits:
                captured[LOGITS] = out.float() if upcast else out
        except _Stop:
            pass
        except RuntimeError as err:
            if "too small" not in str(err):
                raise
            size = "x".join(str(n) for n in x.shape[-2:])
            raise CnnvizError(f"a {size} input is too small for {self.name} up to {', '.join(wanted)}: use a larger --size") from None
        finally:
            for handle in handles:
                handle.remove()
        return {name: captured[name] for name in wanted}


@lru_cache(maxsize=4)
def _load(name: str, weights: str | None, device: str, seed: int, precision: str) -> HookedModel:
    spec = get_spec(name)
    resolved = resolve(spec, weights)
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()
    net = build(spec, resolved, seed=seed)
    classes = None if isinstance(net, VGGTrunk) else spec.categories()
    if spec.head:
        net.head, classes, resolved = load_head(spec, resolved)
    return HookedModel(net, spec, resolved, dev, classes, precision)


def load_model(
    name: str = "vgg16", weights: str | None = None, device: str = "auto", seed: int = 0, precision: str = "auto",
) -> HookedModel:
    """Load (and cache) a named model with its weights on a device; see ``weights.resolve``.

    ``NAME+head`` / ``NAME+head:FILE`` put a classifier head (``cnnviz.core.head``) on VGG convolutions;
    ``precision`` is auto, fp32, bf16 or fp16 (see ``HookedModel``).
    """
    return _load(name, weights, str(device), seed, precision)


def with_head(name: str, weights: str | None = None) -> str:
    """The model to load for class scores: the bundled VGG-16 has no classifier, so it gets its bundled head."""
    spec = get_spec(name)
    bundled = spec == ModelSpec("vgg16") and (weights or spec.default_weights) == "bundled"
    return "vgg16+head" if bundled else name


def describe(model: HookedModel, size: int = 224) -> list[tuple[str, str, int | None, int | None]]:
    """(name, kind, output channels, stride) of every layer, from one forward pass at ``size`` px."""
    names = model.table.names()
    probe = torch.zeros(1, 3, size, size, device=model.device)
    with torch.no_grad():
        acts = model(probe, names)
    rows = []
    for layer in model.table:
        out = acts.get(layer.name)
        spatial = isinstance(out, Tensor) and out.dim() == 4
        channels = int(out.shape[1]) if isinstance(out, Tensor) and out.dim() >= 2 else None
        stride = round(size / out.shape[-1]) if spatial else None
        rows.append((layer.name, layer.kind, channels, stride))
    return rows
