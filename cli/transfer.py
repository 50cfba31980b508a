"""``cnnviz transfer``: style transfer, and the paper's sweeps as comparable grids."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.analyzers.style import STYLE_LAYERS
from cnnviz.analyzers.transfer import CONTENT_LAYERS, DEFAULT_STYLE_WEIGHT, transfer
from cnnviz.cli import common
from cnnviz.cli.options import Device, Lr, Model, Optimizer, Out, Quiet, SaveEvery, Scales, Seed, Size, Threads, WeightsOpt
from cnnviz.cli.progress import progress
from cnnviz.core.images import image_path, load_image
from cnnviz.errors import CnnvizError
from cnnviz.gallery.grid import Cell, caption, draw_grid

SWEEPS = ("alpha-beta", "content-layer", "style-size")
BETAS = (1e-2, 1e-1, 1.0, 1e1, 1e2)
SWEEP_CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
STYLE_SIZE_FACTORS = (0.25, 0.5, 1.0, 2.0)


def _sweep(name: str, alpha: float, size: int, style_size: int | None) -> list[tuple[str, dict]]:
    """(column title, transfer keyword overrides) for each cell of a sweep."""
    if name == "alpha-beta":
        return [(f"α/β = {alpha / b:g}", {"style_weight": b}) for b in BETAS]
    if name == "content-layer":
        return [(layer, {"content_layers": [layer]}) for layer in SWEEP_CONTENT_LAYERS]
    base = style_size or size
    return [(f"style {round(base * f)}px", {"style_size": round(base * f)}) for f in STYLE_SIZE_FACTORS]


def command(
    images: Annotated[list[str] | None, typer.Argument(help="CONTENT STYLE [STYLE...]: files or bundled names.")] = None,
    style_weights: Annotated[str, typer.Option(help="Blend weights of several styles, e.g. '0.7,0.3'.")] = "",
    alpha: Annotated[float, typer.Option(help="α, content weight.")] = 1.0,
    beta: Annotated[float, typer.Option("--beta", "--style-weight", help="β, style weight.")] = DEFAULT_STYLE_WEIGHT,
    content_layers: Annotated[str, typer.Option(help="Comma list of content layers.")] = ",".join(CONTENT_LAYERS),
    style_layers: Annotated[str, typer.Option(help="Comma list of style layers.")] = ",".join(STYLE_LAYERS),
    style_layer_weights: Annotated[str, typer.Option(help="Comma list of w_l (default: equal).")] = "",
    tv_weight: Annotated[float, typer.Option(help="Total-variation weight (0 = none, as in the paper).")] = 0.0,
    size: Size = 512,
    style_size: Annotated[int | None, typer.Option(help="Long side of the style image(s) (default: --size).")] = None,
    init: Annotated[str, typer.Option(help="content, noise, style, or an image file.")] = "content",
    preserve_color: Annotated[str | None, typer.Option(help="luminance or histogram (Gatys et al. 2017).")] = None,
    sweep: Annotated[str | None, typer.Option(help="alpha-beta, content-layer or style-size: one grid row.")] = None,
    optimizer: Optimizer = "lbfgs",
    iters: Annotated[int, typer.Option(help="Iterations per scale.")] = 300,
    lr: Lr = None,
    scales: Scales = "",
    seed: Seed = 0,
    out: Out = Path("cnnviz-out"),
    model: Model = "vgg16",
    weights: WeightsOpt = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
    save_every: SaveEvery = 0,
) -> None:
    """Render a content image in the style of one or more paintings (Gatys, Ecker & Bethge 2016)."""
    out = common.check_out(out)
    images = images or ["astronaut", "starry_night"]
    if len(images) < 2:
        raise CnnvizError("give a content image and at least one style image (or none for the bundled demo)")
    if sweep not in (None, *SWEEPS):
        raise CnnvizError(f"unknown --sweep '{sweep}' (choices: {', '.join(SWEEPS)})")
    settings = common.settings(optimizer, iters, lr, scales, seed)
    hooked = common.model(model, weights, device, threads)
    content, styles = images[0], images[1:]
    stem = "_".join(Path(image_path(i)).stem for i in images)
    kwargs = dict(
        style_blend=list(common.parse_floats(style_weights, "--style-weights")) or None, content_weight=alpha,
        style_weight=beta, content_layers=hooked.table.parse(content_layers), style_layers=hooked.table.parse(style_layers),
        style_layer_weights=list(common.parse_floats(style_layer_weights, "--style-layer-weights")) or None,
        tv_weight=tv_weight, size=size, style_size=style_size, init=init, preserve_color=preserve_color, settings=settings,
    )
    cells = _sweep(sweep, alpha, size, style_size) if sweep else [("", {})]
    row = [Cell(load_image(content, size), "content"), Cell(load_image(styles[0], size), "style")]
    for title, overrides in cells:
        suffix = f"_{sweep}_{len(row) - 1}" if sweep else ""
        path = out / f"transfer_{stem}{suffix}.png"
        with progress(f"transfer {title}".strip(), quiet, path, save_every) as callback:
            output = transfer(hooked, content, styles, callback=callback, **{**kwargs, **overrides})
        png = common.save(output, path)
        row.append(Cell(output.image, caption(output.record), png))
    if sweep:
        titles = ["content", "style", *(t for t, _ in cells)]
        grid = draw_grid([row], out / f"transfer_{stem}_{sweep}.png", col_titles=titles, row_titles=[sweep],
                         analyzer="transfer", title=f"Style transfer, {hooked.name} ({hooked.weights.id}), {size}px")
        common.console.print(f"wrote {grid}", highlight=False)
