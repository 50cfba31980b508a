"""The static HTML gallery: one page, a section per analyzer, built from the grids' and cells' sidecars.

It opens from the file system (relative links, inline CSS, no scripts, nothing external) and links only
files that exist in its folder, so the lean published copy (grids only) has no dead links. Each grid
with recorded optimization histories gets a loss-curve plot (matplotlib) beside it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from cnnviz import __version__  # noqa: E402
from cnnviz.core.files import atomic_write  # noqa: E402
from cnnviz.gallery.sections import SECTIONS  # noqa: E402

GRID_FORMATS = (".png", ".webp")
MICROSCOPES = "microscope"
"""The gallery's sub-folder of microscope sites (``cnnviz microscope --out GALLERY/microscope/NAME``), each with
its manifest ``microscope.json``; the page links every finished one."""
DISPLAY_SCALE = 0.62
"""Grid pixels to CSS pixels: every grid shares cell size and DPI, so its cells show at one size on the page."""


@dataclass
class Link:
    """A cell of a grid: its label and the files of it that exist (full-size image, sidecar)."""

    label: str
    image: str | None
    sidecar: str | None


@dataclass
class Figure:
    """One grid on the page: its image and size, title, command, sidecar and cells' links, loss plot."""

    image: str
    width: int
    height: int
    title: str
    sidecar: str
    command: str | None = None
    cells: list[Link] = field(default_factory=list)
    loss_plot: str | None = None


def _loss_plot(grid: Path, cells: list[tuple[str, Path]]) -> str | None:
    """Plot each cell's best loss so far per evaluation (log scale; L-BFGS line-search trials
    would add spikes); None when no cell has a history."""
    curves = []
    for label, png in cells:
        sidecar = png.with_suffix(".json")
        if sidecar.is_file():
            history = json.loads(sidecar.read_text()).get("history") or []
            losses = [h["loss"] for h in history if isinstance(h.get("loss"), (int, float))]
            if len(losses) > 1:
                curves.append((label, list(itertools.accumulate(losses, min))))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.6))
    for label, losses in curves:
        ax.plot(range(1, len(losses) + 1), [abs(v) for v in losses], label=label, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("|best loss|")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    out = grid.with_name(grid.stem + "_loss.png")
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return out.name


def _labels(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, file name) of every cell with a file: its own title, else its row and column titles."""
    rows, cols = data.get("row_titles") or [], data.get("col_titles") or []
    titles = data.get("cell_titles") or []
    out = []
    for i, row in enumerate(data.get("cells", [])):
        for j, name in enumerate(row):
            if not name:
                continue
            own = titles[i][j] if i < len(titles) and j < len(titles[i]) else ""
            parts = [rows[i] if i < len(rows) else "", own or (cols[j] if j < len(cols) else "")]
            out.append((" / ".join(p.replace("\n", " ") for p in parts if p) or name, name))
    return out


def _existing(folder: Path, name: str) -> str | None:
    return name if (folder / name).is_file() else None


def _figure(folder: Path, sidecar: Path, data: dict[str, Any]) -> Figure | None:
    image = next((sidecar.with_suffix(s) for s in GRID_FORMATS if sidecar.with_suffix(s).is_file()), None)
    if image is None:
        return None
    with Image.open(image) as im:
        width, height = im.size
    cells = [(label, folder / name) for label, name in _labels(data)]
    links = [Link(label, _existing(folder, p.name), _existing(folder, p.with_suffix(".json").name)) for label, p in cells]
    return Figure(
        image=image.name, width=round(width * DISPLAY_SCALE), height=round(height * DISPLAY_SCALE),
        title=data.get("title", ""), sidecar=sidecar.name, command=(data.get("figure") or {}).get("command"),
        cells=[link for link in links if link.image or link.sidecar], loss_plot=_loss_plot(image, cells),
    )


def _figures(folder: Path) -> dict[str, list[Figure]]:
    figures: dict[str, list[Figure]] = {key: [] for key in SECTIONS}
    for sidecar in sorted(folder.glob("*.json")):
        data = json.loads(sidecar.read_text())
        if not isinstance(data, dict) or data.get("kind") != "grid" or data.get("analyzer") not in SECTIONS:
            continue
        figure = _figure(folder, sidecar, data)
        if figure is not None:
            figures[data["analyzer"]].append(figure)
    return figures


@dataclass
class Microscope:
    """A microscope site in the gallery's folder: its page, what it shows, and its first unit's thumbnails."""

    href: str
    model: str
    layers: list[str]
    units: int
    images: int
    command: str
    thumbnails: list[str]


def _microscopes(folder: Path) -> list[Microscope]:
    found = []
    for manifest in sorted((folder / MICROSCOPES).glob("*/microscope.json")):
        data = json.loads(manifest.read_text())
        site = manifest.parent
        if not data.get("finished") or not (site / "index.html").is_file():
            continue
        units = data.get("units") or {}
        first = next(iter(units.items()), None)
        names = [] if first is None or not first[1] else [f"{first[0]}/img/u{first[1][0]}_{kind}.webp" for kind in ("fv0", "p1")]
        thumbs = [name for name in names if (site / name).is_file()]
        found.append(Microscope(href=f"{MICROSCOPES}/{site.name}/index.html", model=data["params"]["model"],
                                layers=data["params"]["layers"], units=sum(map(len, units.values())), images=data.get("images", 0),
                                command=data["command"], thumbnails=[f"{MICROSCOPES}/{site.name}/{t}" for t in thumbs]))
    return found


def build_site(folder: str | Path) -> Path:
    """Write ``index.html`` for the grids in ``folder``; returns its path."""
    folder = Path(folder)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnviz.gallery", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    html = env.get_template("index.html.j2").render(sections=SECTIONS, figures=_figures(folder), version=__version__,
                                                    microscopes=_microscopes(folder))
    return atomic_write(folder / "index.html", lambda tmp: tmp.write_text(html))
