"""Image parameterizations: the image as a differentiable function of the tensors the optimizer updates
(Olah et al. 2017, "Feature Visualization", Distill).

``Pixels`` is the classic recipe (Simonyan et al. 2014): the RGB values themselves, kept in [0, 1] by
clamping. ``Squashed`` writes the image as sigmoid(C · basis(p)): ``basis`` is either per-pixel logits or
a Fourier spectrum whose amplitudes are scaled by 1/frequency, and C is an optional colour
decorrelation. Natural images have a 1/f amplitude spectrum, so with the scaled spectrum a gradient step
moves every frequency band by a similar share of its natural energy, instead of letting the many high
frequencies dominate (the saturated patterns of pixel-space ascent). C lets a step change luminance and
the two colour-opponent channels independently. The sigmoid keeps the image in (0, 1) with gradients
everywhere, where clamping stops every pixel that hits a bound.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from cnnviz.errors import CnnvizError

PARAMS = ("pixel", "fft")

# Symmetric square root of the RGB covariance of natural photographs, scaled so that its largest column
# has norm 1; estimated from the bundled photographs (content and texture images) by ``estimate_color_sqrt``
# (tests check that the estimate reproduces it). Its dominant direction is luminance (all three
# channels together), then a red-blue and a green-magenta axis.
COLOR_SQRT = torch.tensor([
    [0.9030, 0.3987, 0.1599],
    [0.3987, 0.5884, 0.4634],
    [0.1599, 0.4634, 0.7075],
])


def estimate_color_sqrt(side: int = 128) -> Tensor:
    """Σ^½ / max column norm, Σ the 3×3 covariance of the RGB values in [0, 1] of the bundled photographs
    (content and texture images; the paintings are left out), each resized to ``side`` px."""
    from cnnviz.core.images import bundled_images, load_image

    photos = {**bundled_images("content"), **bundled_images("texture")}
    pixels = torch.cat([load_image(path, side)[0].reshape(3, -1) for _, path in sorted(photos.items())], dim=1)
    values, vectors = torch.linalg.eigh(torch.cov(pixels.double()))
    root = (vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T).float()
    return root / root.norm(dim=0).max()


def decorrelate(x: Tensor) -> Tensor:
    """(B, 3, H, W) in decorrelated colour coordinates -> RGB logits: C · x per pixel."""
    return torch.einsum("ij,bjhw->bihw", COLOR_SQRT.to(x), x)


def correlate(rgb: Tensor) -> Tensor:
    """The inverse of ``decorrelate``: RGB logits -> decorrelated colour coordinates."""
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(COLOR_SQRT).to(rgb), rgb)


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


class Parameterization(ABC):
    """An image (B, 3, H, W) in [0, 1] as a differentiable function of ``parameters()``."""

    #: Whether the parameters are the pixels themselves (so pixel regularizers and coarse-to-fine apply).
    pixels: bool = False

    @abstractmethod
    def parameters(self) -> list[Tensor]:
        """The leaf tensors the optimizer updates."""

    @abstractmethod
    def __call__(self) -> Tensor:
        """The image, differentiable with respect to ``parameters()``."""

    def project(self) -> None:
        """Bring the parameters back into their domain after a step (nothing by default)."""

    @property
    def describe(self) -> str:
        return type(self).__name__.lower()


class Pixels(Parameterization):
    """The pixels themselves, clamped into [0, 1] on the way in and after each step."""

    pixels = True

    def __init__(self, image: Tensor) -> None:
        self.x = image.detach().clone().requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return [self.x]

    def __call__(self) -> Tensor:
        return self.x.clamp(0, 1)

    def project(self) -> None:
        with torch.no_grad():
            self.x.clamp_(0, 1)

    @property
    def describe(self) -> str:
        return "pixel"


class Squashed(Parameterization):
    """sigmoid(C · basis(p)): ``basis`` = ``pixel`` logits or a 1/f-scaled ``fft`` spectrum, C the colour
    decorrelation when ``decorrelate``. Starts as seeded noise of standard deviation ``sd`` around grey."""

    def __init__(
        self, shape: tuple[int, int, int, int], basis: str = "fft", decorrelate: bool = True, sd: float = 0.01,
        generator: torch.Generator | None = None, device: torch.device | str = "cpu",
    ) -> None:
        if basis not in PARAMS:
            raise CnnvizError(f"unknown parameterization '{basis}' (choices: {', '.join(PARAMS)})")
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


def high_frequency_share(image: Tensor) -> float:
    """The share of an image's spectral energy (its mean removed) above half the Nyquist frequency,
    i.e. at more than 0.25 cycles per pixel: a few per cent for photographs, about 0.8 for white noise."""
    x = image.detach().float()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    energy = torch.fft.rfft2(x, norm="ortho").abs().pow(2)
    h, w = x.shape[-2:]
    f = frequencies(h, w)
    weight = torch.full_like(f, 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    total = (energy * weight).sum()
    return float((energy * weight * (f > 0.25)).sum() / total) if total > 0 else 0.0


def check_param(param: str) -> None:
    """A clear error for an unknown ``--param``."""
    if param not in PARAMS:
        raise CnnvizError(f"unknown --param '{param}' (choices: {', '.join(PARAMS)})")

