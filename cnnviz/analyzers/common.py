"""What every optimizing analyzer shares: its output (image + record), initial images, saving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL.Image import Image
from torch import Tensor

from cnnviz.core.display import Picture, png_bytes, row, show
from cnnviz.core.files import atomic_write
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import load_image, resize, save_png
from cnnviz.core.records import Record, write_sidecar
from cnnviz.optim.settings import Result, Settings


@dataclass(repr=False)
class Output(Picture):
    """What every analyzer returns: its image (1, 3, H, W) in [0, 1], the record its sidecar holds,
    optionally the raw values the image displays (a saliency map's gradient, for example) and the
    input image it analysed, as the analyzer saw it (resized). In a notebook it shows as its picture with a
    one-line caption; ``show()`` opens it elsewhere."""

    image: Tensor
    record: Record
    raw: Tensor | None = None
    input: Tensor | None = None

    def save(self, path: str | Path) -> Path:
        """Write the PNG, the raw values as .npy if any, and the JSON sidecar (each atomically); returns the PNG path."""
        png = save_png(self.image, Path(path).with_suffix(".png"))
        if self.raw is not None:
            array = self.raw.detach().cpu().numpy()
            atomic_write(png.with_suffix(".npy"), lambda tmp: np.save(tmp, array))
        write_sidecar(png, self.record)
        return png


class Outputs(list):
    """A list of ``Output`` that a notebook shows as one row of captioned pictures (``render`` returns one;
    wrap any list to show it so: ``Outputs(cnnviz.invert(image, layer) for layer in layers)``)."""

    def picture(self) -> Image.Image:
        """Every output's captioned picture, side by side."""
        return row([output.picture() for output in self])

    def _repr_png_(self) -> bytes | None:
        return png_bytes(self.picture()) if self else None

    def show(self) -> None:
        """Show the row as ``Output.show`` shows one picture."""
        show(self, self.picture(), f"{len(self)} pictures")


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], record: Record | None = None) -> Path:
    """Write ``arrays`` as one compressed .npz and, with a ``record``, its JSON sidecar, each atomically;
    returns the .npz path."""
    target = Path(path).with_suffix(".npz")
    atomic_write(target, lambda tmp: np.savez_compressed(tmp, **arrays))
    if record is not None:
        write_sidecar(target, record)
    return target


NOISE = 0.2  # the noise start's half-width: uniform in [0.5 − NOISE, 0.5 + NOISE]


def noise(shape: tuple[int, ...], seed: int, device: torch.device, amplitude: float = NOISE) -> Tensor:
    """Seeded uniform noise around mid-grey, ±``amplitude`` (the usual start of inversion and texture synthesis)."""
    generator = torch.Generator().manual_seed(seed)
    return (0.5 + amplitude * (torch.rand(shape, generator=generator) - 0.5) * 2).to(device)


def initial_image(kind: str, reference: Tensor, model: HookedModel, seed: int, amplitude: float = NOISE) -> Tensor:
    """The starting image shaped like ``reference``: ``noise`` (±``amplitude``), ``content`` (the reference
    itself), ``zeros`` (the model's zero input, i.e. the dataset mean), or a path to an image file."""
    if kind == "noise":
        return noise(tuple(reference.shape), seed, reference.device, amplitude)
    if kind == "content":
        return reference.clone()
    if kind == "zeros":
        return zero_image(model, reference.shape)
    return resize(load_image(kind, device=reference.device), tuple(reference.shape[-2:]))


def zero_image(model: HookedModel, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """The model's zero input as an RGB image in [0, 1] (its mean colour)."""
    zeros = torch.zeros(1, 3, 1, 1, device=model.device)
    return model.convention.denormalize(zeros).clamp(0, 1).expand(shape).clone()


def model_record(analyzer: str, model: HookedModel, layers: list[str], params: dict[str, Any], **fields: Any) -> Record:
    """The sidecar record of a run on ``model``: its name and weights, the layers, every parameter."""
    return Record(
        analyzer=analyzer,
        model=model.name,
        weights=model.weights.id,
        weights_sha256=model.weights.sha256,
        layers=layers,
        params={**params, "device": str(model.device), "precision": model.compute_precision},
        **fields,
    )


def record(analyzer: str, model: HookedModel, layers: list[str], params: dict[str, Any], settings: Settings, result: Result) -> Record:
    """The sidecar record of one optimization run."""
    return model_record(
        analyzer,
        model,
        layers,
        {
            **params,
            "optimizer": settings.optimizer,
            "line_search": settings.line_search if settings.optimizer == "lbfgs" else None,
            "iters": settings.iters,
            "lr": settings.step_size,
            "scales": list(settings.scales),
            "transforms": [repr(t) for t in settings.transforms],
            "regularizers": [repr(r) for r in settings.regularizers],
        },
        seed=settings.seed,
        iterations=result.iterations,
        losses=result.losses,
        history=result.history,
        seconds=round(result.seconds, 3),
        interrupted=result.interrupted,
        error=result.error,
    )
