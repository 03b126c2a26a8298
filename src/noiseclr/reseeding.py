"""Restarting directions that repeat another (discovery's ``--reseed-duplicates``, issue 21).

The contrast separates directions image by image, yet two of them can still settle on one change
(or its opposite). Every few steps the directions' noise changes are compared on a fixed set of
training latents; the later direction of each pair above the threshold starts again from a fresh
embedding, with its optimizer state zeroed, so it looks for something else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .directions import Directions
from .strength import CALIBRATION_IMAGES, calibration_timesteps, change_similarity, duplicate_pairs

if TYPE_CHECKING:
    from .model import DiffusionModel

log = logging.getLogger("noiseclr")


@torch.no_grad()
def restart_duplicates(
    model: DiffusionModel,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    latents: torch.Tensor,
    threshold: float,
    timestep_range: tuple[float, float],
    *,
    seed: int,
    step: int,
    stream_seed: Callable[[str], int],
) -> int:
    """Restart, in place, the later direction of each pair of ``vectors`` whose noise changes on the first
        latents have ``|cos| >= threshold``; fresh rows come from ``stream_seed`` (discovery's named streams),
    so a resumed run does the same.
        Returns how many restarted."""
    timesteps = calibration_timesteps(model, timestep_range)
    similarity = change_similarity(
        model,
        Directions(vectors=vectors.detach()),
        latents[:CALIBRATION_IMAGES],
        timesteps[len(timesteps) // 2],
        seed=seed + step,
    )
    restart = sorted({int(j) for _, j, _ in duplicate_pairs(similarity, threshold)})
    for index in restart:
        fresh = torch.randn(
            1, vectors.shape[1], generator=torch.Generator().manual_seed(stream_seed(f"reseed:{step}:{index}"))
        )
        vectors[index] = model.scale_to_token_norms(fresh)[0].to(vectors)
        for value in optimizer.state.get(vectors, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == vectors.shape:
                value[index] = 0
    if restart:
        log.info(
            "step %d: restarted direction(s) %s (a noise change with |cos| >= %g to an earlier one)",
            step,
            ", ".join(map(str, restart)),
            threshold,
        )
    return len(restart)
