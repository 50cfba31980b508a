import json
import shlex
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
import typer.main

from cnnviz.cli import gallery, invert
from cnnviz.cli.app import app
from cnnviz.cli.calls import Call
from cnnviz.figures import wrap
from cnnviz.gallery.plan import figures
from cnnviz.gallery.sections import SECTIONS

from conftest import run_cli

VGG_RELUS = [f"relu{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]


class Page(HTMLParser):
    """What the tests read from index.html: section ids, images, links, commands, scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.commands: list[str] = []
        self.paired: list[tuple[dict[str, str], str]] = []  # (the grid image, the command shown after it)
        self.scripts = 0
        self._in_command = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "img":
            self.images.append(a)
            self.links.append(a["src"])
        elif tag in ("a", "link") and not a.get("href", "#").startswith(("#", "data:")):
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts += 1
        self._in_command = tag == "code" and "command" in a.get("class", "")

    def handle_data(self, data):
        if self._in_command:
            self.commands.append(data)
            grids = [img for img in self.images if "grid" in img.get("class", "")]
            self.paired.append((grids[-1], data))
            self._in_command = False


def _page(folder: Path) -> Page:
    return Page((folder / "index.html").read_text())


def test_quick_gallery_has_every_section_and_links_only_files_that_exist(quick_gallery):
    folder, result = quick_gallery
    assert result.returncode == 0, result.stderr[-3000:]
    assert "minute(s) on this machine" in result.stderr
    page = _page(folder)
    assert page.sections == list(SECTIONS) and page.scripts == 0
    assert page.links and all(not link.startswith(("http:", "https:", "//", "/")) for link in page.links)
    for link in page.links:
        assert (folder / link).is_file(), link
    grids = [img for img in page.images if "grid" in img.get("class", "")]
    assert len(grids) >= len(SECTIONS) and len(page.commands) == len(grids)
    assert all(img["loading"] == "lazy" and img["alt"] and int(img["width"]) > 0 for img in page.images)
    for key in SECTIONS:
        assert any(img["alt"].startswith(SECTIONS[key].title) for img in grids), key


def test_quick_gallery_commands_are_the_cli_calls_that_made_each_grid(quick_gallery):
    folder, _ = quick_gallery
    click_app = typer.main.get_command(app)
    for line in _page(folder).commands:
        words = shlex.split(line)
        assert words[0] == "cnnviz"
        command = click_app.commands[words[1]]
        command.make_context(words[1], words[2:])  # parses, or raises
    grid = json.loads((folder / "invert_astronaut_grid.json").read_text())
    assert grid["figure"]["command"] == "cnnviz invert --layers all --size 64 --iters 5"
    assert [len(row) for row in grid["cells"]] == [2, 2, 3, 3, 3]


def test_each_grid_shows_its_own_command_at_the_shared_display_scale(quick_gallery):
    """The command beside a grid is the one its sidecar records, and every grid shows at DISPLAY_SCALE of its
    pixels, so that cells are one size across the page."""
    from PIL import Image

    from cnnviz.gallery.site import DISPLAY_SCALE

    folder, _ = quick_gallery
    paired = _page(folder).paired
    assert len(paired) >= len(SECTIONS)
    for img, command in paired:
        sidecar = json.loads((folder / img["src"]).with_suffix(".json").read_text())
        assert sidecar["figure"]["command"] == command, img["src"]
        with Image.open(folder / img["src"]) as grid:
            assert (int(img["width"]), int(img["height"])) == (round(grid.width * DISPLAY_SCALE), round(grid.height * DISPLAY_SCALE))


def test_resume_skips_the_figures_already_made(quick_gallery, tmp_path):
    folder, _ = quick_gallery
    copy = tmp_path / "gallery"
    shutil.copytree(folder, copy)
    grid = copy / "invert_astronaut_grid.png"
    before = grid.stat().st_mtime_ns
    result = run_cli("gallery", "--quick", "--iters", "5", "--resume", "--sections", "invert,texture", "--out", str(copy))
    assert result.returncode == 0, result.stderr
    assert "--resume: 2 of 2 figure(s) already made" in result.stderr
    assert grid.stat().st_mtime_ns == before
    call = Call(invert.command, **_invert_kwargs(copy))
    assert call.finished(copy) == [grid]
    (copy / "invert_astronaut_relu3_1.png").unlink()
    assert call.finished(copy) == []


def _invert_kwargs(out: Path) -> dict:
    run = gallery.Run(model="papers", weights=None, device="auto", precision="auto", threads=1, out=out, seed=0, quiet=True)
    return gallery._call(figures("invert", 64, 5)[0], run).kwargs


def test_publish_writes_a_lean_copy_without_cells(quick_gallery, tmp_path):
    folder, _ = quick_gallery
    lean = tmp_path / "lean"
    result = run_cli("gallery", "--site-only", "--out", str(folder), "--publish", str(lean), "-q")
    assert result.returncode == 0, result.stderr
    names = {p.name for p in lean.iterdir()}
    assert "index.html" in names and not {n for n in names if n.endswith((".png", ".npy", ".npz"))}
    figures = {n.removesuffix(".webp") for n in names if n.endswith(".webp")}
    assert names == {"index.html", *(f"{stem}.webp" for stem in figures), *(f"{stem}.json" for stem in figures)}
    assert all(json.loads((lean / f"{stem}.json").read_text())["kind"] == "grid" for stem in figures)
    page = _page(lean)
    for link in page.links:
        assert (lean / link).is_file(), link
    assert len(page.commands) == len([n for n in names if n.endswith(".webp")])
    assert sum(p.stat().st_size for p in lean.iterdir()) < 8e6
    (lean / "stray.txt").write_text("not a gallery file")
    result = run_cli("gallery", "--site-only", "--out", str(folder), "--publish", str(tmp_path), "-q")
    assert result.returncode == 2 and "no index.html" in result.stderr


def test_site_only_and_unknown_section(tmp_path):
    result = run_cli("gallery", "--site-only", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "No feature inversion figures yet" in (tmp_path / "index.html").read_text()
    assert f": index.html in {tmp_path}" in result.stderr.splitlines()[-1]  # not "0 image(s)"
    result = run_cli("gallery", "--sections", "everything", "--out", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: unknown section")


def test_wrap_puts_each_vgg_block_on_a_row_and_keeps_short_lists_in_one():
    assert wrap(VGG_RELUS) == [VGG_RELUS[0:2], VGG_RELUS[2:4], VGG_RELUS[4:7], VGG_RELUS[7:10], VGG_RELUS[10:13]]
    assert wrap(["relu1_1", "relu3_1", "relu5_1"]) == [["relu1_1", "relu3_1", "relu5_1"]]
    assert wrap([f"features.{i}" for i in range(12)], width=5) == [
        [f"features.{i}" for i in range(s, min(s + 5, 12))] for s in (0, 5, 10)]


@pytest.mark.parametrize("kwargs, line", [
    (dict(image="astronaut", layers="all", size=64, iters=5, model="vgg16", out=Path("x"), quiet=True),
     "cnnviz invert --layers all --size 64 --iters 5"),
    (dict(image="photo of me.jpg", size=256, model="resnet18", weights="random", seed=3),
     "cnnviz invert 'photo of me.jpg' --model resnet18 --weights random --seed 3"),
])
def test_call_line_is_the_command_without_defaults(kwargs, line):
    assert Call(invert.command, **kwargs).line() == line
