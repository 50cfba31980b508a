"""``cnnviz texture``: Gram texture synthesis, or the paper's grid of layer sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.analyzers.style import PAPER_TEXTURE_SETS
from cnnviz.analyzers.texture import DEFAULT_LAYERS, texture
from cnnviz.cli import common
from cnnviz.cli.options import Device, Lr, Model, Optimizer, Out, Quiet, SaveEvery, Scales, Seed, Size, Threads, WeightsOpt
from cnnviz.cli.progress import progress
from cnnviz.core.images import image_path, load_image
from cnnviz.errors import CnnvizError
from cnnviz.gallery.grid import Cell, caption, draw_grid


def command(
    sources: Annotated[list[str] | None, typer.Argument(help="Texture image file(s) or bundled names.")] = None,
    layers: Annotated[str, typer.Option(help="Comma list of layers whose Grams are matched.")] = ",".join(DEFAULT_LAYERS),
    layer_weights: Annotated[str, typer.Option(help="Comma list of w_l (default: equal).")] = "",
    layer_sets: Annotated[str | None, typer.Option(help="'paper': the grid of Gatys 2015 (up to conv1_1 ... pool4).")] = None,
    size: Size = 256,
    source_size: Annotated[int | None, typer.Option(help="Long side the source is read at (default: --size).")] = None,
    init: Annotated[str, typer.Option(help="noise, zeros, or an image file.")] = "noise",
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
    """Synthesize a texture by matching Gram matrices (Gatys, Ecker & Bethge 2015)."""
    out = common.check_out(out)
    if layer_sets not in (None, "paper"):
        raise CnnvizError(f"unknown --layer-sets '{layer_sets}' (choices: paper)")
    settings = common.settings(optimizer, iters, lr, scales, seed)
    hooked = common.model(model, weights, device, threads)
    sources = sources or ["starry_night"]
    stems = [Path(image_path(s)).stem for s in sources]
    sets = dict(PAPER_TEXTURE_SETS) if layer_sets else {"custom": tuple(hooked.table.parse(layers))}
    weights_list = list(common.parse_floats(layer_weights, "--layer-weights")) or None
    rows = []
    for source, stem in zip(sources, stems):
        row = [Cell(load_image(source, source_size or size), "source")]
        for set_name, set_layers in sets.items():
            suffix = f"_{set_name}" if layer_sets else ""
            path = out / f"texture_{stem}{suffix}.png"
            with progress(f"texture {stem}{suffix}", quiet, path, save_every) as callback:
                output = texture(hooked, source, layers=set_layers, layer_weights=weights_list, size=size,
                                 source_size=source_size, init=init, settings=settings, callback=callback)
            png = common.save(output, path)
            row.append(Cell(output.image, caption(output.record), png))
        rows.append(row)
    if layer_sets:
        grid = draw_grid(rows, out / "texture_grid.png", col_titles=["source", *(f"up to {k}" for k in sets)],
                         row_titles=stems, analyzer="texture", title=f"Texture synthesis, {hooked.name} ({hooked.weights.id}), {size}px")
        common.console.print(f"wrote {grid}", highlight=False)
