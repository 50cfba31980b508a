"""Run the notebooks in docs/notebooks with a real Jupyter kernel and write them back with their outputs.

Each notebook records in its metadata (``cnnviz.made_by``) a hash of every code cell, of every cnnviz
module its run imported and of the bundled assets, with the torch and torchvision versions: what made its
outputs. ``tests/test_notebooks.py`` runs the notebooks again and compares that record with the current
code; when they differ, this is the command that refreshes them (a few minutes on 2 CPU cores):

    python scripts/notebooks.py               # every notebook
    python scripts/notebooks.py lecture       # one, by name

The kernel is this Python (the venv's), through a kernel spec written to a temporary folder, so the run
does not depend on which kernels the machine has registered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "docs" / "notebooks"
KERNEL = "cnnviz-venv"
TIMEOUT = 600  # seconds per cell
PACKAGES = ("torch", "torchvision")
PROBE = ("import json, sys\n"
         "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())\n"
         "                        if (n == 'cnnviz' or n.startswith('cnnviz.')) and getattr(m, '__file__', None))))")
"""A last cell, run and removed again: the cnnviz modules the notebook imported."""
COMMAND = "python scripts/notebooks.py"


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks, or those named (by stem)."""
    found = sorted(FOLDER.glob("*.ipynb"))
    if not names:
        return found
    chosen = [path for path in found if path.stem in names]
    if len(chosen) < len(names):
        raise SystemExit(f"error: no notebook {sorted(set(names) - {p.stem for p in chosen})} in {FOLDER}")
    return chosen


@contextmanager
def kernel() -> Iterator[KernelManager]:
    """A kernel manager whose only kernel spec runs ipykernel on this interpreter."""
    with tempfile.TemporaryDirectory(prefix="cnnviz-kernel-") as folder:
        spec = Path(folder) / KERNEL
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "cnnviz (this venv)", "language": "python"}))
        specs = KernelSpecManager(kernel_dirs=[folder], ensure_native_kernel=False)
        yield KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(path: Path) -> tuple[nbformat.NotebookNode, list[Path]]:
    """Run the notebook at ``path`` in a fresh kernel (in its folder); returns it with its outputs, and the
    cnnviz modules it imported. A cell that fails raises nbclient's ``CellExecutionError``."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    with kernel() as manager:
        NotebookClient(notebook, km=manager, timeout=TIMEOUT, record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    probe = notebook.cells.pop()
    modules = json.loads("".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream"))
    return notebook, [Path(module) for module in modules]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def made_by(notebook: nbformat.NotebookNode, modules: list[Path]) -> dict[str, str]:
    """What made a run's outputs: the code cells, each imported cnnviz module and bundled asset (by path
    from the repository root), and the torch and torchvision versions."""
    cells = "\n\0".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    record = {"cells": _digest(cells.encode())}
    assets = [p for p in (ROOT / "cnnviz" / "assets").rglob("*") if p.is_file()]
    for path in sorted({*modules, *assets}):
        record[path.resolve().relative_to(ROOT).as_posix()] = _digest(path.read_bytes())
    record.update({name: metadata.version(name) for name in PACKAGES})
    return record


def stale(committed: dict[str, str], current: dict[str, str]) -> list[str]:
    """The entries of a ``made_by`` record that differ between the committed notebook and this code."""
    return sorted(key for key in {*committed, *current} if committed.get(key) != current.get(key))


def refresh(path: Path) -> None:
    """Run ``path`` and write it back with its outputs and its ``made_by`` record."""
    notebook, modules = execute(path)
    notebook.metadata["cnnviz"] = {"made_by": made_by(notebook, modules), "refresh": COMMAND}
    nbformat.write(notebook, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    for path in notebooks(parser.parse_args().names):
        print(f"running {path.relative_to(ROOT)}", flush=True)
        refresh(path)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
