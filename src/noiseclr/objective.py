"""The NoiseCLR contrastive objective (Dalva & Yanardag, CVPR 2024, Eq. 5) and one micro-batch's loss, as pure functions.

Features are ``[J, N, F]`` unit noise differences ``eps(z_t, t, c_j) - eps(z_t, t, c_0)``; the loss
is mean-normalised as in the published code, in two variants (single-anchor, all-anchors) and with
signed or axis negatives. The full specification is in ``docs/discovery.md``, "The objective".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .model import DiffusionModel

VARIANTS = ("single-anchor", "all-anchors")
"""Names accepted by ``variant``."""
DEFAULT_VARIANT = "all-anchors"
"""Chosen by measurement, see ``docs/loss_variants.md``."""


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown loss variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    # Half-precision UNet outputs are upcast; float64 (tests, gradcheck) is kept.
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def normalize_features(deltas: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``[J, N, ...]`` noise differences -> ``[J, N, F]`` unit-length rows (float32 or float64).

    ``eps`` only guards an exactly-zero difference (it then maps to the zero vector).
    """
    flat = _at_least_float32(deltas).flatten(start_dim=2)
    return flat / flat.norm(dim=2, keepdim=True).clamp_min(eps)


def _check_features(features: torch.Tensor) -> tuple[int, int]:
    if features.ndim != 3:
        raise ValueError(f"features must be [J, N, F], got shape {tuple(features.shape)}")
    count, batch = features.shape[0], features.shape[1]
    if count < 2:
        raise ValueError(f"the contrast needs at least 2 directions (an anchor and a negative), got J={count}")
    if batch < 2:
        raise ValueError(f"the contrast needs at least 2 images per direction (a positive pair), got N={batch}")
    return count, batch


def anchor_losses(
    features: torch.Tensor, temperature: float, anchors: int | None = None, axis_negatives: bool = False
) -> torch.Tensor:
    """Mean-normalised ``L_k`` for anchors ``k = 0 .. anchors-1`` (all J when ``None``).

    ``features`` are unit-length ``[J, N, F]`` rows (see :func:`normalize_features`);
    ``axis_negatives`` uses ``|cos|`` for the negatives.
    """
    count, batch = _check_features(features)
    anchors = count if anchors is None else anchors
    features = _at_least_float32(features)
    anchor_rows = features[:anchors]  # [A, N, F]
    neg_inf = torch.finfo(features.dtype).min  # finite, so masked entries have a 0 (not NaN) gradient

    # Positives: same direction, image pairs n != m.
    positive = torch.einsum("anf,amf->anm", anchor_rows, anchor_rows) / temperature  # [A, N, N]
    same_image = torch.eye(batch, dtype=torch.bool, device=features.device)
    positive = positive.masked_fill(same_image, neg_inf).flatten(start_dim=1)
    log_positive_mean = torch.logsumexp(positive, dim=1) - math.log(batch * (batch - 1))

    # Negatives: same image, directions l != k.
    negative = torch.einsum("anf,lnf->aln", anchor_rows, features)  # [A, J, N]
    negative = (negative.abs() if axis_negatives else negative) / temperature
    same_direction = torch.eye(anchors, count, dtype=torch.bool, device=features.device).unsqueeze(2)
    negative = negative.masked_fill(same_direction, neg_inf).flatten(start_dim=1)
    log_negative_mean = torch.logsumexp(negative, dim=1) - math.log(batch * (count - 1))

    return log_negative_mean - log_positive_mean


def contrastive_loss(
    features: torch.Tensor, temperature: float = 0.5, variant: str = "all-anchors", axis_negatives: bool = False
) -> torch.Tensor:
    """The NoiseCLR loss of unit-length ``[J, N, F]`` features (mean-normalised, lower is better).

    ``single-anchor``: ``L_0`` (direction 0 against directions 1..J-1).
    ``all-anchors``: the mean of ``L_k`` over all J directions.
    ``axis_negatives``: negatives by ``|cos|`` (see ``docs/discovery.md``, "The objective").
    """
    check_variant(variant)
    if variant == "single-anchor":
        return anchor_losses(features, temperature, anchors=1, axis_negatives=axis_negatives)[0]
    return anchor_losses(features, temperature, axis_negatives=axis_negatives).mean()


