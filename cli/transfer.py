"""``cnnviz transfer``: style transfer, and the paper's sweeps as comparable grids."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.transfer import CONTENT_LAYERS, DEFAULT_ITERS, DEFAULT_STYLE_WEIGHT, STYLE_LAYERS, transfer
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, loop_options, run_options
from cnnviz.cli.parse import check_finite, parse_floats
from cnnviz.cli.progress import progress
from cnnviz.core.images import as_image, image_stem
from cnnviz.errors import CnnvizError
from cnnviz.figures import Cell, caption, draw_grid
from cnnviz.gallery.plan import SWEEPS
from cnnviz.gallery.plan import sweep as sweep_cells


@run_options(model="vgg16")
@loop_options(optimizer="lbfgs", iters=DEFAULT_ITERS)
def command(
    images: Annotated[list[str] | None, typer.Argument(
        help="CONTENT STYLE [STYLE...]: files or bundled names. Default: astronaut starry_night.")] = None,
    style_blend: Annotated[str, typer.Option(help="How much of each style image, e.g. '0.7,0.3' (default: equal).")] = "",
    content_weight: Annotated[float, typer.Option("--content-weight", "--alpha", help="α, the content weight.")] = 1.0,
    style_weight: Annotated[float, typer.Option("--style-weight", "--beta", help="β, the style weight.")] = DEFAULT_STYLE_WEIGHT,
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

      cnnviz transfer photo.jpg great_wave the_scream --style-blend 0.7,0.3 --preserve-color luminance

      cnnviz transfer --sweep alpha-beta                # also: content-layer, style-size
    """
    images = images or ["astronaut", "starry_night"]
    if len(images) < 2:
        raise CnnvizError("give a content image and at least one style image (or none for the bundled demo)")
    if sweep not in (None, *SWEEPS):
        raise CnnvizError(f"unknown --sweep '{sweep}' (choices: {', '.join(SWEEPS)})")
    check_finite(**{"content-weight/--alpha": content_weight, "style-weight/--beta": style_weight}, tv_weight=tv_weight)
    settings = loop.settings(run)
    content, styles = images[0], images[1:]
    stem = "_".join(image_stem(i) for i in images)
    blend = list(parse_floats(style_blend, "--style-blend")) or None
    layer_weights = list(parse_floats(style_layer_weights, "--style-layer-weights")) or None
    row = [Cell(as_image(content, size), "content"), Cell(as_image(styles[0], style_size or size), "style")]
    hooked = run.load()
    kwargs = dict(
        style_blend=blend, content_weight=content_weight, style_weight=style_weight,
        content_layers=hooked.table.parse(content_layers), style_layers=hooked.table.parse(style_layers),
        style_layer_weights=layer_weights, tv_weight=tv_weight, size=size, style_size=style_size, init=init,
        preserve_color=preserve_color, settings=settings,
    )
    cells = sweep_cells(sweep, content_weight, size, style_size) if sweep else [("", "", {})]
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
