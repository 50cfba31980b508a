"""The gallery's plan: which figures it makes, at which sizes, with which rows and sweeps.

Each figure is typed data (``SaliencyFigure``, ``AscentFigure``, ...): the gallery's time estimate reads
its fields, and the command line turns it into a ``cnnviz`` call (``cnnviz.cli.gallery``). The rows of the
ascent grids (regularizers, parameterizations) and the transfer sweeps live here too: a new figure, row
or sweep touches this file (and its prose ``sections.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cnnviz.analyzers.ascent import DEFAULT_BLUR, DEFAULT_L2, Recipe
from cnnviz.errors import CnnvizError
from cnnviz.optim.settings import Settings, Transform
from cnnviz.optvis.regularizers import Blur, Clip, Decay
from cnnviz.optvis.transforms import Jitter, standard

SECTIONS = ("saliency", "trust", "ascent", "patches", "invert", "texture", "transfer")
PAPERS = "papers"
"""The model name that gives each section its paper's network."""
CLASSES = ("espresso", "tabby", "goldfish", "volcano")
TRUST_METHODS = ("backprop", "guided", "gradcam", "smoothgrad", "integrated-gradients")
"""The sanity figure's rows: the paper's comparison (plain gradient, guided backprop, Grad-CAM, SmoothGrad,
integrated gradients)."""
CLASS_MODEL, PAPERS_MODEL = "efficientnet_lite0", "vgg16"

ROWS = ("none", "L2", "L2+blur", "L2+blur+clip", "+jitter")
"""The regularizer grid's rows (Simonyan et al. 2014; Yosinski et al. 2015), one more regularizer each."""
PARAM_ROWS = ("pixel+L2+blur", "fft", "fft+decorrelate", "fft+decorrelate+transforms")
"""The parameterization grid's rows (Olah et al. 2017)."""
GRIDS = {"regularizers": ROWS, "param": PARAM_ROWS}

SWEEPS = ("alpha-beta", "content-layer", "style-size")
"""The transfer sweeps of Gatys et al. 2016's Figures 3-5: α/β, the content layer, the style's size."""
BETAS = (1e-2, 1e-1, 1.0, 1e1, 1e2)
SWEEP_CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
STYLE_SIZE_FACTORS = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Preset:
    """A section's long side in pixels and iterations per optimization."""

    size: int
    iters: int


FULL = {"saliency": Preset(224, 0), "trust": Preset(224, 0),
        "ascent": Preset(192, 160), "patches": Preset(224, 0), "invert": Preset(192, 150),
        "texture": Preset(192, 200), "transfer": Preset(192, 100)}
"""The papers' pictures at the sizes a 2-core CPU makes in about 30 minutes in all (the papers: 224-512 px)."""
QUICK = {**{name: Preset(64, 30) for name in SECTIONS}, "ascent": Preset(64, 20), "transfer": Preset(96, 30)}
"""A first look and the tests: every figure, tiny and rough, in about two minutes on 2 cores; enough
iterations that textures, inversions and transfers show their source, fewer for ascent, whose many cells
run EfficientNet-Lite0 (transfer reads the painting at a quarter of the size, which VGG-16 needs at least
16 px of)."""

def row(
    name: str, base: Settings, l2_weight: float, blur: Blur, clip: Clip, jitter: int, decay: Decay | None = None,
) -> tuple[float, Settings]:
    """(λ, settings) of one row of the regularizer grid: none, L2 (the penalty λ‖I‖², plus Yosinski's
    decay if given), L2+blur, L2+blur+clip, +jitter (all of them). A blur of σ 0 or a clip at
    percentiles 0 is left out."""
    if name not in ROWS:
        raise CnnvizError(f"unknown regularizer row '{name}' (choices: {', '.join(ROWS)})")
    level = ROWS.index(name)
    steps = (
        (decay, level >= 1 and decay is not None),
        (blur, level >= 2 and blur.sigma > 0),
        (clip, level >= 3 and (clip.norm_pct > 0 or clip.contribution_pct > 0)),
    )
    regularizers = [regularizer for regularizer, on in steps if on]
    transforms = (Jitter(jitter),) if level >= 4 and jitter else ()
    return (l2_weight if level >= 1 else 0.0), replace(base, regularizers=tuple(regularizers), transforms=transforms)


def param_row(name: str, base: Settings, l2_weight: float = DEFAULT_L2, blur: Blur = DEFAULT_BLUR,
              transforms: Sequence[Transform] | None = None) -> tuple[Recipe, Settings]:
    """(recipe, settings) of one row of the parameterization grid: pixel+L2+blur (Simonyan et al. with
    Yosinski et al.'s blur), fft, fft+decorrelate, fft+decorrelate+transforms (Olah et al.'s recipe;
    ``transforms`` default to ``standard()``)."""
    if name not in PARAM_ROWS:
        raise CnnvizError(f"unknown parameterization row '{name}' (choices: {', '.join(PARAM_ROWS)})")
    if name == "pixel+L2+blur":
        return Recipe("pixel", False, l2_weight), replace(base, regularizers=(blur,) if blur.sigma > 0 else (), transforms=())
    robust = name.endswith("+transforms")
    chosen = tuple(standard() if transforms is None else transforms) if robust else ()
    return Recipe("fft", "decorrelate" in name, 0.0), replace(base, regularizers=(), transforms=chosen)


