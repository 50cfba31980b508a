"""The microscope's files: per layer a Parquet table of dataset examples and one of unit statistics, the
pictures as WebP, the run's manifest, and the work files ``--resume`` reuses. Every file is written
atomically (``cnnviz.core.files``): a run killed at any moment leaves whole files or none.

Layout of ``OUT``: ``microscope.json`` (the manifest), ``index.html``, and per layer ``LAYER/`` with its
pages, ``examples.parquet``, ``units.parquet`` and ``img/``; work files under ``.work/`` (one .npz per
scanned shard, one .json per drawn unit).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cnnviz.core.files import atomic_write
from cnnviz.errors import CnnvizError

MANIFEST = "microscope.json"
WORK = ".work"
WEBP_QUALITY = 82

EXAMPLES = pa.schema([("unit", pa.int32()), ("rank", pa.int32()), ("image", pa.string()), ("size", pa.int32()),
                      ("y", pa.int32()), ("x", pa.int32()), ("box", pa.list_(pa.int32(), 4)), ("value", pa.float32())])
"""One row per dataset example: the unit, its rank (1 = best), the image, the long side it was resized to,
the unit's position in the layer's map, its receptive field (top, left, bottom, right) in the resized
image, and the activation (fp32)."""
UNITS = pa.schema([("unit", pa.int32()), ("mean", pa.float32()), ("max", pa.float32()), ("images", pa.int64()),
                   ("histogram", pa.list_(pa.int64())), ("edges", pa.list_(pa.float32())),
                   ("classes", pa.list_(pa.string())), ("class_weights", pa.list_(pa.float32())),
                   ("fv_score", pa.list_(pa.float32()))])
"""One row per unit: mean activation over the set, the largest per-image maximum, the histogram of
per-image maxima (counts and edges), the classes it raises most with their weights (empty where the layer
does not feed a linear classifier through pooling), and the channel mean each feature visualization reached."""


def run_key(params: dict[str, Any]) -> str:
    """What ``--resume`` compares: the version and every parameter that changes the results."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=1)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def check_resume(out: Path, key: str, resume: bool) -> None:
    """With ``resume``, the folder's last run must be the same command and version."""
    manifest = read_manifest(out)
    if resume and manifest is not None and manifest.get("key") != key:
        raise CnnvizError(f"--resume: {out} holds a microscope of other settings ({manifest.get('command', '?')}); "
                          "run the same command, or choose another --out")


def shard_file(out: Path, index: int) -> Path:
    return out / WORK / "scan" / f"shard-{index:06d}.npz"


def unit_file(out: Path, layer: str, unit: int) -> Path:
    return out / WORK / "units" / layer / f"{unit}.json"


def picture(unit: int, kind: str, index: int) -> str:
    """The file name, in ``LAYER/img/``, of a unit's picture: ``fv`` (feature visualization ``index``, from 0),
    ``p`` or ``g`` (the patch or guided map of the example of rank ``index``, from 1)."""
    return f"u{unit}_{kind}{index}.webp"


def write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def save_webp(picture: np.ndarray, path: Path) -> Path:
    """An (H, W, 3) uint8 or (3, H, W) [0, 1] float array as WebP."""
    array = picture if picture.dtype == np.uint8 else (np.clip(picture.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(array), "RGB")
    return atomic_write(path, lambda tmp: image.save(tmp, format="WEBP", quality=WEBP_QUALITY, method=6))


def write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    table = pa.Table.from_pylist(rows, schema=schema)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_table(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()
