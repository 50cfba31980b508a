"""Run records: what every output image's JSON sidecar says about how it was made."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnviz import __version__
from cnnviz.core.files import atomic_write


@dataclass
class Record:
    """Everything needed to reproduce and caption one output image."""

    analyzer: str
    model: str
    weights: str
    weights_sha256: str | None
    layers: list[str]
    params: dict[str, Any]
    seed: int | None = None
    iterations: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None
    cnnviz_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), indent=2, sort_keys=False)


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the sidecar stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def sidecar_path(png: Path) -> Path:
    return Path(png).with_suffix(".json")


def write_sidecar(png: str | Path, record: Record) -> Path:
    """Write ``record`` as JSON next to ``png`` (same stem, .json), atomically."""
    text = record.to_json()
    return atomic_write(sidecar_path(Path(png)), lambda tmp: tmp.write_text(text + "\n"))


def read_sidecar(png: str | Path) -> dict[str, Any]:
    return json.loads(sidecar_path(Path(png)).read_text())
