"""The notebooks in docs/notebooks run in a real Jupyter kernel, show their pictures inline and were saved by
the current code; results show themselves in a notebook, and the notebook progress bar stays out of the way.

Whether the committed outputs were made by the current code is decided by hash, not by pixels.
``scripts/notebooks.py`` records in each notebook's metadata a hash of its code cells, of every cnnviz
module its run imported and of the bundled assets, with the torch and torchvision versions; the test runs
the notebook again, recomputes that record and compares. Pixels would be a fragile witness: a seeded run is
deterministic on one CPU, but a CPU with other vector units (AVX-512 or AMX) or another thread count
rounds differently, and 60 to 80 optimization steps amplify that into visibly different pictures, so any
tolerance loose enough to pass everywhere would also pass stale pictures. The hash fails exactly when
what made the outputs changed, names what changed, and says the command that refreshes them.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import notebooks
import numpy as np
import pytest
import torch
from PIL import Image, ImageShow

import cnnviz
from cnnviz import Settings, notebook
from cnnviz.analyzers.common import Output, Outputs
from cnnviz.core import display
from cnnviz.core.records import Record
from cnnviz.errors import CnnvizNote
from cnnviz.optim.settings import Step

MAX_BYTES = 3_000_000
PICTURES = {"lecture": 14, "your_model": 5}
"""How many cells of each notebook make pictures (tagged ``picture``): a tag dropped fails the test."""
PROGRESS = "/s"  # in every notebook progress bar's text: evaluations or images per second


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def _pictures(cell) -> list[Image.Image]:
    return [_png(base64.b64decode(o.data["image/png"])) for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]


def _tagged(notebook) -> list:
    return [cell for cell in notebook.cells if "picture" in cell.metadata.get("tags", [])]


@pytest.fixture(scope="module", params=sorted(PICTURES))
def run(request):
    """(name, committed notebook, executed notebook, cnnviz modules the run imported), once per notebook."""
    path = notebooks.FOLDER / f"{request.param}.ipynb"
    executed, modules = notebooks.execute(path)
    return request.param, nbformat.read(path, as_version=4), executed, modules


@pytest.mark.slow
def test_every_cell_runs_and_picture_cells_show_pictures(run):
    name, _, executed, _ = run
    assert not [o for cell in executed.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    tagged = _tagged(executed)
    assert len(tagged) == PICTURES[name]
    for cell in tagged:
        pictures = _pictures(cell)
        assert pictures and all(p.width >= 32 and p.height >= 32 for p in pictures), cell.source


@pytest.mark.slow
def test_progress_is_one_bar_per_call_updated_in_place(run):
    """Every call that optimizes or scans leaves one bar (its display updated in place to the end), nothing per
    evaluation; a call with ``quiet=True`` leaves none."""
    _, _, executed, _ = run
    bars = 0
    for cell in executed.cells:
        outputs = cell.get("outputs", [])
        shown = [o for o in outputs if PROGRESS in o.get("data", {}).get("text/plain", "")]
        assert all(o.output_type == "display_data" and "text/html" in o.data for o in shown)
        for bar in shown:  # updated to the run's end
            done, total = re.search(r"(\d+)/(\d+)", bar.data["text/plain"]).groups()
            assert done == total, bar.data["text/plain"]
        assert not [o for o in outputs if o.output_type == "stream" and PROGRESS in o.text]
        calls = sum(cell.source.count(f"cnnviz.{f}(") for f in ("ascent", "render", "invert", "texture", "transfer", "patches"))
        if "quiet=True" in cell.source:
            assert not shown, cell.source
        elif " for " not in cell.source:  # a loop's calls show one bar each, counted by the loop, not the text
            assert len(shown) == calls, cell.source
        bars += len(shown)
    assert bars > 0


@pytest.mark.slow
def test_committed_outputs_were_made_by_this_code(run):
    name, committed, executed, modules = run
    made = committed.metadata.get("cnnviz", {}).get("made_by", {})
    changed = notebooks.stale(made, notebooks.made_by(executed, modules))
    assert not changed, (f"docs/notebooks/{name}.ipynb's outputs were made by other code: {', '.join(changed)} changed. "
                         f"Refresh them with: {notebooks.COMMAND} {name}")


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_committed_notebooks_read_without_running(name):
    """On a code host the saved outputs are all there is: each picture cell has its picture, and the file is small."""
    path = notebooks.FOLDER / f"{name}.ipynb"
    assert path.stat().st_size <= MAX_BYTES
    committed = nbformat.read(path, as_version=4)
    assert len(_tagged(committed)) == PICTURES[name]
    assert all(_pictures(cell) for cell in _tagged(committed))
    assert "made_by" in committed.metadata.get("cnnviz", {}), f"run {notebooks.COMMAND} {name}"


def _output(width: int = 40, height: int = 30, seed: int = 0) -> Output:
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return Output(image, Record("invert", "vgg16", "bundled", None, ["relu2_2"], {"relative_error": 0.25}, iterations=7))


def test_an_output_shows_as_its_picture_over_a_one_line_caption():
    out = _output()
    assert out.caption == "invert · vgg16 · relu2_2 · err 0.25 · 7 it"
    assert "\n" not in repr(out) and out.caption in repr(out)
    picture = _png(out._repr_png_()).convert("RGB")
    assert picture.width == display.MIN_WIDTH and picture.height > 30
    left = (display.MIN_WIDTH - 40) // 2
    shown = torch.from_numpy(np.array(picture)[:30, left:left + 40]).permute(2, 0, 1).unsqueeze(0)
    assert torch.equal(shown, out.image.mul(255).round().byte())
    assert np.asarray(picture.convert("L"))[30:].min() < 100  # the caption's text is drawn under the image


def test_a_list_of_outputs_shows_as_one_row():
    row = Outputs([_output(200, 30, 0), _output(150, 50, 1), _output(10, 10, 2)])
    assert isinstance(row, list) and len(row) == 3
    picture = _png(row._repr_png_())
    assert picture.width == 200 + 150 + display.MIN_WIDTH + 2 * display.GAP
    assert picture.height == max(_png(out._repr_png_()).height for out in row)
    assert Outputs()._repr_png_() is None


def test_show_without_a_screen_is_one_note(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(ImageShow, "show", lambda *a, **k: pytest.fail("a viewer was started without a screen"))
    with pytest.warns(CnnvizNote) as notes:
        _output().show()
    assert len(notes) == 1 and "\n" not in str(notes[0].message) and ".save(" in str(notes[0].message)


def test_show_with_a_screen_opens_the_captioned_picture(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    opened = []
    monkeypatch.setattr(ImageShow, "show", lambda image, title=None: opened.append((image.size, title)) or True)
    out = _output()
    out.show()
    Outputs([out, out]).show()
    assert opened == [(out.picture().size, out.caption), (Outputs([out, out]).picture().size, "2 pictures")]


def test_every_kind_of_result_shows_itself(vgg):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    quick = Settings(optimizer="adam", iters=2)
    results = {
        "saliency": cnnviz.saliency(image, layer="relu2_2", channel=0, model=vgg, size=None),
        "render": cnnviz.render(cnnviz.channel("relu1_1", 0), model=vgg, size=32, copies=2, settings=quick),
        "patches": cnnviz.patches([image, image.flip(-1)], layer="relu2_2", channels="0,1", top=2, sizes=[48], model=vgg),
    }
    assert isinstance(results["render"], Outputs) and len(results["render"]) == 2
    for analyzer, result in results.items():
        assert _png(result._repr_png_()).width >= display.MIN_WIDTH
        captions = [r.caption for r in result] if isinstance(result, list) else [result.caption]
        assert all(c.startswith(analyzer.replace("render", "ascent")) for c in captions), captions


def test_importing_cnnviz_loads_neither_torch_nor_ipython():
    """``import cnnviz`` stays light, and the display and progress code never import IPython themselves (captum,
    once an analyzer loads it, imports tqdm.auto, which may)."""
    code = ("import sys, cnnviz; assert 'torch' not in sys.modules and 'IPython' not in sys.modules; "
            "import cnnviz.core.display, cnnviz.notebook; assert 'IPython' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _Kernel:
    """A stand-in for a Jupyter kernel's IPython: ``display`` and its handles' ``update`` are recorded."""

    def __init__(self, monkeypatch) -> None:
        self.shown: list[dict] = []
        self.updates: list[dict] = []
        shell = types.SimpleNamespace(kernel=object())
        handle = types.SimpleNamespace(update=lambda data, raw: self.updates.append(data))
        ipython = types.ModuleType("IPython")
        ipython.get_ipython = lambda: shell
        module = types.ModuleType("IPython.display")
        module.display = lambda data, raw, display_id: self.shown.append(data) or handle
        monkeypatch.setitem(sys.modules, "IPython", ipython)
        monkeypatch.setitem(sys.modules, "IPython.display", module)


def _step(evaluation: int) -> Step:
    return Step(evaluation, evaluation, 50, 64, {"feature": 1.0 / evaluation}, 1.0 / evaluation, 0.01 * evaluation,
                torch.zeros(1, 3, 2, 2))


def test_the_notebook_bar_shows_once_and_updates_in_place(monkeypatch):
    kernel = _Kernel(monkeypatch)
    monkeypatch.setattr(cnnviz.notebook, "EVERY", 3600.0)
    with notebook.progress("invert") as update:
        for evaluation in range(1, 51):
            update(_step(evaluation))
    assert len(kernel.shown) == 1 and "1/50" in kernel.shown[0]["text/plain"]
    assert len(kernel.updates) == 1 and "50/50" in kernel.updates[0]["text/plain"]
    assert '<progress value="50" max="50"' in kernel.updates[0]["text/html"]
    with notebook.progress("invert", quiet=True) as update:
        assert update is None


def test_quiet_silences_the_bar_and_a_callback_is_still_called(monkeypatch, capsys, vgg):
    kernel = _Kernel(monkeypatch)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    steps: list[Step] = []
    cnnviz.invert(image, "relu1_1", model=vgg, size=32, settings=Settings(iters=3), quiet=True, callback=steps.append)
    assert steps and not kernel.shown and not kernel.updates
    cnnviz.invert(image, "relu1_1", model=vgg, size=32, settings=Settings(iters=3), callback=steps.append)
    assert len(kernel.shown) == 1 and len(steps) >= 6
    assert capsys.readouterr() == ("", "")


def test_outside_a_notebook_nothing_is_printed(capsys, vgg):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    cnnviz.invert(image, "relu1_1", model=vgg, size=32, settings=Settings(iters=3))
    cnnviz.patches([image], layer="relu1_1", channels="0", top=1, sizes=[32], model=vgg)
    assert capsys.readouterr() == ("", "")


def test_the_refresh_command_is_documented():
    assert notebooks.COMMAND.split()[-1] == "scripts/notebooks.py" and Path(notebooks.__file__).name == "notebooks.py"
    readme = (notebooks.ROOT / "README.md").read_text()
    assert notebooks.COMMAND in readme and "docs/notebooks/lecture.ipynb" in readme
