"""``cnnviz invert``: feature inversion from one layer, or a sweep over layers as a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.analyzers.inversion import DEFAULT_TV_WEIGHT, invert
from cnnviz.cli import common
from cnnviz.cli.options import Device, Lr, Model, Optimizer, Out, Quiet, SaveEvery, Scales, Seed, Size, Threads, WeightsOpt
from cnnviz.cli.progress import progress
from cnnviz.core.images import image_path
from cnnviz.gallery.grid import Cell, caption, draw_grid


def command(
    image: Annotated[str, typer.Argument(help="Image file or bundled image name.")] = "astronaut",
    layer: Annotated[str, typer.Option(help="Layer to invert.")] = "relu4_3",
    layers: Annotated[str | None, typer.Option(help="'all' (relu1_1 ... relu5_3) or a comma list: one grid.")] = None,
    size: Size = 256,
    tv_weight: Annotated[float, typer.Option(help="λ_TV, weight of the total-variation prior.")] = DEFAULT_TV_WEIGHT,
    tv_beta: Annotated[float, typer.Option(help="β of R_TV^β (2 in the paper's experiments).")] = 2.0,
    alpha_weight: Annotated[float, typer.Option(help="λ_α of the α-norm prior (0 = off).")] = 0.0,
    init: Annotated[str, typer.Option(help="noise, zeros, content, or an image file.")] = "noise",
    optimizer: Optimizer = "lbfgs",
    iters: Annotated[int, typer.Option(help="Iterations per scale.")] = 200,
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
    """Reconstruct an image from its features at a layer (Mahendran & Vedaldi 2015)."""
    out = common.check_out(out)
    settings = common.settings(optimizer, iters, lr, scales, seed)
    hooked = common.model(model, weights, device, threads)
    stem = Path(image_path(image)).stem
    names = hooked.table.parse(layers) if layers else [hooked.table.get(layer).name]
    kwargs = dict(size=size, tv_weight=tv_weight, tv_beta=tv_beta, alpha_weight=alpha_weight, init=init, settings=settings)
    cells = []
    for name in names:
        path = out / f"invert_{stem}_{name}.png"
        with progress(f"invert {name}", quiet, path, save_every) as callback:
            output = invert(hooked, image, name, callback=callback, **kwargs)
        png = common.save(output, path)
        cells.append(Cell(output.image, caption(output.record), png))
    if layers:
        grid = draw_grid([cells], out / f"invert_{stem}_grid.png", col_titles=names, row_titles=[stem],
                         analyzer="invert", title=f"Feature inversion, {hooked.name} ({hooked.weights.id}), {size}px")
        common.console.print(f"wrote {grid}", highlight=False)
