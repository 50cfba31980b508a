"""Transformation robustness (Olah et al. 2017, "Feature Visualization"): random, differentiable changes
applied to the image before each forward pass, so the optimization keeps only what survives small shifts,
zooms and turns, the high-frequency patterns that fool one exact view do not.

Each transform maps (B, 3, H, W) in [0, 1] to an image of the same shape (``Pad`` alone grows it by its
width on every side, by design) and draws its randomness from the generator it is given, so a run is
reproducible from its seed. Uncovered areas are filled with grey (0.5), except where the recipe
follows Lucid: its shifts and turns leave black behind, which the network learns to ignore, while a grey
fill lets the class leak into the border and keeps more speckle (benchmarks/FEATUREVIS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnviz.errors import CnnvizError
from cnnviz.optim.settings import Transform

GREY = 0.5
BLACK = 0.0


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _affine(image: Tensor, scale: float, degrees: float, fill: float = GREY) -> Tensor:
    """Zoom by ``scale`` and rotate by ``degrees`` about the centre, bilinear, ``fill`` outside."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta.expand(image.shape[0], 2, 3), list(image.shape), align_corners=False)
    return F.grid_sample(image - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


@dataclass(frozen=True)
class Pad:
    """Add a grey border of ``width`` px, so that shifts and turns move the picture, not its edge."""

    width: int

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        return F.pad(image, [self.width] * 4, value=GREY) if self.width else image


@dataclass(frozen=True)
class Jitter:
    """Shift by up to ``pixels`` px in each direction, wrapping around (Yosinski et al. 2015's jitter)."""

    pixels: int

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not self.pixels:
            return image
        dy, dx = torch.randint(-self.pixels, self.pixels + 1, (2,), generator=generator).tolist()
        return torch.roll(image, shifts=(dy, dx), dims=(-2, -1))


@dataclass(frozen=True)
class Shift:
    """Move the picture by 0 to ``pixels`` − 1 px down and right, ``fill`` where it leaves (Lucid's jitter:
    a random crop; unlike ``Jitter`` nothing wraps round to the other edge)."""

    pixels: int
    fill: float = BLACK

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if self.pixels <= 1:
            return image
        dy, dx = torch.randint(0, self.pixels, (2,), generator=generator).tolist()
        h, w = image.shape[-2:]
        return F.pad(image[..., : h - dy, : w - dx], [dx, 0, dy, 0], value=self.fill)


@dataclass(frozen=True)
class RandomScale:
    """Zoom by a factor drawn uniformly from [low, high] about the centre."""

    low: float = 0.9
    high: float = 1.1

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        return _affine(image, _uniform(self.low, self.high, generator), 0.0)


@dataclass(frozen=True)
class RandomRotate:
    """Turn by an angle drawn uniformly from [−degrees, degrees] about the centre, ``fill`` in the corners."""

    degrees: float = 10.0
    fill: float = GREY

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        return _affine(image, 1.0, _uniform(-self.degrees, self.degrees, generator), self.fill)


def standard(pad: int = 12, jitter: int = 8, scale: tuple[float, float] = (0.9, 1.1), degrees: float = 10.0) -> tuple[Transform, ...]:
    """The robustness recipe of Olah et al. 2017 as Lucid runs it: a grey pad, a coarse shift (black where
    the picture leaves), a random zoom of ±10 %, a random turn of ±10° (black corners), then a fine shift of
    half the coarse one (which hides the resampling's grid)."""
    if pad < 0 or jitter < 0 or degrees < 0 or not 0 < scale[0] <= scale[1]:
        raise CnnvizError("--pad, --jitter and --rotate must be at least 0, and the zoom range positive")
    parts: list[Transform] = [Pad(pad)] if pad else []
    parts += [Shift(jitter)] if jitter > 1 else []
    parts += [RandomScale(*scale), RandomRotate(degrees, BLACK)]
    parts += [Shift(jitter // 2)] if jitter // 2 > 1 else []
    return tuple(parts)


def parse(spec: str) -> tuple[Transform, ...]:
    """Transforms from text: ``none``, ``standard``, or a comma list applied in order, such as
    ``pad=12,shift=8,scale=0.9:1.1,rotate=10,shift=4`` (``jitter=N`` wraps round instead of shifting)."""
    spec = spec.strip()
    if spec in ("none", ""):
        return ()
    if spec == "standard":
        return standard()
    makers: dict[str, Callable[[str], Transform]] = {
        "pad": lambda v: Pad(int(v)), "jitter": lambda v: Jitter(int(v)), "shift": lambda v: Shift(int(v)),
        "scale": lambda v: RandomScale(*(float(p) for p in v.split(":"))), "rotate": lambda v: RandomRotate(float(v), BLACK),
    }
    parts = []
    for item in spec.split(","):
        name, _, value = item.strip().partition("=")
        if name not in makers:
            raise CnnvizError(f"unknown transform '{name}' in --transforms (choices: none, standard, or {', '.join(makers)} with =value)")
        try:
            transform = makers[name](value)
        except (TypeError, ValueError):
            raise CnnvizError(f"bad value in --transforms '{item.strip()}' (e.g. pad=12, shift=8, scale=0.9:1.1, rotate=10)") from None
        values = [v for v in vars(transform).values()]
        bad_zoom = isinstance(transform, RandomScale) and not 0 < transform.low <= transform.high
        if not all(math.isfinite(v) and v >= 0 for v in values) or bad_zoom:
            raise CnnvizError(f"bad value in --transforms '{item.strip()}': sizes and angles at least 0, a zoom range low:high > 0")
        parts.append(transform)
    return tuple(parts)
