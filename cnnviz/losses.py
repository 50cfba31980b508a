"""Loss terms from the papers and ``Loss``, the named, weighted terms the engine minimises.

Pure functions (pystiche's ``loss.functional``): ``gram`` (G = FFᵀ, with its one-matmul autograd kernel),
``style_layer_loss`` (Gatys et al.'s E_l), ``content_loss``, ``feature_loss`` (Mahendran & Vedaldi).
Terms built on them: ``content_term`` and ``style_term``, each normalised by ``energy``, the loss an
all-zero activation would have, so that one weight suits every layer and network. Every term takes
activations (and the image, RGB in [0, 1]) and returns a scalar to minimise; a ``Loss`` runs the model
once, to the deepest layer any term needs, and reports each term. The image priors (TV, α-norm, L2) are
in ``cnnviz.optvis.regularizers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from cnnviz.core.hooked import HookedModel
from cnnviz.errors import CnnvizError

Activations = dict[str, Tensor]
"""Layer name -> activation, as ``HookedModel`` returns them."""


def gram(features: Tensor, normalize: bool = True, dtype: torch.dtype | None = None) -> Tensor:
    """Gram matrix G = F Fᵀ of (B, C, H, W) features reshaped to F = (B, C, M), M = H·W.

    With ``normalize`` (the default) G is divided by M, so that Grams of images of different
    sizes can be compared; Gatys et al. use the raw G and images of equal size. One matmul each
    way with the 1/M folded into it (``_Gram``), on a view of channels-last or contiguous features
    (no copy). ``dtype`` (bf16 where the network ran in bf16, so that F holds bf16 values already)
    runs the matmuls in that dtype, about twice as fast on the CPU; G comes back as float32 (or float64),
    also for bf16 features.
    """
    f = features.flatten(2)
    return _Gram.apply(f, 1.0 / f.shape[-1] if normalize else 1.0, dtype or f.dtype)


class _Gram(torch.autograd.Function):
    """G = s F Fᵀ with ∂L/∂F = s (∂L/∂G + ∂L/∂Gᵀ) F: one matmul backward where autograd's takes two,
    written in F's own memory layout so that channels-last features get a channels-last gradient.

    In a reduced ``dtype`` the M = H·W products are split into up to ``CHUNKS`` batched blocks whose
    partial Grams are summed in float32: a long sum in one bf16 matmul is slow (one thread gets it)
    and its rounding grows with M.
    """

    CHUNKS = 8

    @staticmethod
    def forward(ctx, f: Tensor, scale: float, dtype: torch.dtype) -> Tensor:
        with _like_convolutions(f):
            return _Gram._forward(ctx, f, scale, dtype)

    @staticmethod
    def _forward(ctx, f: Tensor, scale: float, dtype: torch.dtype) -> Tensor:
        low = f.to(dtype)
        ctx.save_for_backward(low)
        ctx.scale = scale
        ctx.out_dtype = torch.promote_types(f.dtype, torch.float32)
        b, c, m = low.shape
        chunks = next(k for k in (_Gram.CHUNKS, 4, 2, 1) if m % k == 0 and m // k >= 1024 or k == 1)
        if dtype not in (torch.bfloat16, torch.float16) or chunks == 1 or low.stride(-1) == 1:
            return torch.baddbmm(low.new_zeros(()), low, low.transpose(1, 2), beta=0.0, alpha=scale).to(ctx.out_dtype)
        rows = low.transpose(1, 2).reshape(b * chunks, m // chunks, c)  # channels-last: a view
        partial = torch.baddbmm(low.new_zeros(()), rows.transpose(1, 2), rows, beta=0.0, alpha=scale)
        return partial.to(ctx.out_dtype).reshape(b, chunks, c, c).sum(dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (low,) = ctx.saved_tensors
        with _like_convolutions(low):
            return _Gram._backward(ctx, low, grad)

    @staticmethod
    def _backward(ctx, low: Tensor, grad: Tensor) -> tuple[Tensor, None, None]:
        both = (grad + grad.transpose(1, 2)).to(low.dtype)
        if low.stride(-1) == 1:
            return torch.baddbmm(low.new_zeros(()), both, low, beta=0.0, alpha=ctx.scale), None, None
        return torch.baddbmm(low.new_zeros(()), low.transpose(1, 2), both, beta=0.0, alpha=ctx.scale).transpose(1, 2), None, None


@contextmanager
def _like_convolutions(features: Tensor):
    """On a CUDA GPU, let float32 matmuls use TF32 tensor cores where cuDNN's convolutions do (torch's
    default for cuDNN but not for cuBLAS): the five Grams of a 512 px style loss and their backward are
    about 18 GFLOP per evaluation, which would otherwise run without tensor cores."""
    if not (features.is_cuda and features.dtype == torch.float32):
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def style_layer_loss(g: Tensor, g_hat: Tensor) -> Tensor:
    """E_l = 1/(4 N² M²) Σ (G − Ĝ)² (Gatys et al. 2015), given M-normalised Grams (B, N, N).

    With G/M in place of G the M² cancels, so this equals the paper's E_l for equal sizes and
    stays defined when the synthesized image and the source differ in size.
    """
    n = g.shape[-1]
    return (g - g_hat).pow(2).sum() / (4 * n * n * g.shape[0])


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """L_content = ½ Σ (F − P)² (Gatys et al. 2016)."""
    return 0.5 * (features - target).pow(2).sum()


def feature_loss(features: Tensor, target: Tensor) -> Tensor:
    """‖Φ(x) − Φ0‖² / ‖Φ0‖² (Mahendran & Vedaldi 2015): the relative feature reconstruction error, squared."""
    return (features - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def energy(loss: Callable[[Tensor, Tensor], Tensor], target: Tensor) -> Tensor:
    """``loss`` of an all-zero input against ``target``: the scale a term is divided by, so that it starts
    near 1 whatever the layer's activation magnitude (Gatys et al. rescaled the network's weights instead)."""
    return loss(torch.zeros_like(target), target).clamp_min(1e-12)



@dataclass(frozen=True)
class Term:
    """A named, weighted loss term: ``weight * fn(activations, image)``."""

    name: str
    weight: float
    layers: tuple[str, ...]
    fn: Callable[[Activations, Tensor], Tensor]


class Loss:
    """What the engine minimises: named, weighted terms from one forward pass to the deepest layer any term
    needs; called on an image, it returns each term's weighted value (their sum is the loss).

    Terms get the activations in the network's own dtype (bf16 under bf16 autocast) and promote them
    to float32 as they compute (``F − P`` with a float32 target, ``gram``), so each loss is float32."""

    def __init__(self, model: HookedModel, terms: Sequence[Term]) -> None:
        self.model = model
        self.terms = [t for t in terms if t.weight != 0]
        self.layers = list(dict.fromkeys(layer for t in self.terms for layer in t.layers))
        self.penalties = [t.name for t in self.terms if not t.layers]
        """The terms computed from the image alone (TV, L2, α-norm): the engine's ``penalties``."""

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        """Each term's weighted value for ``image`` (B, 3, H, W) in [0, 1]."""
        acts = self.model(image, self.layers, native=True) if self.layers else {}
        return {t.name: t.weight * t.fn(acts, image) for t in self.terms}


