"""Loss terms from the papers, as pure functions, and ``Objective``: named, weighted terms over one forward.

Every term takes activations (and the image, RGB in [0, 1]) and returns a scalar to minimise;
an ``Objective`` runs the model once, to the deepest layer any term needs, and reports each term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from cnnviz.core.hooked import HookedModel


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


def tv_loss(image: Tensor, beta: float = 2.0) -> Tensor:
    """R_TV^β = mean over pixels of ((x_{i,j+1} − x_ij)² + (x_{i+1,j} − x_ij)²)^(β/2).

    Mahendran & Vedaldi sum over pixels; the mean keeps one weight right at any image size.
    Pixel differences are in [0, 1] units.
    """
    dx = image[..., :-1, 1:] - image[..., :-1, :-1]
    dy = image[..., 1:, :-1] - image[..., :-1, :-1]
    squared = (dx.pow(2) + dy.pow(2)).sum(dim=1)
    if beta == 2.0:
        return squared.mean()
    return (squared + 1e-8).pow(beta / 2).mean()


def alpha_norm(x: Tensor, alpha: float = 6.0) -> Tensor:
    """Mean |x|^α (Mahendran & Vedaldi's bounded-range prior), on the model's input."""
    return x.abs().pow(alpha).mean()


def l2_norm(x: Tensor) -> Tensor:
    """Mean squared value, ‖I‖² / size (Simonyan et al. 2014's regulariser)."""
    return x.pow(2).mean()


def channel_mean(activation: Tensor, channel: int) -> Tensor:
    """Mean activation of one channel, per batch item (B,) (Lucid's ``channel`` objective).

    On (B, C) outputs such as ``logits`` this is the score of class ``channel``.
    """
    return activation[:, channel].reshape(activation.shape[0], -1).mean(dim=1)


def neuron(activation: Tensor, channel: int, y: int | None = None, x: int | None = None) -> Tensor:
    """One unit per batch item (B,): channel at (y, x); the centre when the position is not given."""
    if activation.dim() == 2:
        return activation[:, channel]
    h, w = activation.shape[-2:]
    return activation[:, channel, h // 2 if y is None else y, w // 2 if x is None else x]


Activations = dict[str, Tensor]


@dataclass(frozen=True)
class Term:
    """A named, weighted loss term: ``weight * fn(activations, image)``."""

    name: str
    weight: float
    layers: tuple[str, ...]
    fn: Callable[[Activations, Tensor], Tensor]


class Objective:
    """The sum of terms to minimise, from one forward pass to the deepest layer any term needs.

    Terms get the activations in the network's own dtype (bf16 under bf16 autocast) and promote them
    to float32 as they compute (``F − P`` with a float32 target, ``gram``), so each loss is float32."""

    def __init__(self, model: HookedModel, terms: Sequence[Term]) -> None:
        self.model = model
        self.terms = [t for t in terms if t.weight != 0]
        self.layers = list(dict.fromkeys(layer for t in self.terms for layer in t.layers))

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        """Each term's weighted value for ``image`` (B, 3, H, W) in [0, 1]."""
        acts = self.model(image, self.layers, native=True) if self.layers else {}
        return {t.name: t.weight * t.fn(acts, image) for t in self.terms}


def targets(model: HookedModel, image: Tensor, layers: Sequence[str]) -> Activations:
    """Activations of a reference image, computed once without grad."""
    with torch.no_grad():
        return {k: v.detach() for k, v in model(image, layers).items()}


class Score:
    """A differentiable score to maximise, one scalar from the activations of named layers (Lucid's
    objectives). Scores compose: ``a + 0.5 * b``, ``a - b``, ``a * b``, ``-a``, ``a / 2``; the sum's
    gradient is the sum of the gradients."""

    def __init__(self, fn: Callable[[Activations], Tensor], layers: Sequence[str], name: str) -> None:
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name

    def __call__(self, acts: Activations) -> Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return self.name

    def _join(self, other: Score | float, op: Callable[[Tensor, Tensor | float], Tensor], symbol: str) -> Score:
        if isinstance(other, Score):
            return Score(lambda acts: op(self(acts), other(acts)), self.layers + other.layers, f"({self.name} {symbol} {other.name})")
        return Score(lambda acts: op(self(acts), float(other)), self.layers, f"({self.name} {symbol} {other:g})")

    def __add__(self, other: Score | float) -> Score:
        return self._join(other, lambda a, b: a + b, "+")

    def __radd__(self, other: float) -> Score:
        return self if other == 0 else self + other

    def __sub__(self, other: Score | float) -> Score:
        return self._join(other, lambda a, b: a - b, "−")

    def __mul__(self, other: Score | float) -> Score:
        return self._join(other, lambda a, b: a * b, "×")

    def __rmul__(self, other: float) -> Score:
        return Score(lambda acts: float(other) * self(acts), self.layers, f"{other:g}·{self.name}")

    def __truediv__(self, other: float) -> Score:
        return self * (1.0 / float(other))

    def __neg__(self) -> Score:
        return -1.0 * self


def _items(values: Tensor, items: Sequence[int] | None) -> Tensor:
    """The sum of per-item ``values`` (B,) over ``items`` (None: all)."""
    return (values if items is None else values[list(items)]).sum()


def channel_score(layer: str, channel: int, items: Sequence[int] | None = None) -> Score:
    """A channel's mean activation (a class score on ``logits``), summed over batch ``items`` (None: all)."""
    return Score(lambda acts: _items(channel_mean(acts[layer], channel), items), [layer], f"{layer}:{channel}")


def neuron_score(layer: str, channel: int, y: int | None = None, x: int | None = None,
                 items: Sequence[int] | None = None) -> Score:
    """One unit (the centre if no position is given), summed over batch ``items``."""
    return Score(lambda acts: _items(neuron(acts[layer], channel, y, x), items), [layer], f"{layer}:{channel}@{y},{x}")


def diversity(layer: str, items: Sequence[int] | None = None) -> Score:
    """Minus the mean cosine similarity between the Gram matrices of ``layer`` of each pair of batch
    ``items`` (Olah et al. 2017): adding λ·diversity to a score pushes the images of a batch apart
    in style while each keeps the score high. Zero for a single image."""

    def fn(acts: Activations) -> Tensor:
        features = acts[layer] if items is None else acts[layer][list(items)]
        b = features.shape[0]
        if b < 2:
            return features.new_zeros(())
        grams = torch.nn.functional.normalize(gram(features).flatten(1), dim=1)
        similarity = grams @ grams.T
        return -(similarity.sum() - similarity.diagonal().sum()) / (b * (b - 1))

    return Score(fn, [layer], f"diversity({layer})")
