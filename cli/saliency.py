"""``cnnviz saliency``: saliency maps of images under every method, as one grid (rows: images)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnviz.analyzers.saliency import METHODS, get_method, saliency
from cnnviz.analyzers.saliency.faithfulness import RANDOM, faithfulness
from cnnviz.analyzers.saliency.sanity import RANDOMIZATIONS, sanity
from cnnviz.analyzers.target import TOP, is_class
from cnnviz.cli import common
from cnnviz.cli.options import Run, Size, run_options
from cnnviz.cli.parse import parse_names
from cnnviz.core.hooked import HookedModel, with_head
from cnnviz.core.images import image_stem
from cnnviz.errors import CnnvizError
from cnnviz.figures import Cell, caption, draw_faithfulness, draw_grid, draw_sanity, draw_similarity


def _methods(text: str) -> list[str]:
    names = list(METHODS) if text == "all" else [get_method(name).name for name in parse_names(text)]
    if not names:
        raise CnnvizError("--methods needs at least one method")
    return names


@run_options(model="efficientnet_lite0")
def command(
    images: Annotated[list[str] | None, typer.Argument(
        help="Image files or bundled names (see `cnnviz images`): one grid row each. Default: chelsea.")] = None,
    target: Annotated[str | None, typer.Option("--class", help=f"Class name or index (default '{TOP}': each image's most "
                                                                "probable class).")] = None,
    layer: Annotated[str | None, typer.Option(help="Explain a channel of this layer instead of a class.")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel of --layer, or 'max' (each image's most activated).")] = None,
    y: Annotated[int | None, typer.Option(help="Row of one neuron of the channel (default: the channel's mean).")] = None,
    x: Annotated[int | None, typer.Option(help="Column of one neuron of the channel.")] = None,
    methods: Annotated[str, typer.Option(help=f"Comma list or 'all': {', '.join(METHODS)}.")] = "all",
    gradcam_layer: Annotated[str | None, typer.Option(
        help="Grad-CAM's layer (default: the last spatial ReLU up to the target).")] = None,
    occlusion_window: Annotated[int | None, typer.Option(
        help="Side of occlusion's grey window in pixels (default: 1/7 of the short side).")] = None,
    occlusion_stride: Annotated[int | None, typer.Option(help="Occlusion's stride in pixels (default: half the window).")] = None,
    sanity_check: Annotated[bool, typer.Option("--sanity", help="Adebayo et al.'s check instead of the grid: each map "
                                               "as the model's blocks are randomized from the logits down.")] = False,
    randomization: Annotated[str, typer.Option(help=f"--sanity's steps: {' or '.join(RANDOMIZATIONS)} (one block at a "
                                                    "time).")] = RANDOMIZATIONS[0],
    faithfulness_check: Annotated[bool, typer.Option("--faithfulness", help="Petsiuk et al.'s deletion and insertion "
                                                     "curves of each map instead of the grid, against a random order.")] = False,
    size: Size = 256,
    *,
    run: Run,
) -> None:
    """Saliency maps: what in each image a class (or a channel) responds to (9 methods), and whether to trust them.

    Columns: the input, then backprop (the signed gradient), simonyan (max over colours of its magnitude,
    Simonyan et al. 2014), deconvnet and guided backprop (Springenberg et al. 2015), smoothgrad,
    integrated gradients, Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017), occlusion (Zeiler &
    Fergus 2014). The model's top-5 classes are printed for each image. --sanity and --faithfulness
    check the chosen methods instead (figures, a table, the numbers in the sidecars).

    Examples:

      cnnviz saliency                                  # chelsea, its top class, on EfficientNet-Lite0

      cnnviz saliency chelsea coffee --class "tiger cat"

      cnnviz saliency coffee --model vgg16 --layer relu4_3 --channel max

      cnnviz saliency chelsea --methods backprop,guided,gradcam --sanity --faithfulness
    """
    images = images or ["chelsea"]
    chosen = _methods(methods)
    if randomization not in RANDOMIZATIONS:
        raise CnnvizError(f"unknown --randomization '{randomization}' (choices: {', '.join(RANDOMIZATIONS)})")
    hooked = run.load(with_head(run.model, run.weights) if is_class(layer) else run.model)
    target_args = dict(layer=layer, channel=channel, y=y, x=x, gradcam_layer=gradcam_layer, occlusion_window=occlusion_window,
                       occlusion_stride=occlusion_stride, size=size, seed=run.seed)
    if not (sanity_check or faithfulness_check):
        _grid(hooked, images, target, chosen, target_args, run)
    for image in images:
        if sanity_check:
            _sanity(hooked, image, target, chosen, randomization, target_args, run)
        if faithfulness_check:
            _faithfulness(hooked, image, target, chosen, target_args, run)


def _grid(hooked: HookedModel, images: list[str], target: str | None, chosen: list[str], target_args: dict, run: Run) -> None:
    """The saliency grid: a row per image, a column per method."""
    size = target_args["size"]
    stems = [image_stem(image) for image in images]
    rows, titles = [], []
    for image, stem in zip(images, stems):
        outputs = {}
        for method in chosen:
            output = saliency(hooked, image, target, method=method, **target_args)
            outputs[method] = output
        params = next(iter(outputs.values())).record.params
        if "top5" in params:
            run.tell(f"{stem}: top-5 " + ", ".join(f"{name} {p:.2f}" for name, p in params["top5"]))
        run.tell(f"{stem}: explaining {params['target']} (score {params['score']:.3g})")
        pngs = {method: common.save(output, run.out / f"saliency_{stem}_{params['target_tag']}_{method}.png", run)
                for method, output in outputs.items()}
        first = next(iter(outputs.values()))
        rows.append([Cell(first.input, caption(first.record))]
                    + [Cell(output.image, path=pngs[method]) for method, output in outputs.items()])
        titles.append(f"{stem}\n{params['target']}")
    name = "_".join(dict.fromkeys(stems))
    run.wrote(draw_grid(rows, run.out / f"saliency_{name}_grid.png", col_titles=["input", *chosen], row_titles=titles,
                        analyzer="saliency", title=f"Saliency, {hooked.name} ({hooked.weights.id}), {size}px"))


def _sanity(hooked: HookedModel, image: str, target: str | None, chosen: list[str], randomization: str, target_args: dict,
            run: Run) -> None:
    """The randomization figure and similarity plot of one image, and the maps (.npz)."""
    check = sanity(hooked, image, target, methods=chosen, randomization=randomization, **target_args)
    params = check.record.params
    stem = f"saliency_{image_stem(image)}_{params['target_tag']}_sanity_{randomization}"
    title = (f"Sanity check ({randomization} randomization), {hooked.name} ({hooked.weights.id}), {params['target']}, "
             f"{target_args['size']}px")
    run.wrote(draw_sanity(check, run.out / f"{stem}.png", title))
    run.wrote(draw_similarity(check, run.out / f"{stem}_similarity.png", title))
    run.wrote(check.save(run.out / f"{stem}_maps.npz"))
    last = len(check.steps) - 1
    run.tell(f"{image_stem(image)}: with every block random ({randomization}), rank correlation / SSIM with the original: "
             + ", ".join(f"{m} {check.spearman[m][last]:.2f} / {check.ssim[m][last]:.2f}" for m in check.methods))


def _faithfulness(hooked: HookedModel, image: str, target: str | None, chosen: list[str], target_args: dict, run: Run) -> None:
    """The deletion/insertion plot of one image, its table, and the maps (.npz)."""
    result = faithfulness(hooked, image, target, methods=chosen, **target_args)
    params = result.record.params
    stem = f"saliency_{image_stem(image)}_{params['target_tag']}_faithfulness"
    title = f"Deletion and insertion, {hooked.name} ({hooked.weights.id}), {params['target']}, {target_args['size']}px"
    run.wrote(draw_faithfulness(result, run.out / f"{stem}.png", title))
    run.wrote(result.save(run.out / f"{stem}_maps.npz"))
    if not run.quiet:
        table = Table(title=f"{image_stem(image)}: area under the curve ({params['target']}, class {result.score})")
        for column in ("method", "deletion (lower is better)", "insertion (higher is better)"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for name in [*result.methods, RANDOM]:
            table.add_row(name, f"{result.auc[name]['deletion']:.3f}", f"{result.auc[name]['insertion']:.3f}")
        common.console.print(table)
