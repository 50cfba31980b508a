"""Classifier heads on a VGG trunk: the offline path to class scores for the bundled VGG-16.

A head maps the trunk's last feature map (pool5, i.e. relu5_3 after a 2×2 max pool) to class scores
by global average pooling, standardisation, dropout and one linear layer; its output is the layer
``logits``. It is
saved as safetensors beside a JSON sidecar (a ``Record``) that holds its class names, the trunk
weights it was trained on, its held-out accuracy and its training parameters. ``vgg16+head`` uses
the head bundled in ``cnnviz/assets`` (trained by ``cnnviz head train`` on the bundled images).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from cnnviz.core.files import atomic_write
from cnnviz.core.models import ModelSpec
from cnnviz.core.records import Record, read_sidecar, sidecar_path, write_sidecar
from cnnviz.core.weights import ASSETS, Weights, file_sha256
from cnnviz.errors import CnnvizError

BUNDLED_HEAD = ASSETS / "vgg16_head.safetensors"
FEATURES = "pool5"


class Head(nn.Module):
    """Class scores from a trunk's feature map: global average pooling, standardisation by the
    training features' ``mean`` and ``std`` (sparse ReLU features of very different scales otherwise
    let a few channels dominate), dropout, linear."""

    def __init__(self, channels: int, classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(channels, classes)

    def forward(self, features: Tensor) -> Tensor:
        """Scores (B, classes) from a feature map (B, C, H, W) or from features pooled already (B, C)."""
        pooled = features.mean(dim=(-2, -1)) if features.dim() == 4 else features
        return self.linear(self.dropout((pooled - self.mean) / self.std))


def head_path(head: str) -> Path:
    """The file of a head: ``bundled`` or a path."""
    return BUNDLED_HEAD if head == "bundled" else Path(head).expanduser()


def save_head(head: Head, path: str | Path, record: Record) -> Path:
    """Write the head's weights (safetensors) and its sidecar, both atomically; returns the weights path."""
    path = Path(path).with_suffix(".safetensors")
    data = save({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()})
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    write_sidecar(path, record)
    return path


def load_head(spec: ModelSpec, weights: Weights) -> tuple[Head, tuple[str, ...], Weights]:
    """The head of ``spec`` (checked against the trunk's weights), its class names, and the weights
    record extended by the head's file name and hash."""
    path = head_path(spec.head or "bundled")
    if not path.is_file():
        hint = "reinstall cnnviz, or train one: cnnviz head train" if path == BUNDLED_HEAD else "train one: cnnviz head train"
        raise CnnvizError(f"classifier head not found: {path} ({hint})")
    if not sidecar_path(path).is_file():
        raise CnnvizError(f"classifier head {path} has no sidecar {sidecar_path(path).name} with its class names")
    record = read_sidecar(path)
    if (record.get("model"), record.get("weights")) != (spec.name, weights.id):
        raise CnnvizError(
            f"head {path.name} was trained on {record.get('model')} ({record.get('weights')}) features, not "
            f"{spec.name} ({weights.id}): train a head for these weights with cnnviz head train"
        )
    classes = tuple(record["params"]["classes"])
    try:
        state = load_file(str(path))
        head = Head(state["linear.weight"].shape[1], len(classes))
        head.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, KeyError, RuntimeError) as err:
        raise CnnvizError(f"cannot read classifier head {path}: {' '.join(str(err).split())[:200]}") from None
    head_id = f"{weights.id}+head:{path.name}@{file_sha256(path)[:12]}"
    return head.eval().requires_grad_(False), classes, replace(weights, id=head_id)
