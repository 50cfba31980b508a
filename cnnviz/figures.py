"""Every grid and picture the analyzers' results are drawn as: one cell size, one caption style, one axis
meaning per analyzer. Analyzers return data (images, maps, patches, records); this module draws them.

Captions come from run records (the sidecars), so a grid says how each cell was made.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from cnnviz.analyzers.candidates import BORDER  # noqa: E402
from cnnviz.analyzers.patches import Patches  # noqa: E402
from cnnviz.analyzers.saliency.faithfulness import RANDOM, Faithfulness  # noqa: E402
from cnnviz.analyzers.saliency.methods import picture  # noqa: E402
from cnnviz.analyzers.saliency.sanity import SanityCheck  # noqa: E402
from cnnviz.core.files import atomic_write  # noqa: E402
from cnnviz.core.records import caption as caption  # noqa: E402  (the cells' captions, re-exported)

CELL_INCHES = 2.2
DPI = 120
MAX_COLUMNS = 9
TITLE_CHARS_PER_INCH = 8.5
"""Characters of a 13 pt title per inch of grid: longer titles wrap onto more lines."""
"""Longer rows are wrapped (``wrap``): a grid stays readable at page width."""

_figure: ContextVar[tuple[dict[str, Any], float] | None] = ContextVar("figure", default=None)


@contextmanager
def recording(figure: dict[str, Any]) -> Iterator[None]:
    """While inside, every grid drawn records ``figure`` (how the gallery made it) and the seconds since
    entering in its sidecar, under ``"figure"``."""
    token = _figure.set((figure, time.perf_counter()))
    try:
        yield
    finally:
        _figure.reset(token)


def _block(name: str) -> str | None:
    match = re.search(r"(\d+)_\d+$", name)
    return match.group(1) if match else None


def wrap(names: Sequence[str], width: int = MAX_COLUMNS) -> list[list[str]]:
    """Layer names as rows: one row if they fit in ``width``, else one per block where names say their
    block (``relu3_2``, ``block3_2``: block 3), each at most ``width`` long."""
    if len(names) <= width:
        return [list(names)]
    rows: list[list[str]] = []
    for _, group in itertools.groupby(names, key=_block):
        names_in = list(group)
        rows += [names_in[i:i + width] for i in range(0, len(names_in), width)]
    return rows


@dataclass
class Cell:
    """One picture of a grid: an image tensor (1, 3, H, W) in [0, 1] or an (H, W[, 3]) array, a caption,
    the file it was saved to (linked from the gallery; its sidecar holds the full record), and a title
    above it where a column title cannot say what it is (in wrapped rows)."""

    image: Tensor | np.ndarray
    caption: str = ""
    path: Path | None = None
    title: str = ""


def _array(image: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, Tensor):
        return image.detach()[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return image


def draw_grid(
    rows: Sequence[Sequence[Cell | None]],
    path: str | Path,
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    title: str = "",
    analyzer: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Draw rows of cells into one PNG (atomically): column titles on top, row titles on the left.

    A JSON sidecar beside it names the analyzer, the titles and each cell's file, for the gallery, plus
    ``extra`` (what an analyzer lists about the cells, such as each patch's image and coordinates).
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    lines = textwrap.wrap(title, width=max(24, round(CELL_INCHES * n_cols * TITLE_CHARS_PER_INCH)))
    strip = 0.1 + 0.3 * len(lines)
    height = (CELL_INCHES + 0.3) * n_rows + (strip if title else 0)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(CELL_INCHES * n_cols, height), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            cell = row[j] if j < len(row) else None
            if cell is None:
                continue
            array = _array(cell.image)
            ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1, interpolation="lanczos")
            ax.set_xlabel(cell.caption, fontsize=8)
            if cell.title or (i == 0 and j < len(col_titles)):
                ax.set_title(cell.title or col_titles[j], fontsize=11)
            if j == 0 and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=11)
    if title:  # in a strip of its own at the top, however tall the grid, wrapped to the grid's width
        fig.suptitle("\n".join(lines), fontsize=13, y=1 - 0.08 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - (strip / height if title else 0)))
    sidecar = {
        "col_titles": list(col_titles), "row_titles": list(row_titles),
        "cells": [[c.path.name if c is not None and c.path is not None else None for c in row] for row in rows],
        **(extra or {}),
    }
    if any(c is not None and c.title for row in rows for c in row):
        sidecar["cell_titles"] = [[c.title if c is not None else "" for c in row] for row in rows]
    return _save(fig, Path(path), analyzer, title, sidecar)


def _save(fig: Any, path: Path, analyzer: str, title: str, fields: dict[str, Any]) -> Path:
    """Write a matplotlib figure as a PNG (atomically) with the JSON sidecar the gallery reads: a ``grid``
    of ``analyzer``, its title, ``fields``, and the gallery's recording if any; closes the figure."""
    try:
        png = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)
    sidecar = {"kind": "grid", "analyzer": analyzer, "title": title, **fields}
    figure = _figure.get()
    if figure is not None:
        sidecar["figure"] = {**figure[0], "seconds": round(time.perf_counter() - figure[1], 1)}
    text = json.dumps(sidecar, indent=2)
    atomic_write(png.with_suffix(".json"), lambda tmp: tmp.write_text(text + "\n"))
    return png


