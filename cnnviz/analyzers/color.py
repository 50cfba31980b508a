"""Colour control for style transfer (Gatys et al. 2017, "Controlling perceptual factors").

YIQ separates luminance (Y) from chroma (I, Q): ``luminance`` transfer runs on Y alone and puts the
content's I and Q back; ``histogram`` matching gives the style image the content's colour mean and
covariance before the transfer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnviz.core.images import mix_channels

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def rgb_to_yiq(image: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> YIQ."""
    return mix_channels(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: Tensor) -> Tensor:
    """(B, 3, H, W) YIQ -> RGB."""
    return mix_channels(torch.linalg.inv(_RGB_TO_YIQ), image)


def luminance(image: Tensor) -> Tensor:
    """Y of an RGB image, as a 3-channel grey image."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).clone()


def match_luminance(style: Tensor, content: Tensor) -> Tensor:
    """Style luminance shifted and scaled to the content's luminance mean and std (grey, 3 channels)."""
    ys, yc = luminance(style), luminance(content)
    return ((ys - ys.mean()) * (yc.std() / ys.std().clamp_min(1e-6)) + yc.mean()).clamp(0, 1)


def with_chroma(luma: Tensor, chroma_source: Tensor) -> Tensor:
    """RGB image with the Y of ``luma`` and the I, Q of ``chroma_source`` (same size)."""
    yiq = rgb_to_yiq(chroma_source)
    yiq[:, :1] = rgb_to_yiq(luma)[:, :1]
    return yiq_to_rgb(yiq).clamp(0, 1)


def _sqrtm(cov: Tensor, inverse: bool = False) -> Tensor:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(1e-8).pow(-0.5 if inverse else 0.5)
    return vectors @ torch.diag(values) @ vectors.T


def match_color_histogram(style: Tensor, content: Tensor) -> Tensor:
    """Style pixels linearly mapped to the content's RGB mean and covariance: x' = Σc^½ Σs^-½ (x − μs) + μc."""
    s = style[0].reshape(3, -1)
    c = content[0].reshape(3, -1)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    cov_s = torch.cov(s) + 1e-5 * torch.eye(3, device=s.device)
    cov_c = torch.cov(c) + 1e-5 * torch.eye(3, device=c.device)
    mapped = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True) @ (s - mu_s) + mu_c
    return mapped.reshape_as(style[0]).unsqueeze(0).clamp(0, 1)
