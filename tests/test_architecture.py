"""The package map holds: imports point down the layers, functions stay short, and the public analyzers
share one calling shape and one vocabulary with the command line."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest
import typer
import typer.main

import cnnviz
from cnnviz.analyzers.common import Output
from cnnviz.analyzers.patches import Patches
from cnnviz.cli import ascent, invert, patches, saliency, texture, transfer

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "optim", "losses", "optvis", "analyzers", "api", "figures", "gallery", "microscope", "cli")
"""Bottom to top: a module may import its own layer and the layers below it, never one above."""
UNIT = {"errors": "core", "training": "analyzers", "notebook": "api", "__main__": "cli"}
"""Top-level modules that belong to a layer by what they do."""
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    files = {**{".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / "cnnviz").rglob("*.py")},
             **{"cnnviz.cli." + p.stem: p for p in (ROOT / "cli").glob("*.py")}}
    return {name.removesuffix(".__init__"): path for name, path in files.items()}


def _layer(module: str) -> str | None:
    """The layer of a module ``cnnviz.X...``; None for the package root (its version and lazy exports)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return UNIT.get(parts[1], parts[1])


def _imports(path: Path) -> set[str]:
    """The cnnviz modules ``path`` imports, anywhere in it (inside functions too)."""
    modules = _modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {name for name in found if name in modules}


def test_every_module_belongs_to_a_layer():
    assert {_layer(name) for name in _modules()} - {None} <= set(LAYERS)


def test_imports_point_down_the_layers():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        own = LAYERS.index(_layer(name)) if _layer(name) else len(LAYERS)
        for imported in _imports(path):
            if _layer(imported) is not None and LAYERS.index(_layer(imported)) > own:
                upward.append(f"{name} imports {imported}")
    assert upward == []


def test_the_core_imports_nothing_above_it_and_analyzers_no_gallery_or_cli():
    for name, path in _modules().items():
        layers = {_layer(i) for i in _imports(path)} - {None}
        if _layer(name) == "core":
            assert layers <= {"core"}, name
        if _layer(name) == "analyzers":
            assert not layers & {"figures", "gallery", "cli"}, name


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in [*(ROOT / "cnnviz").rglob("*.py"), *(ROOT / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []


ANALYZERS = {
    "saliency": (["image", "target"], Output), "ascent": (["target"], Output), "render": (["objective"], list[Output]),
    "invert": (["image", "layer"], Output), "texture": (["image"], Output), "transfer": (["image", "styles"], Output),
    "patches": (["images"], Patches),
}
OLD_WORDS = {"cls", "goals", "goal", "source", "sources", "source_size", "score", "blend", "l2", "batch_size"}
"""Names that meant the same as another before the vocabulary was made one (``scales`` stays: the coarse-to-fine
sizes of the optimization loop, where the patches scan has ``sizes``)."""


@pytest.mark.parametrize("name", ANALYZERS)
def test_public_analyzers_share_one_shape(name):
    fn = getattr(cnnviz, name)
    first, returns = ANALYZERS[name]
    params = inspect.signature(fn).parameters
    positional = [p for p, v in params.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == first
    assert {"model", "weights", "device"} <= set(params)
    assert not OLD_WORDS & set(params), OLD_WORDS & set(params)
    optimizing = name in ("ascent", "render", "invert", "texture", "transfer")
    assert ({"settings", "callback"} <= set(params)) == optimizing
    assert typing.get_type_hints(_analyzer(name))["return"] == returns
    result = returns.__args__[0] if typing.get_origin(returns) is list else returns
    members = set(dir(result)) | set(result.__dataclass_fields__)
    assert {"image", "record", "save"} <= members


def _analyzer(name: str):
    from cnnviz.analyzers import ascent as a
    from cnnviz.analyzers import inversion
    from cnnviz.analyzers import patches as p
    from cnnviz.analyzers import saliency as s
    from cnnviz.analyzers import texture as t
    from cnnviz.analyzers import transfer as tr

    return {"saliency": s.saliency, "ascent": a.ascend, "render": a.render, "invert": inversion.invert,
            "texture": t.texture, "transfer": tr.transfer, "patches": p.patches}[name]


CLI_WORD = {"target": "--class"}
"""The one keyword whose flag is the user's word for it: a class target is ``--class``."""


@pytest.mark.parametrize("command, name", [(saliency.command, "saliency"), (ascent.command, "ascent"),
                                           (invert.command, "invert"), (texture.command, "texture"),
                                           (transfer.command, "transfer"), (patches.command, "patches")])
def test_cli_flags_are_the_keywords_names(command, name):
    keywords = set(inspect.signature(_analyzer(name)).parameters)
    app = typer.Typer()
    app.command()(command)
    for param in typer.main.get_command(app).params:
        if param.name in keywords and param.param_type_name == "option":
            assert param.opts[0] == CLI_WORD.get(param.name, "--" + param.name.replace("_", "-")), param.opts
        assert param.name not in OLD_WORDS, param.name
