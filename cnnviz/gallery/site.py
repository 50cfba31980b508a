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
    "saliency": "Saliency: gradients, guided backprop, SmoothGrad, integrated gradients, Grad-CAM",
    "ascent": "Gradient ascent",
    "patches": "Maximally activating patches",
    "invert": "Feature inversion",
    "texture": "Texture synthesis",
    "transfer": "Style transfer",
}

NOTES = {
    "saliency": "What in each photo EfficientNet-Lite0's top class responds to. Backprop is the signed gradient "
                "of the class score (grey is zero) and Simonyan et al.'s map its magnitude; deconvnet and guided "
                "backprop (Springenberg et al.) rectify the gradient at every ReLU, guided backprop also where the "
                "forward input was negative, so it draws the object's edges (deconvnet ignores the forward pass except "
                "at max-pooling, which EfficientNet does not have: its map is the same grid for every photo); SmoothGrad averages over noisy copies, "
                "integrated gradients along a path from black; Grad-CAM (Selvaraju et al.) says where, from the last "
                "7x7 layer, and guided Grad-CAM keeps the guided edges there.",
    "ascent": "Images that maximise an ImageNet class score of EfficientNet-Lite0, or one channel of VGG-16's relu4_3, "
              "starting from the zero image. Rows switch on the L2 penalty (Simonyan et al.) and blur, clipping and "
              "jitter (Yosinski et al.) one by one: without them the ascent finds high-frequency patterns; with them, "
              "larger structures of the class (cup rims for espresso).",
    "patches": "Where a channel fires most over the bundled images at two scales (Zeiler & Fergus): each patch is its "
               "unit's exact receptive field, grey beyond the image border, with the unit's guided-backprop map beside it "
               "(Springenberg et al.). VGG-16's relu2_2 channels pick colours, oriented edges and gratings; relu4_3 channels "
               "textures and parts (rims, eyes, stripes). EfficientNet-Lite0's block3_2 has relu4_3's stride (8 px); its "
               "guided maps fill only the middle of each field: the effective receptive field is much smaller than the exact one.",
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
