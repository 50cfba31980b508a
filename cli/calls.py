"""One gallery figure as a call of a CLI command: its exact ``cnnviz ...`` line, and whether a folder
already holds its finished grids (for ``cnnviz gallery --resume``).

The gallery builds every figure by calling a command's function with keyword arguments; the same
arguments, mapped through the command's Click parameters, give the command line a user can paste, and
that line (with the cnnviz version) is what a grid's sidecar records and ``--resume`` compares.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import typer
import typer.main

from cnnviz import __version__
from cnnviz.figures import recording

UNSHOWN = {"out", "quiet", "device", "threads"}
"""Options that change where and how fast a figure is made, not what it shows."""


class Call:
    """A command function (``cnnviz.cli.<name>.command``) with the keyword arguments to call it with."""

    def __init__(self, command: Callable[..., Any], **kwargs: Any) -> None:
        self.command = command
        self.kwargs = kwargs

    @property
    def name(self) -> str:
        """The subcommand's name: its module's, as ``cnnviz.cli.app`` registers it."""
        return self.command.__module__.rsplit(".", 1)[-1]

    def argv(self) -> list[str]:
        """The arguments after ``cnnviz NAME`` that make the same call (defaults and UNSHOWN left out)."""
        app = typer.Typer()
        app.command()(self.command)
        words: list[str] = []
        for param in typer.main.get_command(app).params:
            value = self.kwargs.get(param.name, param.default)
            if param.name in UNSHOWN or value == param.default or value is None:
                continue
            values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            if param.param_type_name == "argument":
                words += values
            elif getattr(param, "is_flag", False):
                words.append(param.opts[0] if value else param.secondary_opts[0])
            else:
                long = next(o for o in param.opts if o.startswith("--"))
                for v in values:
                    words += [long, v]
        return words

    def line(self) -> str:
        """The command line a user can paste: ``cnnviz NAME ARGS``."""
        return shlex.join(["cnnviz", self.name, *self.argv()])

    def record(self) -> dict[str, Any]:
        """What a grid's sidecar says about the call that made it (compared by ``--resume``)."""
        return {"command": self.line(), "cnnviz_version": __version__}

    def finished(self, folder: Path) -> list[Path]:
        """The grids in ``folder`` that this call made, with the same version and every cell file
        still there; empty when the call must run (again)."""
        wanted = self.record()
        grids = []
        for sidecar in sorted(folder.glob("*.json")):
            data = _json(sidecar)
            made = data.get("figure") or {}
            if data.get("kind") != "grid" or {k: made.get(k) for k in wanted} != wanted:
                continue
            cells = [name for row in data.get("cells", []) for name in row if name]
            if not sidecar.with_suffix(".png").is_file() or not all((folder / c).is_file() for c in cells):
                return []
            grids.append(sidecar.with_suffix(".png"))
        return grids

    def run(self) -> None:
        """Call the command; every grid it draws records this call and how long it took."""
        with recording({**self.record(), **_source()}):
            self.command(**self.kwargs)


@lru_cache(maxsize=1)
def _source() -> dict[str, Any]:
    """The git commit cnnviz runs from, and whether its tracked files differ from it (empty outside a checkout)."""
    here = str(Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if commit.returncode or status.returncode:
        return {}
    return {"git_commit": commit.stdout.strip(), "git_modified": bool(status.stdout.strip())}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
