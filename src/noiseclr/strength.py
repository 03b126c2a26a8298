"""Calibrated edit strength: one unit that means the same for every direction and every model.

A direction term adds ``lambda * (eps(z_t, c_k) - eps(z_t, c_0))`` to the noise prediction. How
much that moves an image depends on the direction's *response*

    r_k = mean over images n and noise levels t of  ||eps(z_t, c_k) - eps(z_t, c_0)|| / ||eps(z_t, c_0)||

which the contrastive loss leaves free (it normalises each noise difference): on one model two
directions' responses can differ twenty-fold, and between models the raw ``lambda`` means nothing.
A *strength* ``S`` (percent) fixes the size of the change instead: ``lambda = S / (100 r_k)``, so the
term changes the noise prediction by S% of its norm on average, whatever the direction or model.

:func:`noise_response` measures ``r`` for any conditionings (directions or prompts) on given clean
latents; discovery stores it with the directions (``Directions.calibration``), and
:func:`resolve_strengths` turns strength terms into scales, measuring on the images at hand when a
file has no calibration (imported textual-inversion files).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .directions import Directions
    from .model import DiffusionModel

log = logging.getLogger("noiseclr")

CALIBRATION_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Noise levels of the calibration, as fractions of the timestep range (covers coarse and fine)."""
CALIBRATION_IMAGES = 8
"""Clean latents the response is averaged over (more changes it by a few percent at most)."""
DEFINITION = "mean over images and timesteps of ||eps(c_k) - eps(c_0)|| / ||eps(c_0)||"
DEMO_STRENGTH = 3.0
"""The demo's one shared strength (percent). On the embedded model's 10 demo directions (6 test faces,
20 DDPM steps): 1% moved 1 of 10, 2% 8 (mean purity 0.80), 3% 10 (0.65), 4% 10 (0.52), 8% 10 but
overdriven (0.25) -- benchmarks/strength.md."""
BENCH_STRENGTHS = (2.0, 4.0)
"""The benchmark's strength grid (percent), each tried with both signs."""
DUPLICATE_COSINE = 0.8
"""Directions whose noise changes have |cos| at least this on the same images are one axis twice."""


def calibration_timesteps(model: DiffusionModel, timestep_range: tuple[float, float] = (0.0, 1.0)) -> list[int]:
    """Integer timesteps at :data:`CALIBRATION_FRACTIONS` of ``timestep_range`` (fractions of T)."""
    low, high = timestep_range
    total = model.num_train_timesteps
    return sorted({min(total - 1, int((low + (high - low) * f) * total)) for f in CALIBRATION_FRACTIONS})