def reference_activations(model: HookedModel, image: Tensor, layers: Sequence[str]) -> Activations:
    """Activations of a reference image (a photo to invert, a style), computed once without grad."""
    with torch.no_grad():
        return {k: v.detach() for k, v in model(image, layers).items()}


def content_term(weight: float, reference: Tensor, model: HookedModel, layers: Sequence[str]) -> Term:
    """α · mean over layers of ½Σ(F − P)² / ½ΣP², with P and ½ΣP² from ``reference`` (computed once)."""
    p = reference_activations(model, reference, layers)
    scale = {layer: energy(content_loss, p[layer]) for layer in layers}

    def loss(acts: Activations, image: Tensor) -> Tensor:
        return sum(content_loss(acts[layer], p[layer]) / scale[layer] for layer in layers) / len(layers)

    return Term("content", weight, tuple(layers), loss)


def gram_targets(model: HookedModel, images: Sequence[Tensor], weights: Sequence[float], layers: Sequence[str]) -> dict[str, Tensor]:
    """Ĝ per layer: the blend Σ_s w_s Ĝ_s of the style images' normalised Grams (computed once, no grad)."""
    grams: dict[str, Tensor] = {}
    for image, weight in zip(images, weights):
        for layer, act in reference_activations(model, image, layers).items():
            g = weight * gram(act)
            grams[layer] = grams[layer] + g if layer in grams else g
    return grams


def style_term(
    weight: float, grams: dict[str, Tensor], layer_weights: Sequence[float] | None = None, name: str = "style",
    dtype: torch.dtype | None = None,
) -> Term:
    """β · Σ_l w_l E_l / Ê_l over the layers of ``grams`` (w_l = 1/|L| by default), Ê_l = ``energy``: E_l of
    an all-zero image, so the style loss is Σ_l w_l ‖G − Ĝ‖² / ‖Ĝ‖². The Grams of the image's features are
    computed in ``dtype`` (the network's autocast dtype, see ``gram``)."""
    layers = tuple(grams)
    if layer_weights is None:
        layer_weights = [1.0 / len(layers)] * len(layers)
    if len(layer_weights) != len(layers):
        raise CnnvizError(f"{len(layers)} style layers but {len(layer_weights)} layer weights")
    scale = {layer: energy(style_layer_loss, g) for layer, g in grams.items()}

    def loss(acts: Activations, image: Tensor) -> Tensor:
        return sum(w * style_layer_loss(gram(acts[layer], dtype=dtype), grams[layer]) / scale[layer]
                   for w, layer in zip(layer_weights, layers))

    return Term(name, weight, layers, loss)
