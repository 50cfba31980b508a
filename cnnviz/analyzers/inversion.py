"""Feature inversion (Mahendran & Vedaldi 2015): x* = argmin ‖Φ(x) − Φ0‖²/‖Φ0‖² + λ_TV R_TV^β(x) + λ_α ‖x − x̄‖_α^α."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from cnnviz.analyzers.common import Output, initial_image, record, zero_image
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, resize, source_name
from cnnviz.core.memory import check_fits
from cnnviz.losses import Loss, Term, feature_loss, reference_activations
from cnnviz.optim.loop import optimize
from cnnviz.optim.settings import Settings, Step, state_images
from cnnviz.optvis.regularizers import alpha_norm, tv_loss

DEFAULT_TV_WEIGHT = 0.5
START_NOISE = 0.1
"""Half-width of the noise an inversion starts from, half that of texture synthesis: the start's pixel noise is
what an inversion's first evaluations spend removing (a ±0.1 start's TV term is a quarter of a ±0.2 one's), so
more of the budget goes to matching the features; a seed still gives its own reconstruction
(benchmarks/INVERSION.md)."""


def relative_error(model: HookedModel, image: Tensor, reference: Tensor, layer: str) -> float:
    """‖Φ(x) − Φ0‖ / ‖Φ0‖ at one layer: how well ``image`` reproduces the reference's features."""
    phi = reference_activations(model, image, [layer])[layer]
    phi0 = reference_activations(model, reference, [layer])[layer]
    return float((phi - phi0).norm() / phi0.norm())


def alpha_term(model: HookedModel, weight: float, alpha: float) -> Term:
    """λ_α · mean |x − x̄|^α, the bounded-range prior, with x̄ the model's zero input (its mean colour) and
    pixel values in [0, 1] units, as the L2 penalty of gradient ascent: one λ_α means the same on every
    network, whatever its input convention (a 0-255 BGR network would otherwise weigh it ~255^α more)."""
    zero = zero_image(model, (1, 3, 1, 1))
    return Term("alpha", weight, (), lambda acts, x: alpha_norm(x - zero, alpha))


def invert(
    model: HookedModel,
    image: ImageSource = "astronaut",
    layer: str = "relu4_3",
    *,
    size: int = 256,
    tv_weight: float = DEFAULT_TV_WEIGHT,
    tv_beta: float = 2.0,
    alpha_weight: float = 0.0,
    alpha: float = 6.0,
    init: str = "noise",
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Reconstruct ``image`` from its features at ``layer``; returns the image and its record."""
    settings = settings or Settings()
    model = model.for_optimization()
    layer = model.table.get(layer).name
    reference = as_image(image, size, model.device)
    check_fits(model, [layer], reference.shape, state_images(settings.optimizer))

    def problem(shape: tuple[int, int]) -> Loss:
        phi0 = reference_activations(model, resize(reference, shape), [layer])[layer]
        return Loss(model, [
            Term("feature", 1.0, (layer,), lambda acts, x: feature_loss(acts[layer], phi0)),
            Term("tv", tv_weight, (), lambda acts, x: tv_loss(x, tv_beta)),
            alpha_term(model, alpha_weight, alpha),
        ])

    start = initial_image(init, reference, model, settings.seed, START_NOISE)
    result = optimize(problem, start, settings, callback)
    params = {
        "image": source_name(image), "size": size, "tv_weight": tv_weight,
        "tv_beta": tv_beta, "alpha_weight": alpha_weight, "alpha": alpha, "init": init,
        "relative_error": relative_error(model, result.image, reference, layer),
    }
    return Output(result.image, record("invert", model, [layer], params, settings, result), input=reference)
