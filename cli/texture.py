"""``cnnviz texture``: Gram texture synthesis, or the paper's grid of layer sets."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.texture import DEFAULT_ITERS, DEFAULT_LAYERS, PAPER_TEXTURE_SETS, texture
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, loop_options, run_options
from cnnviz.cli.parse import parse_floats
from cnnviz.cli.progress import progress
from cnnviz.core.images import image_stem
from cnnviz.errors import CnnvizError
from cnnviz.figures import Cell, caption, draw_grid


@run_options(model="vgg16")
@loop_options(optimizer="lbfgs", iters=DEFAULT_ITERS)
def command(
    images: Annotated[list[str] | None, typer.Argument(
        help="Texture image file(s) or bundled names (see `cnnviz images`). Default: starry_night.")] = None,
    layers: Annotated[str, typer.Option(help="Comma list of layers whose Grams are matched.")] = ",".join(DEFAULT_LAYERS),
    layer_weights: Annotated[str, typer.Option(help="Comma list of w_l (default: equal).")] = "",
    layer_sets: Annotated[str | None, typer.Option(help="'paper': the grid of Gatys 2015 (up to conv1_1 ... pool4).")] = None,
    size: Size = 256,
    image_size: Annotated[int | None, typer.Option(min=16, help="Long side the source image is read at (default: --size).")] = None,
    init: Annotated[str, typer.Option(help="noise, zeros, content (the source), or an image file.")] = "noise",
    *,
    run: Run,
    loop: Loop,
) -> None:
    """Synthesize a texture by matching Gram matrices (Gatys, Ecker & Bethge 2015).

    Examples:

      cnnviz texture brick                             # a new brick wall, from noise

      cnnviz texture starry_night brick --layer-sets paper   # the paper's grid, up to conv1_1 ... pool4
    """
    if layer_sets not in (None, "paper"):
        raise CnnvizError(f"unknown --layer-sets '{layer_sets}' (choices: paper)")
    settings = loop.settings(run)
    images = images or ["starry_night"]
    stems = [image_stem(image) for image in images]
    weights_list = list(parse_floats(layer_weights, "--layer-weights")) or None
    hooked = run.load()
    sets = dict(PAPER_TEXTURE_SETS) if layer_sets else {"custom": tuple(hooked.table.parse(layers))}
    rows = []
    for image, stem in zip(images, stems):
        row: list[Cell] = []
        for set_name, set_layers in sets.items():
            suffix = f"_{set_name}" if layer_sets else ""
            path = run.out / f"texture_{stem}{suffix}.png"
            with progress(f"texture {stem}{suffix}", run.quiet, path, loop.save_every) as callback:
                output = texture(hooked, image, layers=set_layers, layer_weights=weights_list, size=size,
                                 image_size=image_size, init=init, settings=settings, callback=callback)
            png = common.save(output, path, run)
            if not row:
                row.append(Cell(output.input, "source"))
            row.append(Cell(output.image, caption(output.record), png))
        rows.append(row)
    if layer_sets:
        name = "_".join(dict.fromkeys(stems))
        run.wrote(draw_grid(rows, run.out / f"texture_{name}_grid.png", col_titles=["source", *(f"up to {k}" for k in sets)],
                            row_titles=stems, analyzer="texture",
                            title=f"Texture synthesis, {hooked.name} ({hooked.weights.id}), {size}px"))
