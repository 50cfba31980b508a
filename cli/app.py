"""``cnnviz``: one command per analyzer, plus layers, models and gallery.

Every user mistake is a ``CnnvizError``: printed as one ``error: ...`` line, exit code 2.
"""

from __future__ import annotations

import sys

import typer
from typer import Abort, Exit
from typer._click.exceptions import ClickException
from rich.console import Console
from rich.table import Table

from cnnviz.cli import gallery, invert, texture, transfer
from cnnviz.cli import ascent, head, saliency
from cnnviz.cli.options import Device, WeightsOpt
from cnnviz.errors import CnnvizError

app = typer.Typer(
    name="cnnviz",
    help="Show what a convolutional network sees.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
app.command("invert")(invert.command)
app.command("texture")(texture.command)
app.command("transfer")(transfer.command)
app.command("gallery")(gallery.command)
app.command("saliency")(saliency.command)
app.command("ascent")(ascent.command)
app.add_typer(head.app, name="head")
err_console = Console(stderr=True)


@app.command()
def layers(model: str = typer.Argument("vgg16", help="Model name."), weights: WeightsOpt = None, device: Device = "cpu") -> None:
    """List a model's layers: name, kind, output channels, stride."""
    from cnnviz.core.hooked import describe, load_model

    from cnnviz.core.models import get_spec

    offline = get_spec(model).default_weights == "bundled"
    hooked = load_model(model, weights or ("bundled" if offline else "random"), device)
    table = Table(title=f"{model} ({hooked.weights.id})")
    for column in ("layer", "kind", "channels", "stride"):
        table.add_column(column, justify="right" if column in ("channels", "stride") else "left")
    for name, kind, channels, stride in describe(hooked):
        table.add_row(name, kind, "" if channels is None else str(channels), "" if stride is None else str(stride))
    console.print(table)


@app.command()
def models() -> None:
    """List the models and which weights are available offline."""
    from cnnviz.core.models import get_spec, model_names
    from cnnviz.core.weights import resolve

    table = Table(title="models")
    for column in ("model", "layer names", "offline weights"):
        table.add_column(column)
    for name in model_names():
        spec = get_spec(name)
        offline = ["random"]
        if name == "vgg16":
            offline.insert(0, "bundled")
        imagenet = resolve(spec, "imagenet").path
        if imagenet is not None and imagenet.exists():
            offline.insert(0, "imagenet (hub cache)")
        table.add_row(name, "papers' VGG names" if spec.is_vgg else "module paths", ", ".join(offline))
    console.print(table)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
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
    """Print one ``error:`` line (newlines folded) and exit with code 2."""
    err_console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(2)
