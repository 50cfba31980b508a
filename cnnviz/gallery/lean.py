"""The lean copy of a gallery, for a repository: the page and the grids (WebP) with their sidecars; no
cells, loss plots or arrays, which a build folder holds by the hundred and tens of megabytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from cnnviz.core.files import atomic_write
from cnnviz.errors import CnnvizError
from cnnviz.gallery.site import build_site

QUALITY = 90
"""WebP quality: captions and fine patterns still read; a grid is a fifth of its PNG."""
OWNED = {".png", ".webp", ".json", ".npy", ".npz", ".html"}
"""Kinds of file a gallery writes: the ones publishing may replace or remove in the destination."""


def _grids(folder: Path) -> list[Path]:
    """The grid sidecars of a build folder."""
    out = []
    for sidecar in sorted(folder.glob("*.json")):
        data = json.loads(sidecar.read_text())
        if isinstance(data, dict) and data.get("kind") == "grid" and sidecar.with_suffix(".png").is_file():
            out.append(sidecar)
    return out


def publish(build: str | Path, dest: str | Path) -> Path:
    """Write the lean copy of the gallery in ``build`` to ``dest`` (removing the gallery files there that
    it no longer has) and its page; returns the page. ``dest`` must be empty, new or a gallery."""
    build, dest = Path(build), Path(dest)
    if dest.resolve() == build.resolve():
        raise CnnvizError("--publish needs a folder other than --out")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "index.html").is_file():
        raise CnnvizError(f"--publish {dest}: the folder has files but no index.html; give an empty or gallery folder")
    dest.mkdir(parents=True, exist_ok=True)
    kept = {"index.html"}
    for sidecar in _grids(build):
        with Image.open(sidecar.with_suffix(".png")) as im:
            rgb = im.convert("RGB")
        webp = dest / f"{sidecar.stem}.webp"
        atomic_write(webp, lambda tmp, rgb=rgb: rgb.save(tmp, format="WEBP", quality=QUALITY, method=6))
        atomic_write(dest / sidecar.name, lambda tmp, sidecar=sidecar: shutil.copyfile(sidecar, tmp))
        kept |= {webp.name, sidecar.name}
    for path in dest.iterdir():
        if path.is_file() and path.suffix in OWNED and path.name not in kept:
            path.unlink()
    return build_site(dest)