@torch.no_grad()
def noise_response(
    model: DiffusionModel,
    conditionings: torch.Tensor,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    *,
    seed: int = 0,
    rows_per_call: int = 256,
) -> torch.Tensor:
    """Response ``r_j`` of each conditioning [J, L, W] on clean latents [B, C, h, w]: float64 [J].

    The same noise (from ``seed``) is used for every conditioning, one draw per timestep; per
    timestep the null pass is one UNet call and the J*B conditioned passes are batched in calls of
    at most ``rows_per_call`` rows.
    """
    generator = torch.Generator().manual_seed(int(seed))
    latents = latents.to(model.device, torch.float32)
    count, batch = conditionings.shape[0], latents.shape[0]
    per_call = max(1, rows_per_call // batch)
    total = torch.zeros(count, dtype=torch.float64)
    for timestep in timesteps:
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        noisy = model.add_noise(latents, noise, int(timestep))
        eps_null = model.predict_eps(noisy, int(timestep), model.null_conditioning().expand(batch, -1, -1))
        null_norm = eps_null.flatten(1).double().norm(dim=1).clamp_min(1e-30)  # [B]
        for first in range(0, count, per_call):
            eps = model.predict_eps_grid(noisy, int(timestep), conditionings[first : first + per_call])  # [j, B, ...]
            change = (eps - eps_null.unsqueeze(0)).flatten(2).double().norm(dim=2)  # [j, B]
            total[first : first + per_call] += (change / null_norm.to(change.device)).mean(dim=1).cpu()
    return total / len(timesteps)


def direction_response(
    model: DiffusionModel,
    directions: Directions,
    latents: torch.Tensor,
    *,
    indices: Sequence[int] | None = None,
    timesteps: Sequence[int] | None = None,
    seed: int = 0,
    rows_per_call: int = 256,
) -> torch.Tensor:
    """:func:`noise_response` of directions (all, or ``indices``): float64 [len(indices)]."""
    picked = list(range(directions.count)) if indices is None else list(indices)
    steps = list(timesteps) if timesteps is not None else calibration_timesteps(model)
    out = []
    chunk = max(1, rows_per_call // max(1, latents.shape[0]))
    for first in range(0, len(picked), chunk):
        vectors = directions.vectors[picked[first : first + chunk]].to(model.device)
        with torch.no_grad():
            conditionings = model.encode_directions(vectors)
        out.append(noise_response(model, conditionings, latents, steps, seed=seed, rows_per_call=rows_per_call))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@torch.no_grad()
def change_similarity(
    model: DiffusionModel,
    directions: Directions,
    latents: torch.Tensor,
    timestep: int,
    *,
    seed: int = 0,
    rows_per_call: int = 256,
) -> torch.Tensor:
    """Signed cosine [K, K] between directions' noise changes ``eps(c_k) - eps(c_0)`` on the same
    images and noise at one ``timestep``, each direction's changes over the images as one vector.

    Near +-1 means two directions make the same change (or its opposite: one axis twice).
    """
    generator = torch.Generator().manual_seed(int(seed) + 1)
    latents = latents.to(model.device, torch.float32)
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    noisy = model.add_noise(latents, noise, int(timestep))
    eps_null = model.predict_eps(noisy, int(timestep), model.null_conditioning().expand(batch, -1, -1))
    rows = []
    per_call = max(1, rows_per_call // batch)
    for first in range(0, directions.count, per_call):
        conditionings = model.encode_directions(directions.vectors[first : first + per_call].to(model.device))
        eps = model.predict_eps_grid(noisy, int(timestep), conditionings)
        rows.append((eps - eps_null.unsqueeze(0)).flatten(1).double().cpu())
    changes = torch.cat(rows)
    unit = changes / changes.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return unit @ unit.T


def duplicate_pairs(similarity: torch.Tensor, threshold: float = DUPLICATE_COSINE) -> list[list[float]]:
    """``[i, j, cos]`` for i < j with ``|cos| >= threshold`` (most similar first)."""
    count = similarity.shape[0]
    pairs = [
        [i, j, round(float(similarity[i, j]), 4)]
        for i in range(count)
        for j in range(i + 1, count)
        if abs(float(similarity[i, j])) >= threshold
    ]
    return sorted(pairs, key=lambda pair: -abs(pair[2]))


def repeats(pairs: Sequence[Sequence[float]]) -> dict[int, tuple[int, float]]:
    """Direction -> (the earlier direction it repeats, cos), from :func:`duplicate_pairs` (most similar first)."""
    found: dict[int, tuple[int, float]] = {}
    for i, j, cos in pairs:
        found.setdefault(int(j), (int(i), float(cos)))
    return found


def calibrate(
    model: DiffusionModel,
    directions: Directions,
    latents: torch.Tensor,
    *,
    timestep_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    source: str = "",
) -> dict[str, Any]:
    """The calibration record stored with directions: responses and how they were measured."""
    latents = latents[:CALIBRATION_IMAGES]
    timesteps = calibration_timesteps(model, timestep_range)
    response = direction_response(model, directions, latents, timesteps=timesteps, seed=seed)
    similarity = change_similarity(model, directions, latents, timesteps[len(timesteps) // 2], seed=seed)
    off_diagonal = similarity.abs()[~torch.eye(directions.count, dtype=torch.bool)]
    return {
        "response": [float(r) for r in response],
        "duplicates": duplicate_pairs(similarity),
        "mean_abs_cos": float(off_diagonal.mean()) if off_diagonal.numel() else 0.0,
        "definition": DEFINITION,
        "timesteps": timesteps,
        "images": int(latents.shape[0]),
        "seed": int(seed),
        "source": source,
    }


def scale_for(strength: float, response: float) -> float:
    """The ``lambda`` that gives a change of ``strength`` percent for a direction of this response."""
    return float(strength) / 100.0 / max(float(response), 1e-12)


def strength_of(scale: float, response: float) -> float:
    """The strength (percent) a raw ``lambda`` gives a direction of this response."""
    return 100.0 * float(scale) * float(response)
