"""``cnnviz transfer``: style transfer, and the paper's sweeps as comparable grids."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.style import STYLE_LAYERS
from cnnviz.analyzers.transfer import CONTENT_LAYERS, DEFAULT_STYLE_WEIGHT, transfer
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, optimizing, shared
from cnnviz.cli.progress import progress
from cnnviz.core.images import as_image, image_stem
from cnnviz.errors import CnnvizError
from cnnviz.gallery.grid import Cell, caption, draw_grid

SWEEPS = ("alpha-beta", "content-layer", "style-size")
BETAS = (1e-2, 1e-1, 1.0, 1e1, 1e2)
SWEEP_CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
STYLE_SIZE_FACTORS = (0.25, 0.5, 1.0, 2.0)


def _sweep(name: str, alpha: float, size: int, style_size: int | None) -> list[tuple[str, str, dict]]:
    """(column title, file-name tag, transfer keyword overrides) for each cell of a sweep."""
    if name == "alpha-beta":
        return [(f"α/β = {alpha / b:g}", f"ab{alpha / b:g}", {"style_weight": b}) for b in BETAS]
    if name == "content-layer":
        return [(layer, layer, {"content_layers": [layer]}) for layer in SWEEP_CONTENT_LAYERS]
    base = style_size or size
    return [(f"style {round(base * f)}px", f"style{round(base * f)}px", {"style_size": round(base * f)})
            for f in STYLE_SIZE_FACTORS]


@shared(model="vgg16")
@optimizing(optimizer="lbfgs", iters=300)
def command(
    images: Annotated[list[str] | None, typer.Argument(
        help="CONTENT STYLE [STYLE...]: files or bundled names. Default: astronaut starry_night.")] = None,
    blend: Annotated[str, typer.Option(help="How much of each style image, e.g. '0.7,0.3' (default: equal).")] = "",
    alpha: Annotated[float, typer.Option(help="α, content weight.")] = 1.0,
    beta: Annotated[float, typer.Option(help="β, style weight.")] = DEFAULT_STYLE_WEIGHT,
    content_layers: Annotated[str, typer.Option(help="Comma list of content layers.")] = ",".join(CONTENT_LAYERS),
    style_layers: Annotated[str, typer.Option(help="Comma list of style layers.")] = ",".join(STYLE_LAYERS),
    style_layer_weights: Annotated[str, typer.Option(help="Comma list of w_l (default: equal).")] = "",
    tv_weight: Annotated[float, typer.Option(help="Total-variation weight (0 = none, as in the paper).")] = 0.0,
    size: Size = 256,
    style_size: Annotated[int | None, typer.Option(min=16, help="Long side of the style image(s) (default: --size).")] = None,
    init: Annotated[str, typer.Option(help="content, noise, style, or an image file.")] = "content",
    preserve_color: Annotated[str | None, typer.Option(help="luminance or histogram (Gatys et al. 2017).")] = None,
    sweep: Annotated[str | None, typer.Option(help="alpha-beta, content-layer or style-size: one grid row.")] = None,
    *,
    run: Run,
    loop: Loop,
) -> None:
    """Render a content image in the style of one or more paintings (Gatys, Ecker & Bethge 2016).

    With no images: the bundled astronaut in the style of The Starry Night.

    Examples:

      cnnviz transfer --size 512                        # astronaut × The Starry Night

      cnnviz transfer photo.jpg great_wave the_scream --blend 0.7,0.3 --preserve-color luminance

      cnnviz transfer --sweep alpha-beta                # also: content-layer, style-size
    """
    images = images or ["astronaut", "starry_night"]
    if len(images) < 2:
        raise CnnvizError("give a content image and at least one style image (or none for the bundled demo)")
    if sweep not in (None, *SWEEPS):
        raise CnnvizError(f"unknown --sweep '{sweep}' (choices: {', '.join(SWEEPS)})")
    common.check_finite(alpha=alpha, beta=beta, tv_weight=tv_weight)
    settings = loop.settings(run)
    content, styles = images[0], images[1:]
    stem = "_".join(image_stem(i) for i in images)
    blend_weights = list(common.parse_floats(blend, "--blend")) or None
    layer_weights = list(common.parse_floats(style_layer_weights, "--style-layer-weights")) or None
    row = [Cell(as_image(content, size), "content"), Cell(as_image(styles[0], style_size or size), "style")]
    hooked = run.load()
    kwargs = dict(
        style_blend=blend_weights, content_weight=alpha, style_weight=beta,
        content_layers=hooked.table.parse(content_layers), style_layers=hooked.table.parse(style_layers),
        style_layer_weights=layer_weights, tv_weight=tv_weight, size=size, style_size=style_size, init=init,
        preserve_color=preserve_color, settings=settings,
    )
    cells = _sweep(sweep, alpha, size, style_size) if sweep else [("", "", {})]
    for title, tag, overrides in cells:
        suffix = f"_{sweep}_{tag}" if sweep else ""
        path = run.out / f"transfer_{stem}{suffix}.png"
        with progress(f"transfer {title}".strip(), run.quiet, path, loop.save_every) as callback:
            output = transfer(hooked, content, styles, callback=callback, **{**kwargs, **overrides})
        png = common.save(output, path, run)
        row.append(Cell(output.image, caption(output.record), png))
    if sweep:
        titles = ["content", "style", *(t for t, _, _ in cells)]
        run.wrote(draw_grid([row], run.out / f"transfer_{stem}_{sweep}.png", col_titles=titles, row_titles=[sweep],
                            analyzer="transfer", title=f"Style transfer, {hooked.name} ({hooked.weights.id}), {size}px"))
