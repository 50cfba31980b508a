"""The console entry point, kept free of heavy imports so that Ctrl-C while torch loads ends quietly."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the app; Ctrl-C at any point (start-up included) prints one line and exits 130."""
    try:
        from cnnviz.cli.app import run

        run()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
