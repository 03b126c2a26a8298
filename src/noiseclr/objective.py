"""The NoiseCLR contrastive objective (Dalva & Yanardag, CVPR 2024, Eq. 5), as pure functions.

Input is a feature tensor ``[J, N, F]``: for each of J drawn directions and N images, the
flattened noise difference ``delta[j, n] = eps(z_t[n], t, c_j) - eps(z_t[n], t, c_0)``.
For an anchor direction k, with ``cos`` the cosine similarity and ``tau`` the temperature::

    L_k = -log( sum_{n != m} exp(cos(delta[k,n], delta[k,m]) / tau)
                / sum_n sum_{l != k} exp(cos(delta[k,n], delta[l,n]) / tau) )

Positives: the same direction on different images (a direction should do the same thing
everywhere). Negatives: different directions on the same image (directions should differ).

Reported form. The functions here return the *mean-normalised* loss, as the published code
(gemlab-vt/NoiseCLR ``core/loss.py`` + ``trainer.py``) computes it::

    L_k = -log( mean_{n != m} exp(cos/tau) / mean_{n, l != k} exp(cos/tau) )
        = (Eq. 5 with sums) + log(N (N-1)) - log(N (J-1))

The counts are fixed, so the gradient is exactly Eq. 5's. The value is 0 when positives are
on average as similar as negatives, negative (better) when a direction agrees with itself
across images more than with other directions, and bounded below by ``-2 / tau``
(positives at cos 1, negatives at cos -1).

Variants (the UNet passes are the same for both):

* ``"single-anchor"`` (the published code): the first drawn direction is the anchor, the
  others serve only as its negatives.
* ``"all-anchors"``: every drawn direction is an anchor; the loss is the mean of ``L_k`` over
  the J anchors, so every drawn direction gets a positive-pair gradient. See
  ``docs/loss_variants.md`` for the measurement that picked the default.

Negatives, two ways (``axis_negatives``):

* signed (the paper): ``exp(cos / tau)``, smallest at ``cos = -1``. A direction and its exact
  opposite are then the *best* pair of negatives, so the objective rewards one axis learned twice
  with opposite signs -- and an edit applies every direction with both signs anyway.
* axis: ``exp(|cos| / tau)``: opposite changes count as the same axis, orthogonal ones are best.

Everything is computed with ``logsumexp``; feature normalisation and the loss run in at least
float32 whatever the model's dtype. :func:`reference_loss` is the plain float64 version
(explicit loops, sums, then the log-count correction) that the tests compare against.
"""

from __future__ import annotations

import math

import torch

VARIANTS = ("single-anchor", "all-anchors")
"""Names accepted by ``variant``."""


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
    ``axis_negatives``: negatives by ``|cos|`` (see the module docstring).
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
            torch.exp(cos(rows[k, n], rows[k, m]) / temperature)
            for n in range(batch)
            for m in range(batch)
            if n != m
        )
        negative = sum(
            torch.exp((cos(rows[k, n], rows[l, n]).abs() if axis_negatives else cos(rows[k, n], rows[l, n])) / temperature)
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
