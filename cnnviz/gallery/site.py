"""The static HTML gallery: one page, sections per analyzer, built from the grids' and cells' sidecars.

It opens from the file system (relative links, inline CSS, no scripts) and adds a loss-curve plot
(matplotlib) per grid from the cells' recorded histories.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnnviz import __version__  # noqa: E402
from cnnviz.core.images import atomic_write  # noqa: E402

SECTIONS = {
    "saliency": "Saliency: backprop, deconvnet, guided backprop",
    "ascent": "Gradient ascent",
    "invert": "Feature inversion",
    "texture": "Texture synthesis",
    "transfer": "Style transfer",
}

NOTES = {
    "saliency": "The gradient of each image's top class score with respect to its pixels under the seed's ReLU "
                "backward rules (grey is zero). Plain backprop is noisy; deconvnet passes every positive gradient "
                "and forgets the class; guided backprop passes only positive gradients where the forward input was "
                "positive, so it draws the object's edges; guided Grad-CAM keeps the parts where relu5_3 supports the class.",
    "ascent": "Images that maximise a class score of the offline head, or one channel of relu4_3, starting from the zero "
              "image. Rows switch on the L2 penalty (Simonyan et al.) and blur, clipping and jitter (Yosinski et al.) one "
              "by one: without them the ascent finds high-frequency patterns; with them, larger structures of the class.",
    "invert": "The image whose features at one layer match the photo's (Mahendran & Vedaldi), from noise: early layers "
              "keep the photo, deep ones only its parts and layout.",
    "texture": "New images with the source's Gram matrices up to deeper and deeper layers (Gatys et al. 2015): "
               "the structures that repeat grow with the layers matched.",
    "transfer": "The content photo's features at relu4_2 with the painting's Gram matrices (Gatys et al. 2016), "
                "sweeping the ratio of the two, the content layer and the size of the style image.",
}


@dataclass
class Figure:
    """One grid on the page, with links to its cells and their sidecars."""

    image: str
    title: str
    cells: list[dict[str, str]] = field(default_factory=list)
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


def _figures(folder: Path) -> dict[str, list[Figure]]:
    figures: dict[str, list[Figure]] = {key: [] for key in SECTIONS}
    for sidecar in sorted(folder.glob("*.json")):
        data = json.loads(sidecar.read_text())
        if data.get("kind") != "grid" or data.get("analyzer") not in SECTIONS:
            continue
        png = sidecar.with_suffix(".png")
        cols = data.get("col_titles") or []
        cells: list[tuple[str, Path]] = []
        for row_index, row in enumerate(data.get("cells", [])):
            rows = data.get("row_titles") or []
            for col_index, name in enumerate(row):
                if name:
                    label = " / ".join(
                        t for t in (rows[row_index] if row_index < len(rows) else "", cols[col_index] if col_index < len(cols) else "") if t
                    )
                    cells.append((label or name, folder / name))
        figures[data["analyzer"]].append(Figure(
            image=png.name, title=data.get("title", ""),
            cells=[{"label": label, "image": p.name, "sidecar": p.with_suffix(".json").name} for label, p in cells],
            loss_plot=_loss_plot(png, cells),
        ))
    return figures


def build_site(folder: str | Path) -> Path:
    """Write ``index.html`` for the grids in ``folder``; returns its path."""
    folder = Path(folder)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnviz.gallery", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    html = env.get_template("index.html.j2").render(sections=SECTIONS, notes=NOTES, figures=_figures(folder), version=__version__)
    return atomic_write(folder / "index.html", lambda tmp: tmp.write_text(html))
