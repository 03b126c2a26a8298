"""Benchmark metrics: pure functions of read factor values (no model, no files).

Everything the benchmark and the demo report is computed here from integer tables of factor
values read by the factor readers (:mod:`noiseclr.measure` does the reading):

* ``change[k, f]``: fraction of images whose read factor ``f`` differs between the edit by
  direction ``k`` and the reconstruction (:func:`changed_mask`, :func:`axis_changed`,
  :func:`change_fractions`);
* main factor of ``k``: ``argmax_f change[k, f]``; main change: that change; purity: main change over
  ``sum_f change[k, f]`` (0 when nothing changed); preservation: ``1 - mean`` change of the other
  ``F - 1`` factors (:func:`direction_metrics`);
* a factor is *discovered* when some direction has it as main factor with main change >= 0.5 and
  purity >= 0.6; coverage = discovered factors / F (:func:`discovered_factors`, :func:`coverage`);
* the selection rule (:func:`select_edit`) over an edit grid (:class:`EditConfig`);
* cross-domain interference on scenes (:func:`alone_interference`, :func:`pair_interference`);
* global vs localized edits (:func:`target_comparison`: the global edit's main factor read in
  both) and the pixel measure :func:`masked_psnr` (PSNR against the reconstruction over the
  pixels outside a region).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

DISCOVERED_CHANGE = 0.5
DISCOVERED_PURITY = 0.6
EFFECTIVE_CHANGE = 0.25

DEFINITIONS = {
    "change[k,f]": "fraction of held-out images whose read factor f differs between direction k's edit and the reconstruction",
    "main factor": "the factor with the largest change for that direction",
    "main change": "change of the main factor",
    "purity": "main change / sum of all the direction's changes (0 if nothing changed)",
    "effective": "main change >= 0.25 and, in the bench once its random method has run, beats random: above the "
    "random directions' 95th percentile on some factor by more than their own leave-one-out margins reach (about 1 "
    "random direction in 20 passes)",
    "beats random": "the margin test alone (noiseclr.chance.judge against the run's random method)",
    "acting": "main change >= 0.25 alone (what 'effective' meant before the random reference)",
    "preservation": "1 - mean change of the non-main factors, averaged over effective directions",
    "discovered": "a factor some direction has as main factor with main change >= 0.5 and purity >= 0.6",
    "coverage": "discovered factors / all factors of the domain",
    "mean purity": "mean purity over effective directions",
    "selection": "per direction, on validation images only: max main change*purity subject to preservation >= "
    "min_preservation, over scales (both signs) x windows; ties: smaller |scale|, then grid order",
    "interference": "fraction of scene images where some factor of the OTHER object changed: a direction alone vs. "
    "the reconstruction; in a pair, each object vs. its own direction's edit alone (what the other direction did)",
    "off-target": "in a pair, fraction of scenes where an object changed beyond its own direction's main factor, vs. "
    "the reconstruction (its own direction's side effects included)",
    "localized": "the same pick (direction, scale, window) applied with an auto region (--region auto); target = "
    "the global edit's main factor, read in both; preservation = 1 - mean change of the other factors",
    "psnr outside region": "PSNR (dB, pixels in [-1, 1] at 128x128) against the reconstruction over the pixels outside "
    "the localized edit's final region, for the localized edit and for the global edit on the same pixels; "
    "capped at 100 dB (identical)",
}


# -------------------------------------------------------------------------------- edit grid
SIGNS = (1.0, -1.0)
"""A direction is an axis: every setting is applied at +scale and at -scale."""


@dataclass(frozen=True)
class EditConfig:
    """One edit setting: a magnitude (applied with both signs) and a window.

    ``unit`` says what the magnitude ``scale`` is: a raw lambda (``"scale"``) or a calibrated
    strength in percent (``"strength"``, :mod:`noiseclr.strength`).
    """

    scale: float
    start: float = 0.0
    end: float = 1.0
    unit: str = "scale"

    def to_json(self) -> dict[str, float]:
        key = "edit_strength" if self.unit == "strength" else "scale"
        return {key: float(self.scale), "start": float(self.start), "end": float(self.end)}

    def describe(self) -> str:
        percent = "%" if self.unit == "strength" else ""
        return f"±{abs(self.scale):g}{percent} @{self.start:g}:{self.end:g}"


def edit_grid(scales: Sequence[float], windows: Sequence[tuple[float, float]], unit: str = "scale") -> list[EditConfig]:
    """Every magnitude (ascending; each later applied at + and -) times every window."""
    magnitudes = sorted({abs(float(s)) for s in scales if float(s) != 0.0})
    return [EditConfig(magnitude, float(start), float(end), unit) for magnitude in magnitudes for start, end in windows]


# ----------------------------------------------------------------------------- metric math
def changed_mask(edited: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """bool [..., B, F]: read factor values of edits [..., B, F] differ from the reference [B, F]."""
    return edited.long() != reference.long()


def axis_changed(changed_by_sign: torch.Tensor) -> torch.Tensor:
    """bool [..., B, F] from [..., 2, B, F]: the factor changed under +scale or under -scale.

    A direction is judged as an axis: a perfect glasses toggle adds glasses where there are none
    (+) and removes them where there are (-), so it changes every image. Judged one sign at a
    time, a binary factor with balanced values could never pass 0.5.
    """
    return changed_by_sign.any(dim=-3)


def change_fractions(changed: torch.Tensor) -> torch.Tensor:
    """float64 [..., F]: fraction of images (axis -2) whose factor changed."""
    return changed.to(torch.float64).mean(dim=-2)


@dataclass
class DirectionMetrics:
    """Per-direction numbers from a change table [K, F]."""

    main: torch.Tensor
    """[K] long: main factor index."""
    main_change: torch.Tensor
    purity: torch.Tensor
    preservation: torch.Tensor
    """[K] 1 - mean change of the non-main factors."""


def direction_metrics(changes: torch.Tensor) -> DirectionMetrics:
    """Main factor, main change, purity and preservation of each row of ``changes`` [K, F] (float)."""
    changes = changes.to(torch.float64)
    if changes.ndim != 2 or changes.shape[1] < 1:
        raise ValueError(f"changes must be [K, F], got {tuple(changes.shape)}")
    main_change, main = changes.max(dim=1)
    total = changes.sum(dim=1)
    purity = torch.where(total > 0, main_change / total.clamp_min(1e-300), torch.zeros_like(total))
    others = changes.shape[1] - 1
    off = (total - main_change) / others if others else torch.zeros_like(total)
    return DirectionMetrics(main=main, main_change=main_change, purity=purity, preservation=1.0 - off)


def discovered_factors(
    changes: torch.Tensor, min_change: float = DISCOVERED_CHANGE, min_purity: float = DISCOVERED_PURITY
) -> dict[int, int]:
    """Factor index -> the direction that discovers it (best main change * purity among qualifying ones)."""
    metrics = direction_metrics(changes)
    found: dict[int, int] = {}
    score = metrics.main_change * metrics.purity
    for k in range(changes.shape[0]):
        if metrics.main_change[k] >= min_change - 1e-9 and metrics.purity[k] >= min_purity - 1e-9:
            factor = int(metrics.main[k])
            if factor not in found or score[k] > score[found[factor]]:
                found[factor] = k
    return dict(sorted(found.items()))


def coverage(changes: torch.Tensor, **thresholds: float) -> float:
    """Discovered factors / all factors."""
    return len(discovered_factors(changes, **thresholds)) / changes.shape[1]


def summarize_changes(
    changes: torch.Tensor,
    factor_names: Sequence[str],
    effective_change: float = EFFECTIVE_CHANGE,
    *,
    effective: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The headline numbers of one method from its held-out change table [K, F]. ``effective`` (bool
    [K]) overrides which directions count as effective (default: main change >= ``effective_change``;
    the bench passes "and beats random", :mod:`noiseclr.bench.versus_random`)."""
    metrics = direction_metrics(changes)
    found = discovered_factors(changes)
    if effective is None:
        effective = metrics.main_change >= effective_change - 1e-9

    def mean(values: torch.Tensor) -> float | None:
        return float(values.mean()) if values.numel() else None

    return {
        "count": int(changes.shape[0]),
        "num_factors": len(factor_names),
        "coverage": len(found) / len(factor_names),
        "discovered": {factor_names[f]: k for f, k in found.items()},
        "effective_directions": int(effective.sum()),
        "mean_purity": mean(metrics.purity[effective]),
        "preservation": mean(metrics.preservation[effective]),
        "preservation_all": mean(metrics.preservation),
        "mean_main_change": mean(metrics.main_change),
    }


