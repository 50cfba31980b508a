"""``cnnviz invert``: feature inversion from one layer, or a sweep over layers as a grid."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.inversion import DEFAULT_TV_WEIGHT, invert
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, loop_options, run_options
from cnnviz.cli.parse import check_finite
from cnnviz.cli.progress import progress
from cnnviz.core.images import image_stem
from cnnviz.errors import CnnvizError
from cnnviz.figures import Cell, caption, draw_grid, wrap

DEFAULT_LAYER = "relu4_3"


@run_options(model="vgg16")
@loop_options(optimizer="lbfgs", iters=200)
def command(
    image: Annotated[str, typer.Argument(help="Image file or bundled image name (see `cnnviz images`).")] = "astronaut",
    layer: Annotated[str | None, typer.Option(help=f"Layer to invert (default {DEFAULT_LAYER}).")] = None,
    layers: Annotated[str | None, typer.Option(help="'all' (relu1_1 ... relu5_3) or a comma list: one grid.")] = None,
    size: Size = 256,
    tv_weight: Annotated[float, typer.Option(help="λ_TV, weight of the total-variation prior.")] = DEFAULT_TV_WEIGHT,
    tv_beta: Annotated[float, typer.Option(help="β of R_TV^β (2 in the paper's experiments).")] = 2.0,
    alpha_weight: Annotated[float, typer.Option(help="λ_α of the α-norm prior (0 = off).")] = 0.0,
    init: Annotated[str, typer.Option(help="noise, zeros, content, or an image file.")] = "noise",
    *,
    run: Run,
    loop: Loop,
) -> None:
    """Reconstruct an image from its features at a layer (Mahendran & Vedaldi 2015).

    Examples:

      cnnviz invert                              # the bundled astronaut from relu4_3

      cnnviz invert photo.jpg --layer relu2_2

      cnnviz invert --layers all --size 128      # relu1_1 ... relu5_3 as one grid
    """
    if layer is not None and layers is not None:
        raise CnnvizError("give --layer or --layers, not both")
    check_finite(tv_weight=tv_weight, tv_beta=tv_beta, alpha_weight=alpha_weight)
    settings = loop.settings(run)
    stem = image_stem(image)
    hooked = run.load()
    names = hooked.table.parse(layers) if layers else [hooked.table.get(layer or DEFAULT_LAYER).name]
    kwargs = dict(size=size, tv_weight=tv_weight, tv_beta=tv_beta, alpha_weight=alpha_weight, init=init, settings=settings)
    cells = {}
    for name in names:
        path = run.out / f"invert_{stem}_{name}.png"
        with progress(f"invert {name}", run.quiet, path, loop.save_every) as callback:
            output = invert(hooked, image, name, callback=callback, **kwargs)
        png = common.save(output, path, run)
        cells[name] = Cell(output.image, caption(output.record), png, title=name)
    if layers:
        rows = wrap(names)
        run.wrote(draw_grid([[cells[name] for name in row] for row in rows], run.out / f"invert_{stem}_grid.png",
                            row_titles=[stem] + [""] * (len(rows) - 1), analyzer="invert",
                            title=f"Feature inversion, {hooked.name} ({hooked.weights.id}), {size}px"))