def patch_rows(result: Patches) -> list[list[Cell | None]]:
    """The patches grid's rows: each patch with its activation (and its guided map beside it)."""
    rows = []
    for r in range(len(result.channels)):
        row: list[Cell | None] = []
        for k in range(result.values.shape[1]):
            if result.source[r, k] < 0:
                row += [None] * (1 if result.guided is None else 2)
                continue
            name = Path(result.sources[int(result.source[r, k])]).stem
            label = f"{float(result.values[r, k]):.3g} · {name} {int(result.size[r, k])}"
            row.append(Cell(result.patches[r, k].unsqueeze(0), label))
            if result.guided is not None:
                row.append(Cell(result.guided[r, k].unsqueeze(0)))
        if all(cell is None for cell in row):
            row[0] = Cell(torch.full_like(result.patches[r, :1], BORDER), "no positive activation")
        rows.append(row)
    return rows


def draw_patches(result: Patches, path: str | Path) -> Path:
    """Draw the top patches as a grid (rows: channels) into a PNG whose sidecar holds the run record and
    every patch's listing; returns the PNG path."""
    top = result.values.shape[1]
    cols = [f"#{k + 1}" for k in range(top)]
    if result.guided is not None:
        cols = [title for k in range(top) for title in (f"#{k + 1}", "guided")]
    params = result.record.params
    title = (f"Top patches, {result.record.model} ({result.record.weights}) {result.layer}: receptive field "
             f"{params['receptive_field']} px, stride {params['stride']}; {params['images']} images at "
             f"{params['sizes']} px")
    extra = {"record": json.loads(result.record.to_json()), "patches": result.listing()}
    rows = [f"channel {c}\nmean {float(result.means[c]):.3g}" for c in result.channels]
    return draw_grid(patch_rows(result), path, col_titles=cols, row_titles=rows, title=title, analyzer="patches", extra=extra)


def shown_steps(steps: Sequence[str], width: int = MAX_COLUMNS) -> list[int]:
    """The randomization steps a sanity figure shows: the original, then at most ``width`` - 1 steps spread
    evenly from the first (the logits) to the last (every block random)."""
    n = len(steps) - 1
    if n <= width - 1:
        return list(range(len(steps)))
    return [0, *dict.fromkeys(1 + round(i * (n - 1) / (width - 2)) for i in range(width - 1))]


def draw_sanity(check: SanityCheck, path: str | Path, title: str = "") -> Path:
    """Adebayo et al.'s figure: a row per method, the original map and then the maps after each shown
    randomization step, each captioned with its rank correlation and SSIM to the original. The sidecar
    holds the record with every step's similarities."""
    columns = shown_steps(check.steps)
    rows = [[Cell(picture(check.maps[m][k], m, check.input), "" if k == 0 else
                  f"ρ {check.spearman[m][k]:.2f} · SSIM {check.ssim[m][k]:.2f}") for k in columns] for m in check.methods]
    titles = [check.steps[k] if k == 0 else f"−{check.steps[k]}" for k in columns]
    extra = {"record": json.loads(check.record.to_json())}
    return draw_grid(rows, path, col_titles=titles, row_titles=check.methods, title=title, analyzer="trust", extra=extra)


def draw_similarity(check: SanityCheck, path: str | Path, title: str = "") -> Path:
    """The rank correlation and SSIM of each method's map with the original, against the randomization
    step (the paper's similarity plot)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharex=True)
    steps = range(len(check.steps))
    for method in check.methods:
        axes[0].plot(steps, check.spearman[method], marker=".", label=method)
        axes[1].plot(steps, check.ssim[method], marker=".", label=method)
    for ax, name in zip(axes, ("Spearman rank correlation (|map|)", "SSIM (|map|)")):
        ax.set_title(name, fontsize=10)
        ax.set_xticks(list(steps), check.steps, rotation=70, fontsize=7)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_ylim(-1.05, 1.05)
    axes[0].set_ylabel(f"{check.record.params['randomization']} randomization")
    axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, Path(path), "trust", title, {"record": json.loads(check.record.to_json())})


def draw_faithfulness(result: Faithfulness, path: str | Path, title: str = "") -> Path:
    """The deletion and insertion curves of every method and of a random order (dashed), with their areas
    in the legend."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for name in [*result.methods, RANDOM]:
        style = {"linestyle": "--", "color": "black"} if name == RANDOM else {}
        for ax, kind, curve in ((axes[0], "deletion", result.deletion), (axes[1], "insertion", result.insertion)):
            ax.plot(result.fractions, curve[name], label=f"{name} {result.auc[name][kind]:.3f}", linewidth=1.2, **style)
    for ax, kind in zip(axes, ("deletion: best pixels blurred first", "insertion: best pixels restored first")):
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("share of pixels")
        ax.legend(fontsize=7, title="AUC", title_fontsize=7)
    axes[0].set_ylabel(f"class {result.score}" if result.score == "probability" else "target activation")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, Path(path), "trust", title, {"record": json.loads(result.record.to_json())})
