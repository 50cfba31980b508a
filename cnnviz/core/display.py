"""How a result shows itself: inline in Jupyter (IPython's ``_repr_png_`` protocol, which needs no import of
IPython), in a window with ``show()``, or as a one-line note where there is no screen.

A picture is the result's image with its one-line caption, from the run record, drawn under it (wrapped to
the picture's width). One PNG carries both, so every notebook front end and a code host's viewer show the
caption, and a saved notebook holds each picture once (an HTML figure beside the PNG would double it).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from cnnviz.core.images import to_pil
from cnnviz.core.records import Record, one_line
from cnnviz.errors import CnnvizNote

FONT_SIZE = 11
LINE = FONT_SIZE + 3  # px per caption line
MIN_WIDTH = 128  # px: a narrower picture gets a caption column this wide, centred above it
GAP = 6  # px of white between the pictures of a row, and around a caption


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (an IPython shell with a kernel). IPython is only looked up
    if something has imported it already, so a plain Python process never loads it."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def png_bytes(image: Tensor | Image.Image) -> bytes:
    """The first image of a (B, 3, H, W) [0, 1] tensor (or a Pillow image) as PNG bytes."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else to_pil(image)).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, which matplotlib ships (so captions look like the grids' and have α, β, …), found without
    importing matplotlib; Pillow's own font where it is missing."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), FONT_SIZE)
    return ImageFont.load_default(size=FONT_SIZE)


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` px, broken at spaces, and inside a word wider than a line."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
            continue
        lines.append("")
        for char in word:
            if lines[-1] and font.getlength(lines[-1] + char) > width:
                lines.append("")
            lines[-1] += char
    return lines


def captioned(image: Tensor, text: str) -> Image.Image:
    """The picture on white with ``text`` under it, wrapped to the picture's width (at least ``MIN_WIDTH``)."""
    picture = to_pil(image)
    font = _font()
    width = max(picture.width, MIN_WIDTH)
    lines = _wrap(text, font, width) if text else []
    canvas = Image.new("RGB", (width, picture.height + (len(lines) * LINE + GAP if lines else 0)), "white")
    canvas.paste(picture, ((width - picture.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((0, picture.height + GAP // 2 + i * LINE), line, fill="black", font=font)
    return canvas


def row(pictures: Sequence[Image.Image]) -> Image.Image:
    """Pictures side by side, ``GAP`` px apart on white, top-aligned."""
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + GAP * (len(pictures) - 1),
                               max(p.height for p in pictures)), "white")
    left = 0
    for picture in pictures:
        canvas.paste(picture, (left, 0))
        left += picture.width + GAP
    return canvas


class Picture:
    """What a result mixes in to show itself: it has an ``image`` (1, 3, H, W) in [0, 1] and a ``record``."""

    image: Tensor
    record: Record

    @property
    def caption(self) -> str:
        """The one-line caption from the record."""
        return one_line(self.record)

    def __repr__(self) -> str:
        height, width = self.image.shape[-2:]
        return f"<{type(self).__name__} {width}x{height}: {self.caption}>"

    def picture(self) -> Image.Image:
        """The image with its caption under it (what a notebook shows)."""
        return captioned(self.image, self.caption)

    def _repr_png_(self) -> bytes:
        return png_bytes(self.picture())

    def show(self) -> None:
        """Show the picture: inline in a notebook, else in the system's image viewer (Pillow's), else, with no
        screen or viewer, say so in one ``CnnvizNote``."""
        show(self, self.picture(), self.caption)


def show(shown: Any, picture: Image.Image, title: str) -> None:
    """Display ``shown`` inline in a notebook; elsewhere open ``picture`` in a viewer, or note why not."""
    if in_notebook():
        from IPython.display import display  # loaded already: this is a kernel

        display(shown)
        return
    from PIL import ImageShow  # here, not above: Pillow's viewers module imports IPython where it is installed

    headless = sys.platform.startswith(("linux", "freebsd")) and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless or not ImageShow.show(picture, title=title):
        warnings.warn(CnnvizNote(f"no screen to show '{title}' on: save it with .save(path) or use a notebook"), stacklevel=3)
