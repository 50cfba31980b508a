"""The one exception type for mistakes a user can make (bad names, files, options), and the one note."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnvizError(Exception):
    """A user error: the CLI prints it on one line as ``error: ...`` and exits with code 2."""


class CnnvizNote(UserWarning):
    """Something a user should know about a choice made for them (a class taken from a longer name): the CLI
    prints it as one ``note: ...`` line; in Python it is a warning."""


def unknown(kind: str, name: str, choices: Iterable[str]) -> CnnvizError:
    """An error for an unknown name that suggests the closest valid ones (difflib)."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return CnnvizError(f"unknown {kind} '{name}'{hint} (choices: {shown})")
