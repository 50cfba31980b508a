"""Run records: what every output image's JSON sidecar says about how it was made, and its captions (the grids'
short one, and the one line a notebook shows under a result)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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


def caption(record: dict[str, Any] | Any) -> str:
    """A short caption from a record: the figures that matter for its analyzer."""
    r = record if isinstance(record, dict) else vars(record)
    params, losses = r.get("params", {}), r.get("losses", {})
    parts: list[str] = []
    if "relative_error" in params:
        parts.append(f"err {params['relative_error']:.2f}")
    if "gram" in losses:
        parts.append(f"gram {losses['gram']:.2g}")
    if "style" in losses:
        parts.append(f"style {losses['style']:.2g}")
    if "content" in losses:
        parts.append(f"content {losses['content']:.2g}")
    if "score" in params:
        start = params.get("score_start")
        parts.append(f"S {params['score']:.3g}" + ("" if start is None else f" from {start:.2g}"))
    if r.get("iterations"):
        parts.append(f"{r['iterations']} it")
    if r.get("interrupted"):
        parts.append("interrupted")
    return " · ".join(parts)


def headline(record: Record) -> str:
    """What a record is of: analyzer (and method), model, and the target, objective or layers."""
    params = record.params
    name = " ".join(str(p) for p in (record.analyzer, params.get("method")) if p)
    if record.analyzer == "transfer":
        styles = params["styles"] if len(params["styles"]) == 1 else [
            f"{style} {weight:.2g}" for style, weight in zip(params["styles"], params["style_blend"])]
        subject = (f"{' + '.join(map(str, styles))} at {_span(params['style_layers'])} · "
                   f"α {params['content_weight']:g} β {params['style_weight']:g}"
                   + (f" · colour {params['preserve_color']}" if params.get("preserve_color") else ""))
    elif record.analyzer == "patches":
        subject = (f"{record.layers[0]} · channels {', '.join(map(str, params['channels']))} · top {params['top']} "
                   f"of {params['images']} images")
    else:
        subject = params.get("target") or params.get("objective") or _span(record.layers)
    return " · ".join(p for p in (name, record.model, subject) if p)


def _span(layers: Sequence[str]) -> str:
    """Layer names as ``a, b`` or, for more, ``first…last``."""
    return ", ".join(layers) if len(layers) <= 2 else f"{layers[0]}…{layers[-1]}"


def one_line(record: Record) -> str:
    """A picture's caption: ``headline`` and the figures that matter for its analyzer (``caption``)."""
    return " · ".join(p for p in (headline(record), caption(record)) if p)
