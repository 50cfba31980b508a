"""``cnnviz``: one command per analyzer, plus layers, models, images, classes, gallery and microscope.

Every user mistake is a ``CnnvizError``: printed as one ``error: ...`` line, exit code 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer import Abort, Exit
from typer._click.exceptions import ClickException

from cnnviz import __version__
from cnnviz.cli import ascent, gallery, head, invert, microscope, patches, saliency, texture, transfer
from cnnviz.cli.options import Run, remove_created, run_options
from cnnviz.errors import CnnvizError, CnnvizNote

if TYPE_CHECKING:
    from cnnviz.core.hooked import HookedModel

app = typer.Typer(
    name="cnnviz",
    help="Show what a convolutional network sees: saliency, gradient ascent, feature inversion, texture "
         "synthesis and style transfer, offline on bundled networks and images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)
app.command("saliency")(saliency.command)
app.command("ascent")(ascent.command)
app.command("invert")(invert.command)
app.command("texture")(texture.command)
app.command("transfer")(transfer.command)
app.command("patches")(patches.command)
app.command("gallery")(gallery.command)
app.command("microscope")(microscope.command)
app.add_typer(head.app, name="head")


def _version(value: bool) -> None:
    if value:
        console.print(f"cnnviz {__version__}", highlight=False)
        raise Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Show what a convolutional network sees."""


@app.command()
@run_options(model="vgg16")
def layers(
    name: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="The model (same as --model).")] = None,
    *,
    run: Run,
) -> None:
    """List a model's layers: name, kind, output channels, stride and receptive field in pixels at 224 px
    (also written to OUT/layers_MODEL.json).

    Examples:

      cnnviz layers                                  # VGG-16 with the papers' names

      cnnviz layers efficientnet_lite0

      cnnviz layers resnet18 --weights random       # reused modules: layer1.0.relu, layer1.0.relu_1
    """
    from cnnviz.core.files import atomic_write
    from cnnviz.core.hooked import describe
    from cnnviz.core.models import get_spec

    model = name or run.model
    offline = get_spec(model).default_weights == "bundled"
    hooked = replace(run, model=model, weights=run.weights or (None if offline else "random")).load()
    rows = [(*row, _receptive_field(hooked, row[0]) if row[3] is not None else None) for row in describe(hooked)]
    table = Table(title=f"{hooked.name} ({hooked.weights.id})")
    for column in ("layer", "kind", "channels", "stride", "rf"):
        table.add_column(column, justify="left" if column in ("layer", "kind") else "right")
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    if not run.quiet:
        console.print(table)
    keys = ("layer", "kind", "channels", "stride", "receptive_field")
    text = json.dumps([dict(zip(keys, row)) for row in rows], indent=1)
    path = run.out / f"layers_{hooked.spec.name}.json"
    run.wrote(atomic_write(path, lambda tmp: tmp.write_text(text + "\n")))


def _receptive_field(model: HookedModel, layer: str) -> int | str | None:
    """A layer's receptive field at 224 px: its side, HxW if not square, None where it cannot be computed."""
    from cnnviz.core.receptive import field

    try:
        rf = field(model, layer)
    except CnnvizError:
        return None
    if rf is None:
        return None
    return rf.size[0] if rf.size[0] == rf.size[1] else f"{rf.size[0]}x{rf.size[1]}"


@app.command()
def models() -> None:
    """List the models and which weights are available offline."""
    from cnnviz.core.models import get_spec, known_names
    from cnnviz.core.weights import resolve

    table = Table(title="models")
    for column in ("model", "layer names", "offline weights"):
        table.add_column(column)
    for name in known_names():
        spec = get_spec(name)
        offline = ["random"]
        if spec.default_weights == "bundled":
            offline.insert(0, "bundled")
        elif resolve(spec, "imagenet").path.exists():
            offline.insert(0, "imagenet (hub cache)")
        names = "papers' VGG names" if spec.is_vgg else "readable names" if spec.is_own else "module paths"
        table.add_row(name, names, ", ".join(offline))
    console.print(table)


@app.command()
def images() -> None:
    """List the bundled images, by kind, with the names the commands accept."""
    from cnnviz.core.images import bundled_images

    table = Table(title="bundled images (sources: cnnviz/assets/images/SOURCES.md)")
    table.add_column("kind")
    table.add_column("names")
    for kind in ("content", "style", "texture"):
        table.add_row(kind, ", ".join(bundled_images(kind)))
    console.print(table)


@app.command()
def classes(
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose classes to list.")] = "efficientnet_lite0",
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="Its weights (see cnnviz models).")] = None,
    find: Annotated[str | None, typer.Option(help="Only classes whose name contains this text.")] = None,
) -> None:
    """List the classes a model knows, with their indices (for --class NAME or --class INDEX).

    Examples:

      cnnviz classes --find cat

      cnnviz classes --model vgg16+head
    """
    from cnnviz.analyzers.target import classes_of
    from cnnviz.core.hooked import load_model

    names = classes_of(load_model(model, weights, "cpu"))
    for index, name in enumerate(names):
        if find is None or find.lower() in name.lower():
            console.print(f"{index:4d}  {name}", highlight=False)


_show_python_warning = warnings.showwarning


def _note(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """Show a ``CnnvizNote`` as one ``note:`` line; any other warning as Python would."""
    if issubclass(category, CnnvizNote):
        err_console.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)
    else:
        _show_python_warning(message, category, *args, **kwargs)


def run() -> None:
    """Run the app, turning user errors into one line and exit code 2, and notes into ``note:`` lines."""
    warnings.showwarning = _note
    warnings.simplefilter("always", CnnvizNote)
    try:
        code = app(standalone_mode=False)
    except CnnvizError as err:
        fail(str(err))
    except ClickException as err:
        if not err.format_message().strip():
            sys.exit(2)
        fail(err.format_message())
    except (Abort, KeyboardInterrupt):
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    except Exit as err:
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str) -> None:
    """Print one ``error:`` line (newlines folded), remove the output folders the run created and left
    empty, and exit with code 2."""
    remove_created()
    err_console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(2)