def log_count_correction(num_directions: int, num_images: int) -> float:
    """What turns Eq. 5 with sums into the mean-normalised loss: ``log(N(N-1)) - log(N(J-1))``."""
    return math.log(num_images * (num_images - 1)) - math.log(num_images * (num_directions - 1))


def reference_loss(
    deltas: torch.Tensor, temperature: float = 0.5, variant: str = "all-anchors", axis_negatives: bool = False
) -> torch.Tensor:
    """Eq. 5 literally, in float64 with Python loops (slow; for tests).

    Takes raw (unnormalised) ``[J, N, ...]`` differences, normalises each, sums as the paper
    writes, then adds :func:`log_count_correction`. Differentiable with respect to ``deltas``.
    """
    check_variant(variant)
    rows = deltas.to(torch.float64).flatten(start_dim=2)
    count, batch = _check_features(rows)

    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum() / (a.norm() * b.norm())

    def loss_for(k: int) -> torch.Tensor:
        positive = sum(
            torch.exp(cos(rows[k, n], rows[k, m]) / temperature) for n in range(batch) for m in range(batch) if n != m
        )
        negative = sum(
            torch.exp(
                (cos(rows[k, n], rows[l, n]).abs() if axis_negatives else cos(rows[k, n], rows[l, n])) / temperature
            )
            for n in range(batch)
            for l in range(count)  # noqa: E741 - the paper's index name
            if l != k
        )
        return -torch.log(positive / negative) + log_count_correction(count, batch)

    anchors = [0] if variant == "single-anchor" else list(range(count))
    return torch.stack([loss_for(k) for k in anchors]).mean()


def mean_negative_abs_cos(features: torch.Tensor) -> torch.Tensor:
    """Diversity probe: mean ``|cos|`` between different directions' features on the same image.

    0 means the directions change images in orthogonal ways; 1 means they all do the same
    thing. No gradient.
    """
    with torch.no_grad():
        features = _at_least_float32(features)
        count = features.shape[0]
        if count < 2:
            return torch.zeros((), device=features.device)
        sims = torch.einsum("knf,lnf->kln", features, features).abs()  # [J, J, N]
        off_diagonal = ~torch.eye(count, dtype=torch.bool, device=features.device)
        return sims[off_diagonal].mean()


def mean_change_cosines(features: torch.Tensor) -> torch.Tensor:
    """[J, J] cosines between the directions' mean unit noise differences over the batch's images:
    the part of each direction's change that is the same on every image."""
    means = _at_least_float32(features).mean(dim=1)
    unit = means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def decorrelation_penalty(features: torch.Tensor) -> torch.Tensor:
    """``mean_{j != l} cos(m_j, m_l)^2`` of the mean changes ``m_j`` (:func:`mean_change_cosines`), in
    the spirit of VICReg's covariance term: the contrast separates directions image by image, so two
    directions may still make the same average change; squared, so a direction and its opposite
    (one axis twice) are penalised too."""
    cosines = mean_change_cosines(features)
    count = cosines.shape[0]
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=cosines.device)
    return (cosines[off_diagonal] ** 2).mean()


def mean_vector_abs_cos(vectors: torch.Tensor) -> float:
    """Mean off-diagonal ``|cos|`` between direction vectors ``[K, W]`` (a free diversity check)."""
    with torch.no_grad():
        unit = torch.nn.functional.normalize(vectors.detach().float(), dim=1)
        count = unit.shape[0]
        if count < 2:
            return 0.0
        sims = (unit @ unit.T).abs()
        off_diagonal = ~torch.eye(count, dtype=torch.bool, device=unit.device)
        return float(sims[off_diagonal].mean())


# ------------------------------------------------------------- one micro-batch
# The model is only called (frozen, no state changes): the loss stays a function of its inputs,
# and the training loop is the one place that owns the optimizer and the randomness.
class MicroBatchLoss(NamedTuple):
    loss: torch.Tensor
    """Scalar float32 loss (mean-normalised, plus the magnitude floor's hinge if set), with grad to ``direction_vectors``."""
    features: torch.Tensor
    """[J, N_global, F] unit-length deltas (the local slice carries grad)."""
    response: torch.Tensor
    """[J] this process's ``mean_n ||delta|| / ||eps(c_0)||`` per drawn direction (detached)."""


