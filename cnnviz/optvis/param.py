"""Feature visualization's image parameterizations (Olah et al. 2017, "Feature Visualization", Distill).

The engine's ``Pixels`` (``cnnviz.optim.parameterization``) is the classic recipe (Simonyan et al. 2014):
the RGB values themselves, kept in [0, 1] by clamping. ``Squashed`` writes the image as
sigmoid(C · basis(p)): ``basis`` is either per-pixel logits or a Fourier spectrum whose amplitudes are
scaled by 1/frequency, and C is an optional colour decorrelation (``cnnviz.optvis.color``). Natural
images have a 1/f amplitude spectrum, so with the scaled spectrum a gradient step moves every frequency
band by a similar share of its natural energy, instead of letting the many high frequencies dominate
(the saturated patterns of pixel-space ascent). C lets a step change luminance and
the two colour-opponent channels independently. The sigmoid keeps the image in (0, 1) with gradients
everywhere, where clamping stops every pixel that hits a bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnviz.errors import CnnvizError
from cnnviz.optim.parameterization import Parameterization
from cnnviz.optvis.color import decorrelate

PARAMS = ("pixel", "fft")

def frequencies(h: int, w: int) -> Tensor:
    """|f| in cycles per pixel of the (H, W//2 + 1) frequencies of a real 2-D FFT."""
    return (torch.fft.fftfreq(h).reshape(-1, 1).pow(2) + torch.fft.rfftfreq(w).reshape(1, -1).pow(2)).sqrt()


def spectrum_scale(h: int, w: int) -> Tensor:
    """1/f for the (H, W//2 + 1) frequencies of a real 2-D FFT, f in cycles per pixel, floored at one cycle
    per image (the DC term), divided by its root mean square so that the image keeps the spectrum's
    energy at every size (with an orthonormal FFT)."""
    scale = 1.0 / frequencies(h, w).clamp_min(1.0 / max(h, w))
    return scale / scale.pow(2).mean().sqrt()


def to_spectrum(image: Tensor) -> Tensor:
    """The (B, C, H, W//2 + 1, 2) real-valued spectrum whose ``from_spectrum`` is ``image``."""
    h, w = image.shape[-2:]
    spectrum = torch.fft.rfft2(image, norm="ortho") / spectrum_scale(h, w).to(image.device)
    return torch.view_as_real(spectrum).contiguous()


def from_spectrum(spectrum: Tensor, size: tuple[int, int]) -> Tensor:
    """Scaled inverse real FFT: (B, C, H, W//2 + 1, 2) -> (B, C, H, W)."""
    h, w = size
    scaled = torch.view_as_complex(spectrum) * spectrum_scale(h, w).to(spectrum.device)
    return torch.fft.irfft2(scaled, s=(h, w), norm="ortho")


class Squashed(Parameterization):
    """sigmoid(C · basis(p)): ``basis`` = ``pixel`` logits or a 1/f-scaled ``fft`` spectrum, C the colour
    decorrelation when ``decorrelate``. Starts as seeded noise of standard deviation ``sd`` around grey."""

    def __init__(
        self, shape: tuple[int, int, int, int], basis: str = "fft", decorrelate: bool = True, sd: float = 0.01,
        generator: torch.Generator | None = None, device: torch.device | str = "cpu",
    ) -> None:
        check_param(basis)
        if len(shape) != 4 or shape[1] != 3:
            raise CnnvizError(f"a parameterized image is (B, 3, H, W), got {tuple(shape)}")
        self.shape, self.basis, self.decorrelated = tuple(shape), basis, decorrelate
        b, c, h, w = self.shape
        param_shape = (b, c, h, w // 2 + 1, 2) if basis == "fft" else self.shape
        self.p = (sd * torch.randn(param_shape, generator=generator)).to(device).requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return [self.p]

    def logits(self) -> Tensor:
        """The RGB values before the sigmoid."""
        x = from_spectrum(self.p, self.shape[-2:]) if self.basis == "fft" else self.p
        return decorrelate(x) if self.decorrelated else x

    def __call__(self) -> Tensor:
        return torch.sigmoid(self.logits())

    @property
    def describe(self) -> str:
        return self.basis + ("+decorrelate" if self.decorrelated else "")


def is_squashed(param: str, decorrelate: bool) -> bool:
    """Whether the image is ``Squashed`` (under a sigmoid) rather than ``Pixels``: an ``fft`` basis, or
    decorrelated colours (``pixel`` with them is sigmoid of per-pixel logits)."""
    return param != "pixel" or decorrelate


def check_param(param: str) -> None:
    """A clear error for an unknown ``--param``."""
    if param not in PARAMS:
        raise CnnvizError(f"unknown parameterization --param '{param}' (choices: {', '.join(PARAMS)})")