def sweep(name: str, content_weight: float, size: int, style_size: int | None) -> list[tuple[str, str, dict]]:
    """(column title, file-name tag, transfer keyword overrides) for each cell of a transfer sweep."""
    if name not in SWEEPS:
        raise CnnvizError(f"unknown --sweep '{name}' (choices: {', '.join(SWEEPS)})")
    if name == "alpha-beta":
        return [(f"α/β = {content_weight / b:g}", f"ab{content_weight / b:g}", {"style_weight": b}) for b in BETAS]
    if name == "content-layer":
        return [(layer, layer, {"content_layers": [layer]}) for layer in SWEEP_CONTENT_LAYERS]
    base = style_size or size
    return [(f"style {round(base * f)}px", f"style{round(base * f)}px", {"style_size": round(base * f)})
            for f in STYLE_SIZE_FACTORS]


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One figure of the gallery: a grid made by one command on ``model`` (with ``weights``) at ``size`` px."""

    model: str
    weights: str | None = None
    size: int
    iters: int = 0


@dataclass(frozen=True, kw_only=True)
class SaliencyFigure(Figure):
    """``methods`` (empty: all) on ``images`` (rows), for each image's top class; with ``sanity`` or
    ``faithfulness``, those checks of the methods instead of the grid."""

    images: tuple[str, ...]
    methods: tuple[str, ...] = ()
    sanity: bool = False
    faithfulness: bool = False


@dataclass(frozen=True, kw_only=True)
class AscentFigure(Figure):
    """A ``grid`` of ``GRIDS`` rows for ``classes``, or for ``channels`` of each of ``layers``."""

    grid: str
    classes: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PatchesFigure(Figure):
    """The ``top`` patches of ``channels`` of ``layer`` over the bundled images at ``sizes``, with guided maps."""

    layer: str
    channels: tuple[int, ...]
    top: int
    sizes: tuple[int, ...]
    guided: bool = True


@dataclass(frozen=True, kw_only=True)
class InvertFigure(Figure):
    """``image`` inverted from each of ``layers`` (``all``: every ReLU)."""

    image: str
    layers: str


@dataclass(frozen=True, kw_only=True)
class TextureFigure(Figure):
    """Textures of ``images`` (rows) from Gatys et al.'s layer sets (columns)."""

    images: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TransferFigure(Figure):
    """``images`` (content, style) under one transfer ``sweep``."""

    images: tuple[str, str]
    sweep: str


def figures(section: str, size: int, iters: int, model: str = PAPERS, weights: str | None = None) -> list[Figure]:
    """The figures of ``section`` at ``size`` px and ``iters`` iterations, on each figure's paper network
    (``model`` = ``PAPERS``) or on ``model`` with ``weights``."""
    if section not in SECTIONS:
        raise CnnvizError(f"unknown section '{section}' (choices: {', '.join(SECTIONS)})")

    def on(paper: str) -> dict:
        return {"model": paper, "weights": None} if model == PAPERS else {"model": model, "weights": weights}

    made = {
        "saliency": lambda: [
            SaliencyFigure(images=("chelsea", "coffee", "astronaut", "rocket"), size=size, **on(CLASS_MODEL)),
            SaliencyFigure(images=("chelsea", "coffee"), methods=("deconvnet", "guided"), size=size, **on(PAPERS_MODEL)),
        ],
        "trust": lambda: [
            SaliencyFigure(images=("chelsea",), methods=TRUST_METHODS, sanity=True, size=size, **on(CLASS_MODEL)),
            SaliencyFigure(images=("chelsea",), methods=(*TRUST_METHODS, "occlusion"), faithfulness=True, size=size,
                           **on(CLASS_MODEL)),
        ],
        "ascent": lambda: [
            AscentFigure(classes=CLASSES, grid="regularizers", size=size, iters=iters, **on(CLASS_MODEL)),
            AscentFigure(classes=CLASSES, grid="param", size=size, iters=iters, **on(CLASS_MODEL)),
            AscentFigure(layers=("conv4_3",), channels=(10, 42, 100), grid="regularizers", size=size, iters=iters,
                         **on(PAPERS_MODEL)),
            AscentFigure(layers=("conv3_3", "conv4_3", "conv5_3"), channels=(42,), grid="param", size=size, iters=iters,
                         **on(PAPERS_MODEL)),
        ],
        "patches": lambda: [
            PatchesFigure(layer=layer, channels=channels, top=4, sizes=(size, size * 3 // 2), size=size, **on(paper))
            for layer, channels, paper in (("relu2_2", (0, 1, 10, 11, 14), PAPERS_MODEL), ("relu4_3", (2, 4, 8, 11, 13), PAPERS_MODEL),
                                           ("block3_2", (7, 9, 11, 12), CLASS_MODEL))
        ],
        "invert": lambda: [InvertFigure(image="astronaut", layers="all", size=size, iters=iters, **on(PAPERS_MODEL))],
        "texture": lambda: [TextureFigure(images=("starry_night", "brick"), size=size, iters=iters, **on(PAPERS_MODEL))],
        "transfer": lambda: [TransferFigure(images=("astronaut", "starry_night"), sweep=name, size=size, iters=iters,
                                            **on(PAPERS_MODEL)) for name in SWEEPS],
    }
    return made[section]()