def delta_and_response(
    model: DiffusionModel,
    direction_vectors: torch.Tensor,
    latents: torch.Tensor,
    timestep: int | torch.Tensor,
    noise: torch.Tensor,
    drawn: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length deltas [J, N, C*h*w] (as :func:`delta_features`) and each drawn direction's
    response on these images, ``mean_n ||delta|| / ||eps(c_0)||`` [J], both with grad."""
    noisy = model.add_noise(latents, noise, timestep)
    with torch.no_grad():
        null = model.null_conditioning().expand(noisy.shape[0], -1, -1)
        eps_null = model.predict_eps(noisy, timestep, null)
    conditionings = model.encode_directions(direction_vectors[drawn.to(direction_vectors.device)])
    eps_directions = model.predict_eps_grid(noisy, timestep, conditionings)  # [J, N, C, h, w]
    deltas = eps_directions - eps_null.unsqueeze(0)
    null_norm = eps_null.flatten(1).float().norm(dim=1).clamp_min(1e-30)
    response = (deltas.flatten(2).float().norm(dim=2) / null_norm).mean(dim=1)
    return normalize_features(deltas), response


def delta_features(
    model: DiffusionModel,
    direction_vectors: torch.Tensor,
    latents: torch.Tensor,
    timestep: int | torch.Tensor,
    noise: torch.Tensor,
    drawn: torch.Tensor,
) -> torch.Tensor:
    """Unit-length ``eps(z_t, t, c_k) - eps(z_t, t, c_0)`` for each drawn k: [J, N, C*h*w] float32.

    The null pass runs without grad as its own call; the J*N direction passes are ONE UNet call
    with grad, which reaches only ``direction_vectors[drawn]``.
    """
    return delta_and_response(model, direction_vectors, latents, timestep, noise, drawn)[0]


def magnitude_hinge(response: torch.Tensor, floor: float) -> torch.Tensor:
    """``mean_j max(0, log floor - log response_j)``: zero once every drawn direction changes the
    noise prediction by at least ``floor`` (relative), so the contrastive loss cannot buy its
    normalised separation with directions that barely act. On the log because responses sit near
    1e-3: a linear hinge's gradient is then 200-300x smaller than the contrastive loss's and the
    floor never acts (benchmarks/quality.md); the log's gradient grows as ``1 / response``."""
    return torch.relu(math.log(floor) - response.clamp_min(1e-12).log()).mean()


def micro_batch_loss(
    model: DiffusionModel,
    direction_vectors: torch.Tensor,
    latents: torch.Tensor,
    timestep: int | torch.Tensor,
    noise: torch.Tensor,
    drawn: torch.Tensor,
    variant: str = DEFAULT_VARIANT,
    temperature: float = 0.5,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    magnitude_floor: float = 0.0,
    floor_weight: float = 0.0,
    axis_negatives: bool = False,
    diversity_weight: float = 0.0,
) -> MicroBatchLoss:
    """The loss of one micro-batch: N local images, J drawn directions, one timestep.

    ``latents`` and ``noise`` are this process's [N, C, h, w]; ``gather`` turns the local
    [J, N, F] features into the global batch (see :class:`Processes`), identity by default.
    With ``magnitude_floor > 0`` the loss adds ``floor_weight * magnitude_hinge`` (this process's
    images), with ``diversity_weight > 0`` ``diversity_weight * decorrelation_penalty`` (the global
    batch); the paper's objective has neither.
    """
    features, response = delta_and_response(model, direction_vectors, latents, timestep, noise, drawn)
    if gather is not None:
        features = gather(features)
    loss = contrastive_loss(features, temperature, variant, axis_negatives)
    if magnitude_floor > 0 and floor_weight > 0:
        loss = loss + floor_weight * magnitude_hinge(response, magnitude_floor)
    if diversity_weight > 0:
        loss = loss + diversity_weight * decorrelation_penalty(features)
    return MicroBatchLoss(loss, features, response.detach())
