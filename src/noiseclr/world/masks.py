"""Where each factor lives in an image: per-factor pixel masks derived from the renderer.

The renderer keeps every change local (labels and jitter are independent streams, see
:mod:`.render`), so a factor's pixels in ``render(domain, seed, labels)`` are exactly those that
change when that factor alone takes another value. :func:`factor_masks` renders the seed once per
other value of each factor and takes the union of the differing pixels; nothing is drawn twice by
hand, so the masks can never drift from the drawing code.

A mask is the factor's footprint *in this image and its counterfactuals*: the glasses mask of a
face without glasses covers where glasses would be. ``background``'s mask is every background
pixel, a scene's ``order`` mask both objects' areas.

:func:`pool_masks` downsamples masks to a latent grid (fraction of each cell covered) and
:func:`equalized_weight_map` turns them into one map in which every factor has the same total
weight, the weighting of the base model's mask-weighted loss (most factors are a few percent of
the pixels, so a plain per-pixel loss gives them a few percent of the gradient).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .factors import domain_factors
from .render import render_array


def factor_masks(
    domain: str, seed: int, labels: Mapping[str, str] | None = None, factors: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Boolean masks [128, 128] per factor (union over its other values) and the render itself.

    ``factors`` restricts which factors are computed (default: all of the domain's).
    Cost: one render per other value of each factor (about 20 for a face).
    """
    image, full = render_array(domain, seed, labels)
    masks: dict[str, np.ndarray] = {}
    for factor in domain_factors(domain):
        if factors is not None and factor.name not in factors:
            continue
        mask = np.zeros(image.shape[:2], dtype=bool)
        for value in factor.values:
            if value == full[factor.name]:
                continue
            other, _ = render_array(domain, seed, {**full, factor.name: value})
            mask |= (other != image).any(axis=-1)
        masks[factor.name] = mask
    return masks, image


def pool_masks(mask: np.ndarray, factor: int) -> np.ndarray:
    """Fraction of each ``factor`` x ``factor`` cell covered: [..., H, W] -> [..., H/f, W/f] float32."""
    *lead, height, width = mask.shape
    if height % factor or width % factor:
        raise ValueError(f"mask {height}x{width} does not divide into {factor}x{factor} cells")
    cells = mask.reshape(*lead, height // factor, factor, width // factor, factor).astype(np.float32)
    return cells.mean(axis=(-3, -1))


def equalized_weight_map(masks: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Masks [F, h, w] (coverage in [0, 1]) -> one map [h, w] with mean 1 over its cells in which
    every non-empty factor carries the same total weight (each mask divided by its area).

    All-ones masks give all ones; an empty mask contributes nothing.
    """
    masks = np.asarray(masks, dtype=np.float64)
    area = masks.mean(axis=(-2, -1), keepdims=True)
    present = area[..., 0, 0] > eps
    if not present.any():
        return np.ones(masks.shape[-2:], dtype=np.float32)
    share = (masks[present] / area[present]).mean(axis=0)  # mean 1 by construction
    return share.astype(np.float32)


def latent_weight_map(domain: str, seed: int, labels: Mapping[str, str] | None = None, factor: int = 8) -> np.ndarray:
    """The equalized weight map [128/f, 128/f] of ``render(domain, seed, labels)`` at latent resolution."""
    masks, _ = factor_masks(domain, seed, labels)
    return equalized_weight_map(pool_masks(np.stack(list(masks.values())), factor))