def any_changed_fraction(changed: torch.Tensor, columns: Sequence[int]) -> torch.Tensor:
    """float64 [...]: fraction of images (axis -2) where at least one of ``columns`` changed."""
    if not len(columns):
        return torch.zeros(changed.shape[:-2], dtype=torch.float64)
    picked = changed[..., list(columns)]
    return picked.any(dim=-1).to(torch.float64).mean(dim=-1)


def dominant_value(edited: torch.Tensor, changed: torch.Tensor, factor: int) -> tuple[int | None, float]:
    """The value factor ``factor`` most often changed TO (edited [B, F], changed [B, F]) and its share."""
    rows = changed[:, factor]
    if not bool(rows.any()):
        return None, 0.0
    values = edited[rows, factor].long()
    counts = torch.bincount(values)
    best = int(counts.argmax())
    return best, float(counts[best]) / float(values.numel())


def wilson_interval(successes: float, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% (default ``z``) Wilson score interval of a binomial proportion; (0, 1) for no trials.

    Used for a direction's main change (the fraction of images whose main factor changed): with 200
    images the half-width is at most 0.07, with 50 at most 0.14.
    """
    if trials <= 0:
        return 0.0, 1.0
    p = float(successes) / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def clearly_ineffective(changes: torch.Tensor, images: int, threshold: float = EFFECTIVE_CHANGE) -> torch.Tensor:
    """bool [K]: every factor's change (a fraction of ``images``) has its 95% upper bound below
    ``threshold``, so the direction cannot reach the effective main change with more images either
    (with 95% confidence per factor)."""
    upper = torch.tensor(
        [[wilson_interval(float(c) * images, images)[1] for c in row] for row in changes.to(torch.float64).tolist()],
        dtype=torch.float64,
    ).view(changes.shape)
    return (upper < threshold).all(dim=-1)


def screen_settings(validation_changes: torch.Tensor, keep: int, min_preservation: float) -> list[list[int]]:
    """Per direction, the ``keep`` grid settings [G] with the best screening scores (the selection
    rule's score on a first slice of validation images), best first; ties go to the grid order."""
    survivors = []
    for table in validation_changes:
        metrics = direction_metrics(table)
        quality = metrics.main_change * metrics.purity
        allowed = metrics.preservation >= min_preservation - 1e-9
        score = torch.where(allowed, quality, quality * metrics.preservation - 1.0)  # constraint first
        order = sorted(range(table.shape[0]), key=lambda g: (-round(float(score[g]), 9), g))
        survivors.append(sorted(order[: max(1, keep)]))
    return survivors


# ------------------------------------------------------------------- localized vs global
PSNR_CAP = 100.0
"""PSNR of identical pixels (dB): a finite stand-in for infinity."""


def upsample_region(region: torch.Tensor, size: int) -> torch.Tensor:
    """bool [n, h, w] latent-grid region -> bool [n, size, size] (nearest: each cell covers its pixel block)."""
    import torch.nn.functional as F

    return F.interpolate(region.float().unsqueeze(1), size=(size, size), mode="nearest").squeeze(1) > 0.5


def masked_psnr(edited: torch.Tensor, reference: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [n]: PSNR in dB of pixels [n, 3, S, S] in [-1, 1] (peak-to-peak 2) over the pixels where
    ``keep`` [n, S, S] is True (all if None); :data:`PSNR_CAP` where they are identical, NaN where
    ``keep`` is empty."""
    error = (edited.to(torch.float64) - reference.to(torch.float64)).pow(2).sum(dim=1)  # [n, S, S]
    mask = torch.ones_like(error, dtype=torch.bool) if keep is None else keep.to(torch.bool)
    count = mask.flatten(1).sum(dim=1).to(torch.float64) * edited.shape[1]
    mse = (error * mask).flatten(1).sum(dim=1) / count.clamp_min(1.0)
    psnr = 10.0 * torch.log10(4.0 / mse.clamp_min(1e-300))
    psnr = psnr.clamp(max=PSNR_CAP)
    return torch.where(count > 0, psnr, torch.full_like(psnr, float("nan")))


def target_comparison(global_changes: torch.Tensor, local_changes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per direction (rows of [K, F] change tables of the same picks, global and localized): the target
    factor (the global edit's main factor), its change in each, and each one's preservation of the
    other factors (1 - their mean change)."""
    global_changes, local_changes = global_changes.to(torch.float64), local_changes.to(torch.float64)
    target = global_changes.argmax(dim=1)
    rows = torch.arange(global_changes.shape[0])
    others = max(1, global_changes.shape[1] - 1)
    out = {"target": target}
    for name, changes in (("global", global_changes), ("local", local_changes)):
        main_change = changes[rows, target]
        out[f"main_change_{name}"] = main_change
        out[f"preservation_{name}"] = 1.0 - (changes.sum(dim=1) - main_change) / others
    return out


# ------------------------------------------------------------------------------- selection
@dataclass
class Selection:
    """The validation pick of one direction."""

    index: int
    """Position in the grid."""
    config: EditConfig
    score: float
    main_change: float
    purity: float
    preservation: float
    main_factor: int
    constraint_met: bool

    def to_json(self, factor_names: Sequence[str] | None = None) -> dict[str, Any]:
        data = {
            **self.config.to_json(),
            "score": round(self.score, 6),
            "main_change": round(self.main_change, 6),
            "purity": round(self.purity, 6),
            "preservation": round(self.preservation, 6),
            "constraint_met": self.constraint_met,
        }
        data["main_factor"] = factor_names[self.main_factor] if factor_names else self.main_factor
        return data


def select_edit(validation_changes: torch.Tensor, grid: Sequence[EditConfig], min_preservation: float) -> Selection:
    """Pick one direction's edit setting from its VALIDATION change table [G, F] (one row per grid entry).

    Max ``main change * purity`` among settings with preservation >= ``min_preservation``; if none
    qualifies, max ``main change * purity * preservation`` over all (``constraint_met`` False). Ties:
    smaller ``|scale|``, then grid order.
    """
    if validation_changes.shape[0] != len(grid):
        raise ValueError(f"{validation_changes.shape[0]} rows of changes for {len(grid)} grid settings")
    metrics = direction_metrics(validation_changes)
    quality = metrics.main_change * metrics.purity
    allowed = metrics.preservation >= min_preservation - 1e-9
    constraint_met = bool(allowed.any())
    score = quality if constraint_met else quality * metrics.preservation
    candidates = [g for g in range(len(grid)) if allowed[g] or not constraint_met]
    # Round so float noise cannot beat the tie-break; scores are fractions of image counts.
    best = min(candidates, key=lambda g: (-round(float(score[g]), 9), abs(grid[g].scale), g))
    return Selection(
        index=best,
        config=grid[best],
        score=float(score[best]),
        main_change=float(metrics.main_change[best]),
        purity=float(metrics.purity[best]),
        preservation=float(metrics.preservation[best]),
        main_factor=int(metrics.main[best]),
        constraint_met=constraint_met,
    )


# ---------------------------------------------------------------------------- baselines
def random_directions(reference: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gaussian directions with the count and the per-row L2 norms of ``reference`` [K, W]."""
    generator = torch.Generator().manual_seed(
        int(hashlib.sha256(f"noiseclr-bench-random:{seed}".encode()).hexdigest()[:15], 16)
    )
    rows = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    norms = reference.to(torch.float64).norm(dim=1, keepdim=True)
    return (rows / rows.norm(dim=1, keepdim=True) * norms).float()


# ---------------------------------------------------------------------------- cross-domain
def part_changes(
    edited_labels: Sequence[Mapping[str, str]], recon_labels: Sequence[Mapping[str, str]], part: str
) -> tuple[list[str], torch.Tensor]:
    """Factor names of one scene object (its own domain's names) and bool [B, F] of which changed."""
    from .world.factors import scene_part_labels

    rows = []
    names: list[str] = []
    for edited, recon in zip(edited_labels, recon_labels):
        a, b = scene_part_labels(edited, part), scene_part_labels(recon, part)
        names = list(a)
        rows.append([a[name] != b[name] for name in names])
    return names, torch.tensor(rows, dtype=torch.bool).view(len(rows), len(names))


PartChanges = tuple[list[str], torch.Tensor]
"""One scene object's factor names (its own domain's) and bool [B, F]: which changed in each image."""


def _fraction(mask: torch.Tensor) -> float:
    return round(float(mask.to(torch.float64).mean()), 4) if mask.numel() else 0.0


def _others_changed(part: PartChanges, allowed: Sequence[str]) -> torch.Tensor:
    """bool [B]: some factor of this object changed, other than ``allowed`` and the shared background."""
    names, changed = part
    columns = [i for i, name in enumerate(names) if name not in ("background", *allowed)]
    if not columns:
        return torch.zeros(changed.shape[0], dtype=torch.bool)
    return changed[:, columns].any(dim=1)


def alone_interference(own: PartChanges, other: PartChanges, main_factor: str) -> dict[str, float]:
    """One direction alone on scenes: change of its main factor on its own object, and the fraction of
    images where any factor of the OTHER object changed (the shared background excluded)."""
    names, changed = own
    return {
        "own_change": _fraction(changed[:, names.index(main_factor)]),
        "interference": _fraction(_others_changed(other, ())),
    }


def pair_interference(
    face: PartChanges,
    cat: PartChanges,
    face_main: str,
    cat_main: str,
    face_vs_alone: PartChanges | None = None,
    cat_vs_alone: PartChanges | None = None,
) -> dict[str, float]:
    """A face and a cat direction applied together: each one's own change, both, and interference.

    Interference is what the OTHER direction did to an object: the images where the cat's factors
    differ from the cat direction's edit alone (same sign, same regions), or the face's from the face
    direction's alone (``*_vs_alone``; the shared background excluded). Off-target counts, against the
    reconstruction, every change of an object beyond its own direction's main factor -- its own
    direction's side effects included, so it is the pair's purity rather than a cross-object effect.
    Without ``*_vs_alone`` interference is the off-target count (the definition before 2026-12-07).
    """
    face_own = face[1][:, face[0].index(face_main)]
    cat_own = cat[1][:, cat[0].index(cat_main)]
    off_cat = _others_changed(cat, (cat_main,))
    off_face = _others_changed(face, (face_main,))
    on_cat = off_cat if cat_vs_alone is None else _others_changed(cat_vs_alone, ())
    on_face = off_face if face_vs_alone is None else _others_changed(face_vs_alone, ())
    return {
        "face_change": _fraction(face_own),
        "cat_change": _fraction(cat_own),
        "both_changed": _fraction(face_own & cat_own),
        "interference_on_cat": _fraction(on_cat),
        "interference_on_face": _fraction(on_face),
        "interference": _fraction(on_cat | on_face),
        "off_target_on_cat": _fraction(off_cat),
        "off_target_on_face": _fraction(off_face),
        "off_target": _fraction(off_cat | off_face),
    }
