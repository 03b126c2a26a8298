"""Ground-truth benchmark: what each direction changes, read from the images by the factor readers.

The procedural world (:mod:`noiseclr.world`) knows every factor of every render, and the shipped
factor readers (:mod:`noiseclr.world.readers`) read those factors back from any image. So what an
edit direction does can be *measured*: edit images, read their factors, count what changed.

Protocol (one domain, ``faces`` or ``cats``; all methods in one run, same model, same images, same
inversions, same edit grid):

* three disjoint sets of renders, from the evaluation seed range (never seen by the base model or
  the readers): ``discovery`` (about 100, unlabeled: only pixels reach the method), ``validation``
  (picks each direction's scale and window) and ``heldout`` (every reported number);
* each validation and held-out image is encoded and inverted ONCE (``inversion``, default DDPM)
  and regenerated for every direction and edit setting from that one inversion, in batched passes
  of at most ``trajectories_per_pass`` trajectories (:func:`noiseclr.editing.regenerate`);
* the unedited regeneration (the *reconstruction*) is read too, and every change is counted
  against it, so inversion error is never counted as an edit.

Metrics (pure functions below; ``K`` directions, ``F`` factors of the domain):

* ``change[k, f]``: fraction of held-out images whose read factor ``f`` differs between the edit by
  direction ``k`` and the reconstruction;
* main factor of ``k``: ``argmax_f change[k, f]``; strength: that change; purity: strength over
  ``sum_f change[k, f]`` (0 when nothing changed); preservation of ``k``: ``1 - mean`` change of
  the other ``F - 1`` factors;
* a factor is *discovered* when some direction has it as main factor with strength >= 0.5 and
  purity >= 0.6; coverage = discovered factors / F;
* *effective* directions have strength >= 0.25; mean purity and preservation are averaged over
  them (``preservation_all`` averages over every direction; a direction that does nothing
  preserves everything, which is why the headline number leaves those out).

Selection rule (validation images only; :func:`select_edit` receives nothing else): every
direction is tried at every scale in ``+-scales`` (both signs) and every window of ``windows``;
the pick maximises ``strength * purity`` among the settings whose preservation is at least
``min_preservation`` (if none qualifies: ``strength * purity * preservation`` over all, flagged
``constraint_met: false``); ties go to the smaller ``|scale|``, then to the earlier grid entry.
The picks are stored as ``edit_defaults`` in the annotated copy of each directions file.

Methods: ``noiseclr-all`` and ``noiseclr-single`` (discovery with each loss variant, run inside
the bench on the discovery renders unless a file is given), ``random`` (Gaussian directions, same
count and the same per-row norms as the NoiseCLR set), ``prompt`` (supervised reference: the
caption of each factor value, :func:`noiseclr.world.captions.caption_for_value`, applied as
``scale * (eps(c_prompt) - eps(c_0))`` through :class:`noiseclr.editing.PromptTerm`), and any
directions file (``file:<name>``; textual-inversion layouts too).

Cross-domain (``scenes``): the best directions of an annotated faces file and of an annotated cats
file (one per factor, strongest first; background directions are left out because scenes share
one background) are applied alone and in face+cat pairs TOGETHER on scene renders, read by the
scene reader and mapped to each object's factors with
:func:`noiseclr.world.factors.scene_part_labels`. Own change: the direction's main factor on its
own object; interference: fraction of images where some factor of the OTHER object changed
(apart from what the other direction of the pair is meant to change).

Inversion default: ``ddpm`` (edit-friendly). Its reconstruction is exact, so the baseline every
change is counted against is the held-out image itself (up to the VAE), and "preserved" means
preserved relative to the real image, not to a drifted DDIM reconstruction whose factors may
already differ from the input (an edit that happens to undo the drift would count as a change).
``ddim`` (the paper's) is a setting; ``baseline.recon_agreement`` in the results tells how far
each inversion's reconstruction drifts.

Output folder::

    OUT/settings.json                 the run's settings, model, seeds
    OUT/results.json                  everything: summaries, per-direction records, cross-domain
    OUT/report.html                   table, factor bars and image strips per direction
    OUT/<method>/result.json          one method (written when it finishes; --resume skips it)
    OUT/<method>/directions.safetensors  annotated copy: names + chosen edit_defaults
    OUT/<method>/strips/direction-NNN.png  input / reconstruction / edit over a few held-out images
    OUT/discovery/<method>/           the discovery runs (resumable like ``noiseclr discover``)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .directions import Directions
from .editing import DirectionTerm, EditTerm, PromptTerm, regenerate
from .errors import NoiseCLRError
from .fileio import atomic_write_json, ensure_output_dir
from .images import make_grid, save_image, tensor_to_pil
from .inversion import INVERSION_METHODS, Inversion, check_steps, invert
from .model import DiffusionModel

log = logging.getLogger("noiseclr")

EVAL_SEED_BASE = 900_000_000
"""Start of the evaluation seed range (``noiseclr.world.readers.EVAL_SEED_BASE``; a test checks they
agree): below the base model's training seeds, above the readers' training and validation seeds."""
SEED_OFFSETS: dict[str, int] = {
    "heldout": 0,
    "validation": 10_000_000,
    "discovery": 20_000_000,
    "demo-train": 30_000_000,
    "demo-test": 35_000_000,
    "scenes": 40_000_000,
}
"""Disjoint sub-ranges of the evaluation range, one per role."""
SEED_STRIDE = 1_000_000
"""``settings.seed`` moves every role's images by this many seeds (so repeats use fresh images)."""

BENCH_DOMAINS = ("faces", "cats")
METHODS = ("noiseclr-all", "noiseclr-single", "random", "prompt")
DISCOVERY_METHODS = {"noiseclr-all": "all-anchors", "noiseclr-single": "single-anchor"}
READER_SIZE = 128
"""Side of the images the readers read (the world's render size)."""

DISCOVERED_STRENGTH = 0.5
DISCOVERED_PURITY = 0.6
EFFECTIVE_STRENGTH = 0.25
ANNOTATIONS_KEY = "factor_annotations"
"""Key in ``Directions.settings`` of the annotated copies (bench and demo): what each direction moves."""

DEFINITIONS = {
    "change[k,f]": "fraction of held-out images whose read factor f differs between direction k's edit and the reconstruction",
    "main factor": "the factor with the largest change for that direction",
    "strength": "change of the main factor",
    "purity": "strength / sum of all the direction's changes (0 if nothing changed)",
    "preservation": "1 - mean change of the non-main factors, averaged over effective directions (strength >= 0.25)",
    "discovered": "a factor some direction has as main factor with strength >= 0.5 and purity >= 0.6",
    "coverage": "discovered factors / all factors of the domain",
    "mean purity": "mean purity over effective directions (strength >= 0.25)",
    "selection": "per direction, on validation images only: max strength*purity subject to preservation >= "
    "min_preservation, over scales (both signs) x windows; ties: smaller |scale|, then grid order",
    "interference": "fraction of scene images where some factor of the OTHER object changed vs. the reconstruction "
    "(beyond the main factor of the other direction of the pair)",
}

FLAGS = {
    "methods": "--methods",
    "num_directions": "--num-directions",
    "discovery_steps": "--discovery-steps",
    "discovery_images": "--discovery-images",
    "discovery_batch": "--discovery-batch",
    "discovery_negatives": "--discovery-negatives",
    "discovery_micro_batches": "--discovery-micro-batches",
    "heldout": "--heldout",
    "validation": "--validation",
    "steps": "--steps",
    "inversion": "--inversion",
    "scales": "--scales",
    "windows": "--windows",
    "min_preservation": "--min-preservation",
    "strip_images": "--strip-images",
    "trajectories_per_pass": "--trajectories-per-pass",
    "cross_images": "--cross-images",
    "cross_per_domain": "--cross-per-domain",
}


# ----------------------------------------------------------------------------------- settings
@dataclass
class BenchSettings:
    """Everything that shapes a benchmark run. Defaults: the project's reported configuration."""

    methods: tuple[str, ...] = METHODS
    """Which methods to run (files given separately are added)."""
    num_directions: int = 20
    """K for the discovered (and random) directions."""
    discovery_steps: int = 500
    discovery_images: int = 100
    """Unlabeled renders the discovery runs learn from."""
    discovery_batch: int = 6
    discovery_negatives: int | None = None
    """Other directions per micro-batch; None = min(9, K - 1) (CPU budget; the paper uses 20)."""
    discovery_micro_batches: int = 2
    discovery_lr: float = 1e-3
    heldout: int = 200
    validation: int = 40
    steps: int = 25
    """Inversion and denoising steps of every edit."""
    inversion: str = "ddpm"
    scales: tuple[float, ...] = (3.0, 6.0)
    """Scale magnitudes; each is tried with both signs."""
    windows: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.0, 0.5), (0.3, 1.0))
    """Active parts of the schedule tried per direction (0 = first, noisiest step)."""
    min_preservation: float = 0.8
    """Selection constraint on a setting's preservation (validation)."""
    strip_images: int = 4
    """Held-out images shown per direction in the report."""
    seed: int = 0
    """Shifts every role's seed range (fresh images) and seeds discovery, random directions and inversion."""
    trajectories_per_pass: int = 128
    """Edited images rendered together (memory; results do not depend on it)."""
    max_batch: int | None = None
    """Most UNet rows per call (memory; results do not depend on it)."""
    decode_batch: int = 16
    cross_images: int = 100
    """Scene renders of the cross-domain evaluation."""
    cross_per_domain: int = 4
    """Directions taken from each of the faces and cats files (their best, one per factor)."""

    @property
    def negatives(self) -> int:
        if self.discovery_negatives is not None:
            return int(self.discovery_negatives)
        return max(1, min(9, self.num_directions - 1))

    def grid(self) -> list[EditConfig]:
        return edit_grid(self.scales, self.windows)

    def validate(self) -> BenchSettings:
        for method in self.methods:
            if method not in METHODS:
                raise NoiseCLRError(
                    f"{FLAGS['methods']} {method}: unknown method; use a comma list of {', '.join(METHODS)} "
                    "(directions files go to --directions)."
                )
        positive = ("num_directions", "discovery_steps", "discovery_batch", "discovery_micro_batches",
                    "heldout", "validation", "steps", "trajectories_per_pass", "cross_images", "cross_per_domain")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NoiseCLRError(f"{FLAGS[name]} {value}: must be a whole number of at least 1.")
        if self.num_directions < 2 and any(m in DISCOVERY_METHODS for m in self.methods):
            raise NoiseCLRError(f"{FLAGS['num_directions']} {self.num_directions}: discovery needs at least 2 directions.")
        if self.discovery_batch < 2 and any(m in DISCOVERY_METHODS for m in self.methods):
            raise NoiseCLRError(f"{FLAGS['discovery_batch']} {self.discovery_batch}: the contrast needs at least 2 images.")
        if self.discovery_images < self.discovery_batch and any(m in DISCOVERY_METHODS for m in self.methods):
            raise NoiseCLRError(
                f"{FLAGS['discovery_images']} {self.discovery_images}: fewer than {FLAGS['discovery_batch']} "
                f"{self.discovery_batch}; render more images or lower the batch."
            )
        if self.inversion not in INVERSION_METHODS:
            raise NoiseCLRError(f"{FLAGS['inversion']} {self.inversion}: unknown; use one of {', '.join(INVERSION_METHODS)}.")
        if not self.scales or not all(math.isfinite(float(s)) and float(s) != 0.0 for s in self.scales):
            raise NoiseCLRError(f"{FLAGS['scales']}: give one or more nonzero finite scale magnitudes, e.g. --scales 3 6.")
        if not self.windows:
            raise NoiseCLRError(f"{FLAGS['windows']}: give at least one START:END window, e.g. --windows 0:1 0:0.5.")
        for start, end in self.windows:
            if not 0.0 <= float(start) < float(end) <= 1.0:
                raise NoiseCLRError(f"{FLAGS['windows']} {start}:{end}: need 0 <= START < END <= 1.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 5:
            raise NoiseCLRError(f"--seed {self.seed}: use 0..4 (each picks fresh image sets inside the evaluation seed range).")
        if not (self.discovery_lr > 0 and math.isfinite(self.discovery_lr)):
            raise NoiseCLRError(f"--discovery-lr {self.discovery_lr}: must be a positive number.")
        if not 0.0 <= self.min_preservation <= 1.0:
            raise NoiseCLRError(f"{FLAGS['min_preservation']} {self.min_preservation}: must be between 0 and 1.")
        if self.strip_images < 0:
            raise NoiseCLRError(f"{FLAGS['strip_images']} {self.strip_images}: must be 0 or more.")
        if self.discovery_negatives is not None and not 1 <= self.discovery_negatives < self.num_directions:
            raise NoiseCLRError(
                f"{FLAGS['discovery_negatives']} {self.discovery_negatives}: must be between 1 and "
                f"{FLAGS['num_directions']} - 1 = {self.num_directions - 1}."
            )
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["methods"] = list(self.methods)
        data["scales"] = [float(s) for s in self.scales]
        data["windows"] = [[float(a), float(b)] for a, b in self.windows]
        return data


# -------------------------------------------------------------------------------- edit grid
SIGNS = (1.0, -1.0)
"""A direction is an axis: every setting is applied at +scale and at -scale."""


@dataclass(frozen=True)
class EditConfig:
    """One edit setting: a scale magnitude (applied with both signs) and a window."""

    scale: float
    start: float = 0.0
    end: float = 1.0

    def to_json(self) -> dict[str, float]:
        return {"scale": float(self.scale), "start": float(self.start), "end": float(self.end)}

    def describe(self) -> str:
        return f"±{abs(self.scale):g} @{self.start:g}:{self.end:g}"


def edit_grid(scales: Sequence[float], windows: Sequence[tuple[float, float]]) -> list[EditConfig]:
    """Every scale magnitude (ascending; each later applied at + and -) times every window."""
    magnitudes = sorted({abs(float(s)) for s in scales if float(s) != 0.0})
    return [EditConfig(magnitude, float(start), float(end)) for magnitude in magnitudes for start, end in windows]


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
    strength: torch.Tensor
    purity: torch.Tensor
    preservation: torch.Tensor
    """[K] 1 - mean change of the non-main factors."""


def direction_metrics(changes: torch.Tensor) -> DirectionMetrics:
    """Main factor, strength, purity and preservation of each row of ``changes`` [K, F] (float)."""
    changes = changes.to(torch.float64)
    if changes.ndim != 2 or changes.shape[1] < 1:
        raise ValueError(f"changes must be [K, F], got {tuple(changes.shape)}")
    strength, main = changes.max(dim=1)
    total = changes.sum(dim=1)
    purity = torch.where(total > 0, strength / total.clamp_min(1e-300), torch.zeros_like(total))
    others = changes.shape[1] - 1
    off = (total - strength) / others if others else torch.zeros_like(total)
    return DirectionMetrics(main=main, strength=strength, purity=purity, preservation=1.0 - off)


def discovered_factors(
    changes: torch.Tensor, min_strength: float = DISCOVERED_STRENGTH, min_purity: float = DISCOVERED_PURITY
) -> dict[int, int]:
    """Factor index -> the direction that discovers it (best strength * purity among qualifying ones)."""
    metrics = direction_metrics(changes)
    found: dict[int, int] = {}
    score = metrics.strength * metrics.purity
    for k in range(changes.shape[0]):
        if metrics.strength[k] >= min_strength - 1e-9 and metrics.purity[k] >= min_purity - 1e-9:
            factor = int(metrics.main[k])
            if factor not in found or score[k] > score[found[factor]]:
                found[factor] = k
    return dict(sorted(found.items()))


def coverage(changes: torch.Tensor, **thresholds: float) -> float:
    """Discovered factors / all factors."""
    return len(discovered_factors(changes, **thresholds)) / changes.shape[1]


def summarize_changes(
    changes: torch.Tensor, factor_names: Sequence[str], effective_strength: float = EFFECTIVE_STRENGTH
) -> dict[str, Any]:
    """The headline numbers of one method from its held-out change table [K, F]."""
    metrics = direction_metrics(changes)
    found = discovered_factors(changes)
    effective = metrics.strength >= effective_strength - 1e-9

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
        "mean_strength": mean(metrics.strength),
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


# ------------------------------------------------------------------------------- selection
@dataclass
class Selection:
    """The validation pick of one direction."""

    index: int
    """Position in the grid."""
    config: EditConfig
    score: float
    strength: float
    purity: float
    preservation: float
    main_factor: int
    constraint_met: bool

    def to_json(self, factor_names: Sequence[str] | None = None) -> dict[str, Any]:
        data = {
            **self.config.to_json(),
            "score": round(self.score, 6),
            "strength": round(self.strength, 6),
            "purity": round(self.purity, 6),
            "preservation": round(self.preservation, 6),
            "constraint_met": self.constraint_met,
        }
        data["main_factor"] = factor_names[self.main_factor] if factor_names else self.main_factor
        return data


def select_edit(validation_changes: torch.Tensor, grid: Sequence[EditConfig], min_preservation: float) -> Selection:
    """Pick one direction's edit setting from its VALIDATION change table [G, F] (one row per grid entry).

    Max ``strength * purity`` among settings with preservation >= ``min_preservation``; if none
    qualifies, max ``strength * purity * preservation`` over all (``constraint_met`` False). Ties:
    smaller ``|scale|``, then grid order.
    """
    if validation_changes.shape[0] != len(grid):
        raise ValueError(f"{validation_changes.shape[0]} rows of changes for {len(grid)} grid settings")
    metrics = direction_metrics(validation_changes)
    quality = metrics.strength * metrics.purity
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
        strength=float(metrics.strength[best]),
        purity=float(metrics.purity[best]),
        preservation=float(metrics.preservation[best]),
        main_factor=int(metrics.main[best]),
        constraint_met=constraint_met,
    )


def select_configs(validation_changes: torch.Tensor, grid: Sequence[EditConfig], min_preservation: float) -> list[Selection]:
    """:func:`select_edit` for every direction of a VALIDATION change table [K, G, F]."""
    return [select_edit(validation_changes[k], grid, min_preservation) for k in range(validation_changes.shape[0])]


# ---------------------------------------------------------------------------- directions
def random_directions(reference: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gaussian directions with the count and the per-row L2 norms of ``reference`` [K, W]."""
    generator = torch.Generator().manual_seed(int(hashlib.sha256(f"noiseclr-bench-random:{seed}".encode()).hexdigest()[:15], 16))
    rows = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    norms = reference.to(torch.float64).norm(dim=1, keepdim=True)
    return (rows / rows.norm(dim=1, keepdim=True) * norms).float()


def prompt_captions(domain: str) -> list[tuple[str, str, str]]:
    """``(factor, value, caption)`` for every value of every factor of ``domain``."""
    from .world.captions import caption_for_value
    from .world.factors import domain_factors

    return [
        (factor.name, value, caption_for_value(domain, factor.name, value))
        for factor in domain_factors(domain)
        for value in factor.values
    ]


@dataclass
class MethodDirections:
    """The directions a method contributes: token directions (a :class:`Directions`) or prompts."""

    name: str
    source: str
    directions: Directions | None = None
    prompts: list[tuple[str, str, str]] | None = None
    """(factor, value, caption) per prompt direction."""

    @property
    def count(self) -> int:
        return self.directions.count if self.directions is not None else len(self.prompts or [])

    def term(self, index: int, config: EditConfig, sign: float = 1.0) -> EditTerm:
        scale = sign * abs(config.scale)
        if self.directions is not None:
            return DirectionTerm(self.directions, index, scale, config.start, config.end)
        assert self.prompts is not None
        return PromptTerm(self.prompts[index][2], scale, config.start, config.end)

    def label(self, index: int) -> str:
        if self.directions is not None:
            return f"direction {index}"
        assert self.prompts is not None
        factor, value, caption = self.prompts[index]
        return f"prompt {factor}={value}"


# --------------------------------------------------------------------------------- images
def seeds_for(role: str, count: int, seed: int = 0) -> list[int]:
    """Render seeds of one role (``heldout``, ``validation``, ``discovery``, ...)."""
    start = EVAL_SEED_BASE + SEED_OFFSETS[role] + SEED_STRIDE * int(seed)
    if count < 0 or count >= SEED_STRIDE or not 0 <= seed < 5:
        raise NoiseCLRError(f"--seed {seed} / count {count}: out of the benchmark's seed range (seed 0..4, count < 1e6).")
    return list(range(start, start + count))


def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 3, size, size] (antialiased bilinear); unchanged when already that size."""
    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    import torch.nn.functional as F

    return F.interpolate(pixels.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)


def render_pixels(domain: str, seeds: Sequence[int], resolution: int) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """World renders as model pixels [N, 3, R, R] in [-1, 1] and their true labels."""
    from .world.render import render_many

    array, labels = render_many(domain, list(seeds))
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return resize_pixels(pixels, resolution), labels


def load_reader(domain: str, reader_dir: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
    """The shipped factor reader of ``domain`` (or ``reader_dir/<domain>.safetensors``)."""
    try:
        from .world.readers import FactorReader
    except ImportError:
        raise NoiseCLRError(
            "factor readers: noiseclr.world.readers is missing from this install; reinstall noiseclr."
        ) from None
    path = None
    if reader_dir is not None:
        path = Path(reader_dir) / f"{domain}.safetensors"
        if not path.is_file():
            raise NoiseCLRError(f"--readers {reader_dir}: no {domain}.safetensors there; pass the folder of reader weights.")
    return FactorReader.load(domain, path, device=device)


def reader_factor_names(reader: Any, domain: str) -> list[str]:
    from .world.factors import factor_names

    names = [getattr(f, "name", f) for f in reader.factors]
    if names != factor_names(domain):
        raise NoiseCLRError(f"reader for {domain}: reads {names}, not the registry's factors; use the matching reader.")
    return names


def read_factors(reader: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Reader's value index per factor: LongTensor [N, F] for pixels [N, 3, S, S] in [-1, 1]."""
    return reader.predict_indices(resize_pixels(pixels.detach().float().cpu(), READER_SIZE)).long().cpu()


@dataclass
class Split:
    """One set of renders, inverted once, with the reads of its inputs and reconstructions."""

    role: str
    domain: str
    seeds: list[int]
    labels: list[dict[str, str]]
    """Ground truth; only the reader-accuracy diagnostic reads it, never a method."""
    pixels: torch.Tensor
    inversion: Inversion
    input_indices: torch.Tensor
    recon_indices: torch.Tensor
    recon_kept: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return len(self.seeds)


def render_and_read(
    model: DiffusionModel,
    inversion: Inversion,
    reader: Any,
    edits: Sequence[Sequence[EditTerm]],
    settings: BenchSettings,
    *,
    keep_images: int = 0,
    desc: str = "editing",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Regenerate every edit of every inverted image, decode and read: indices [E, B, F] and the first
    ``keep_images`` images of every edit (pixels [E, keep, 3, S, S], or None)."""
    from tqdm.auto import tqdm

    edits = [list(terms) for terms in edits]
    count, batch = len(edits), inversion.batch
    keep = min(keep_images, batch)
    per_pass = settings.trajectories_per_pass
    image_chunk = min(batch, per_pass)
    read: torch.Tensor | None = None
    kept = None
    bar = tqdm(total=count * batch, desc=desc, unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for first_image in range(0, batch, image_chunk):
            images = list(range(first_image, min(batch, first_image + image_chunk)))
            edits_per_pass = max(1, per_pass // len(images))
            for first_edit in range(0, count, edits_per_pass):
                chunk = edits[first_edit : first_edit + edits_per_pass]
                latents = regenerate(model, inversion, chunk, image_indices=images, max_batch=settings.max_batch, progress=False)
                flat = latents.reshape(-1, *latents.shape[2:])
                pixels = model.decode_latents(flat, batch_size=settings.decode_batch).cpu()
                indices = read_factors(reader, pixels).view(len(chunk), len(images), -1)
                if read is None:
                    read = torch.empty(count, batch, indices.shape[-1], dtype=torch.long)
                    if keep:
                        kept = torch.empty(count, keep, *pixels.shape[1:])
                read[first_edit : first_edit + len(chunk), images[0] : images[-1] + 1] = indices
                if kept is not None and images[0] < keep:
                    upto = min(keep, images[-1] + 1) - images[0]
                    shaped = pixels.view(len(chunk), len(images), *pixels.shape[1:])
                    kept[first_edit : first_edit + len(chunk), images[0] : images[0] + upto] = shaped[:, :upto]
                bar.update(len(chunk) * len(images))
    finally:
        bar.close()
    assert read is not None
    return read, kept


def prepare_split(
    model: DiffusionModel,
    reader: Any,
    domain: str,
    role: str,
    count: int,
    settings: BenchSettings,
    *,
    keep_images: int = 0,
    progress: bool = True,
) -> Split:
    """Render ``count`` images of ``role``, invert them once and read inputs and reconstructions."""
    seeds = seeds_for(role, count, settings.seed)
    pixels, labels = render_pixels(domain, seeds, model.resolution)
    latents = model.encode_images(pixels, batch_size=settings.decode_batch)
    generator = torch.Generator().manual_seed(settings.seed * 1000 + sorted(SEED_OFFSETS).index(role))
    inversion = invert(
        model, latents, settings.inversion, settings.steps, generator=generator, max_batch=settings.max_batch, progress=progress
    )
    recon, kept = render_and_read(
        model, inversion, reader, [[]], settings, keep_images=keep_images, desc=f"{role}: reconstruction", progress=progress
    )
    return Split(
        role=role,
        domain=domain,
        seeds=seeds,
        labels=labels,
        pixels=pixels,
        inversion=inversion,
        input_indices=read_factors(reader, pixels),
        recon_indices=recon[0],
        recon_kept=None if kept is None else kept[0],
    )


def split_diagnostics(split: Split, factor_names: Sequence[str]) -> dict[str, Any]:
    """How well the reader reads the inputs (vs. the true labels) and how much the reconstruction drifts."""
    from .world.factors import encode_labels

    truth = torch.tensor([encode_labels(split.domain, labels) for labels in split.labels], dtype=torch.long)
    accuracy = (split.input_indices == truth).to(torch.float64).mean(dim=0)
    agreement = (split.recon_indices == split.input_indices).to(torch.float64).mean(dim=0)
    return {
        "images": split.count,
        "seeds": [split.seeds[0], split.seeds[-1]] if split.seeds else [],
        "reader_accuracy_input": {n: round(float(v), 4) for n, v in zip(factor_names, accuracy)},
        "recon_agreement": {n: round(float(v), 4) for n, v in zip(factor_names, agreement)},
    }


# ---------------------------------------------------------------------------- one method
def _fingerprint(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def method_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "method"


def direction_name(factor: str, plus: str | None, minus: str | None, strength: float) -> str:
    """Human name of what a direction does, e.g. ``glasses (+yes -no)``, ``mouth +smile`` or
    ``hair_color (mixed)``; ``plus``/``minus`` are the values the factor mostly moves to under
    each sign (None where that sign has no clear target)."""
    if strength <= 0.0:
        return "no visible effect"
    targets = " ".join(f"{sign}{value}" for sign, value in (("+", plus), ("-", minus)) if value is not None)
    if not targets:
        return f"{factor} (mixed)"
    return f"{factor} ({targets})" if plus is not None and minus is not None else f"{factor} {targets}"


def _target(edited: torch.Tensor, changed: torch.Tensor, factor: int, values: Sequence[str]) -> tuple[str | None, float, float]:
    """The value ``factor`` mostly moves to under one sign (None unless >= 60% of its changes), its
    share of those changes, and the fraction of images it changed."""
    value, share = dominant_value(edited, changed, factor)
    fraction = float(changed[:, factor].to(torch.float64).mean())
    return (values[value] if value is not None and share >= 0.6 else None), share, fraction


def direction_records(
    changes: torch.Tensor,
    edited: torch.Tensor,
    changed: torch.Tensor,
    factor_names: Sequence[str],
    factor_values: Sequence[Sequence[str]],
) -> list[dict[str, Any]]:
    """One record per direction: main factor, the values it moves to under + and -, strength,
    purity, preservation. ``changes`` [K, F] is the axis change table; ``edited`` and ``changed``
    are per sign, [K, 2, B, F] (sign order :data:`SIGNS`)."""
    metrics = direction_metrics(changes)
    found = discovered_factors(changes)
    winners = set(found.values())
    records = []
    for k in range(changes.shape[0]):
        main = int(metrics.main[k])
        plus, plus_share, plus_change = _target(edited[k, 0], changed[k, 0], main, factor_values[main])
        minus, minus_share, minus_change = _target(edited[k, 1], changed[k, 1], main, factor_values[main])
        strength = float(metrics.strength[k])
        records.append(
            {
                "index": k,
                "name": direction_name(factor_names[main], plus, minus, strength),
                "main_factor": factor_names[main],
                "target_value": plus,
                "minus_value": minus,
                "plus_change": round(plus_change, 4),
                "minus_change": round(minus_change, 4),
                "target_share": round(plus_share, 4),
                "strength": round(strength, 4),
                "purity": round(float(metrics.purity[k]), 4),
                "preservation": round(float(metrics.preservation[k]), 4),
                "effective": strength >= EFFECTIVE_STRENGTH - 1e-9,
                "discovers": k in winners,
                "changes": {name: round(float(c), 4) for name, c in zip(factor_names, changes[k])},
            }
        )
    return records


def annotate_directions(
    model: DiffusionModel,
    directions: Directions,
    records: Sequence[Mapping[str, Any]],
    *,
    domain: str,
    source: str,
    extra: Mapping[str, Any] | None = None,
) -> Directions:
    """A copy of ``directions`` named after what each moves, with the chosen ``edit_defaults`` and the
    per-direction measurements under ``settings['factor_annotations']``."""
    keep = ("index", "name", "main_factor", "target_value", "minus_value", "strength", "purity", "preservation", "scale", "start", "end")
    annotations = {
        "domain": domain,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **dict(extra or {}),
        "records": [{key: record.get(key) for key in keep} for record in records],
    }
    return replace(
        directions,
        model_id=directions.model_id or model.name,
        fingerprint=directions.fingerprint or model.fingerprint(),
        max_length=directions.max_length or model.max_length,
        names=[str(record["name"]) for record in records],
        domain=directions.domain or domain,
        edit_defaults=[{"scale": float(r["scale"]), "start": float(r["start"]), "end": float(r["end"])} for r in records],
        settings={**directions.settings, ANNOTATIONS_KEY: annotations},
        path=None,
    )


def strip_image(inputs: torch.Tensor, recon: torch.Tensor, edited: Sequence[torch.Tensor], title: str, *, labels: Sequence[str] = ("-scale", "+scale")):
    """Rows input / recon / each edit, one column per image."""
    rows = [[tensor_to_pil(t[i]) for i in range(t.shape[0])] for t in (inputs, recon, *edited)]
    return make_grid(rows, row_labels=["input", "recon", *labels], title=title)


def evaluate_method(
    model: DiffusionModel,
    reader: Any,
    method: MethodDirections,
    validation: Split,
    heldout: Split,
    settings: BenchSettings,
    out: Path,
    *,
    factor_names: Sequence[str],
    fingerprint: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Select each direction's edit on ``validation``, measure it on ``heldout``, write OUT/<method>/."""
    from .world.factors import domain_factors

    started = time.monotonic()
    grid = settings.grid()
    count = method.count
    folder = ensure_output_dir(out / method_dirname(method.name))
    log.info("%s: %d directions x %d edit settings on %d validation images", method.name, count, len(grid), validation.count)

    # 1. the grid, at both signs, on validation images only
    edits = [[method.term(k, config, sign)] for k in range(count) for config in grid for sign in SIGNS]
    edited, _ = render_and_read(
        model, validation.inversion, reader, edits, settings, desc=f"{method.name}: validation grid", progress=progress
    )
    by_sign = changed_mask(edited, validation.recon_indices).view(count, len(grid), len(SIGNS), *edited.shape[1:])
    validation_changes = change_fractions(axis_changed(by_sign))
    selections = select_configs(validation_changes, grid, settings.min_preservation)

    # 2. the picks, at both signs, on held-out images
    edits = [[method.term(k, selection.config, sign)] for k, selection in enumerate(selections) for sign in SIGNS]
    edited, kept = render_and_read(
        model,
        heldout.inversion,
        reader,
        edits,
        settings,
        keep_images=settings.strip_images,
        desc=f"{method.name}: held-out",
        progress=progress,
    )
    edited = edited.view(count, len(SIGNS), *edited.shape[1:])
    changed = changed_mask(edited, heldout.recon_indices)
    changes = change_fractions(axis_changed(changed))
    values = [factor.values for factor in domain_factors(heldout.domain)]
    records = direction_records(changes, edited, changed, factor_names, values)
    for k, (record, selection) in enumerate(zip(records, selections)):
        record.update(selection.config.to_json())
        record["label"] = method.label(k)
        record["validation"] = selection.to_json(factor_names)
        if method.prompts is not None:
            factor, value, caption = method.prompts[k]
            record.update(prompt=caption, intended_factor=factor, intended_value=value, hit=record["main_factor"] == factor)
        if kept is not None and heldout.recon_kept is not None:
            keep = kept.shape[1]
            title = f"{k}: {record['name']} ({selection.config.describe()})"
            magnitude = abs(selection.config.scale)
            grid_image = strip_image(
                heldout.pixels[:keep], heldout.recon_kept[:keep], [kept[2 * k + 1], kept[2 * k]], title,
                labels=(f"-{magnitude:g}", f"+{magnitude:g}"),
            )
            path = save_image(grid_image, folder / "strips" / f"direction-{k:03d}.png")
            record["strip"] = str(path.relative_to(out))
    summary = summarize_changes(changes, factor_names)
    if method.prompts is not None:
        summary["intended_hit_rate"] = sum(bool(r["hit"]) for r in records) / max(1, len(records))
    directions_file = None
    if method.directions is not None:
        annotated = annotate_directions(
            model, method.directions, records, domain=heldout.domain, source=f"noiseclr bench ({method.name})",
            extra={"reader": "bench", "heldout_images": heldout.count, "steps": settings.steps, "inversion": settings.inversion},
        )  # fmt: skip
        directions_file = str(annotated.save(folder / "directions.safetensors").relative_to(out))
    result = {
        "method": method.name,
        "source": method.source,
        "fingerprint": fingerprint,
        "summary": summary,
        "directions_file": directions_file,
        "grid": [config.to_json() for config in grid],
        "validation_seeds": [validation.seeds[0], validation.seeds[-1]],
        "heldout_seeds": [heldout.seeds[0], heldout.seeds[-1]],
        "validation_changes": [[[round(float(v), 4) for v in row] for row in table] for table in validation_changes],
        "directions": records,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_json(folder / "result.json", result)
    return result


# ---------------------------------------------------------------------------- cross-domain
def annotations_of(directions: Directions, flag: str, domain: str) -> list[dict[str, Any]]:
    """Per-direction records stored by the bench or the demo; a one-line error if absent."""
    where = directions.path or "directions"
    annotations = directions.settings.get(ANNOTATIONS_KEY) if isinstance(directions.settings, dict) else None
    if not isinstance(annotations, dict) or not isinstance(annotations.get("records"), list):
        raise NoiseCLRError(
            f"{flag} {where}: has no factor annotations; run noiseclr bench --domain {domain} on it first and pass "
            "the annotated copy it writes (OUT/<method>/directions.safetensors)."
        )
    if annotations.get("domain") != domain:
        raise NoiseCLRError(f"{flag} {where}: annotated for domain {annotations.get('domain')!r}, not {domain}; pass the {domain} file.")
    records = annotations["records"]
    if len(records) != directions.count:
        raise NoiseCLRError(f"{flag} {where}: {len(records)} annotations for {directions.count} directions; the file is damaged.")
    return records


def pick_cross_directions(records: Sequence[Mapping[str, Any]], limit: int) -> list[int]:
    """Best direction per factor (by strength * purity; background left out), strongest first, at most ``limit``."""
    best: dict[str, Mapping[str, Any]] = {}
    for record in records:
        factor = record.get("main_factor")
        if factor in (None, "background") or not record.get("strength"):
            continue
        score = float(record["strength"]) * float(record["purity"])
        if factor not in best or score > float(best[factor]["strength"]) * float(best[factor]["purity"]):
            best[factor] = record
    ranked = sorted(best.values(), key=lambda r: (-float(r["strength"]) * float(r["purity"]), int(r["index"])))
    effective = [r for r in ranked if float(r["strength"]) >= EFFECTIVE_STRENGTH]
    chosen = effective or ranked
    return [int(r["index"]) for r in chosen[:limit]]


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


def pair_interference(face: PartChanges, cat: PartChanges, face_main: str, cat_main: str) -> dict[str, float]:
    """A face and a cat direction applied together: each one's own change, both, and interference --
    images where an object changed in a factor other than its own direction's main factor."""
    face_own = face[1][:, face[0].index(face_main)]
    cat_own = cat[1][:, cat[0].index(cat_main)]
    on_cat = _others_changed(cat, (cat_main,))
    on_face = _others_changed(face, (face_main,))
    return {
        "face_change": _fraction(face_own),
        "cat_change": _fraction(cat_own),
        "both_changed": _fraction(face_own & cat_own),
        "interference_on_cat": _fraction(on_cat),
        "interference_on_face": _fraction(on_face),
        "interference": _fraction(on_cat | on_face),
    }


def _decode_labels(domain: str, indices: torch.Tensor) -> list[dict[str, str]]:
    from .world.factors import decode_labels

    return [decode_labels(domain, row) for row in indices.tolist()]


def run_cross_domain(
    model: DiffusionModel,
    faces_file: str | Path | Directions,
    cats_file: str | Path | Directions,
    out: Path,
    settings: BenchSettings,
    reader: Any,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Face and cat directions alone and together on scene renders; writes OUT/cross-domain/."""
    started = time.monotonic()
    folder = ensure_output_dir(out / "cross-domain")
    loaded = {}
    for part, domain, given in (("face", "faces", faces_file), ("cat", "cats", cats_file)):
        directions = given if isinstance(given, Directions) else Directions.load(given)
        try:
            directions.check_compatible(model)
        except NoiseCLRError as exc:
            raise NoiseCLRError(f"--cross-domain: {exc}") from None
        records = annotations_of(directions, "--cross-domain", domain)
        picked = pick_cross_directions(records, settings.cross_per_domain)
        if not picked:
            raise NoiseCLRError(
                f"--cross-domain {directions.path or domain}: no direction moves a {part} factor other than the background; "
                "pass a better directions file."
            )
        loaded[part] = (directions, records, picked)
    reader_names = reader_factor_names(reader, "scenes")
    scenes = prepare_split(model, reader, "scenes", "scenes", settings.cross_images, settings,
                           keep_images=settings.strip_images, progress=progress)  # fmt: skip
    recon_labels = _decode_labels("scenes", scenes.recon_indices)

    def term(part: str, index: int, sign: float) -> DirectionTerm:
        directions, records, _ = loaded[part]
        record = records[index]
        defaults = (directions.edit_defaults or [None] * directions.count)[index] or record
        scale = sign * abs(float(defaults["scale"]))
        return DirectionTerm(directions, index, scale, float(defaults.get("start", 0.0)), float(defaults.get("end", 1.0)))

    faces, cats = loaded["face"][2], loaded["cat"][2]
    pairs = [(faces[i % len(faces)], cats[i % len(cats)]) for i in range(max(len(faces), len(cats)))]
    alone = [("face", k) for k in faces] + [("cat", k) for k in cats]
    # Every edit at both signs (pairs share the sign), as in the per-domain benchmark.
    edits = [[term(part, k, sign)] for part, k in alone for sign in SIGNS]
    edits += [[term("face", f, sign), term("cat", c, sign)] for f, c in pairs for sign in SIGNS]
    edited, kept = render_and_read(model, scenes.inversion, reader, edits, settings, keep_images=settings.strip_images,
                                   desc="cross-domain", progress=progress)  # fmt: skip

    def per_part(e: int) -> dict[str, tuple[list[str], torch.Tensor]]:
        """Changes of edit ``e`` under either sign, per scene object."""
        result = {}
        for part in ("face", "cat"):
            signed = [part_changes(_decode_labels("scenes", edited[len(SIGNS) * e + s]), recon_labels, part) for s in range(len(SIGNS))]
            result[part] = (signed[0][0], torch.stack([changed for _, changed in signed]).any(dim=0))
        return result

    def main_of(part: str, k: int) -> str:
        return str(loaded[part][1][k]["main_factor"])

    alone_rows = []
    for e, (part, k) in enumerate(alone):
        other = "cat" if part == "face" else "face"
        changes = per_part(e)
        numbers = alone_interference(changes[part], changes[other], main_of(part, k))
        alone_rows.append({"part": part, "index": k, "name": loaded[part][1][k].get("name"),
                           "main_factor": main_of(part, k), **numbers})  # fmt: skip
    pair_rows = []
    for p, (f, c) in enumerate(pairs):
        e = len(alone) + p
        changes = per_part(e)
        row = {
            "face": {"index": f, "name": loaded["face"][1][f].get("name"), "main_factor": main_of("face", f)},
            "cat": {"index": c, "name": loaded["cat"][1][c].get("name"), "main_factor": main_of("cat", c)},
            **pair_interference(changes["face"], changes["cat"], main_of("face", f), main_of("cat", c)),
        }
        if kept is not None and scenes.recon_kept is not None:
            keep = kept.shape[1]
            title = f"face {f}: {row['face']['name']}  +  cat {c}: {row['cat']['name']}"
            image = strip_image(scenes.pixels[:keep], scenes.recon_kept[:keep], [kept[2 * e + 1], kept[2 * e]], title,
                                labels=("both -", "both +"))
            row["strip"] = str(save_image(image, folder / f"pair-{p:02d}.png").relative_to(out))
        pair_rows.append(row)

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(float(r[key]) for r in rows) / len(rows), 4) if rows else None

    result = {
        "faces_file": str(loaded["face"][0].path or ""),
        "cats_file": str(loaded["cat"][0].path or ""),
        "images": scenes.count,
        "seeds": [scenes.seeds[0], scenes.seeds[-1]],
        "reader_factors": reader_names,
        "baseline": split_diagnostics(scenes, reader_names),
        "summary": {
            "pairs": len(pair_rows),
            "mean_face_change": mean(pair_rows, "face_change"),
            "mean_cat_change": mean(pair_rows, "cat_change"),
            "mean_both_changed": mean(pair_rows, "both_changed"),
            "interference": mean(pair_rows, "interference"),
            "interference_alone": mean(alone_rows, "interference"),
        },
        "alone": alone_rows,
        "pairs": pair_rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_json(folder / "result.json", result)
    return result


# ------------------------------------------------------------------------------------ runner
@dataclass
class BenchResult:
    out: Path
    results_path: Path
    report_path: Path
    results: dict[str, Any]
    table: str
    seconds: float = 0.0


def parse_directions_args(values: Sequence[str]) -> dict[str, Path]:
    """``--directions`` values -> method name -> file. ``NAME=FILE`` names the method (e.g.
    ``noiseclr-all=run/directions.safetensors`` replaces that discovery); a bare FILE is ``file:<stem>``."""
    found: dict[str, Path] = {}
    for value in values:
        text = str(value)
        match = re.match(r"^([A-Za-z][A-Za-z0-9_.:-]*)=(.+)$", text)
        if match and not Path(text).exists():
            name, path = match.group(1), Path(match.group(2))
            if name in ("random", "prompt"):
                raise NoiseCLRError(f"--directions {text}: {name} is a built-in baseline; name the file differently.")
        else:
            path = Path(text)
            name = f"file:{path.stem}"
            if name in found:
                name = f"{name}-{len(found)}"
        if not path.is_file():
            raise NoiseCLRError(f"--directions {text}: no such directions file; check the path.")
        found[name] = path
    return found


def check_bench_inputs(
    domain: str, settings: BenchSettings, files: Mapping[str, Path], cross_domain: Sequence[Any] | None
) -> None:
    """Every check that needs no model: one-line errors before anything is loaded."""
    settings.validate()
    if domain not in (*BENCH_DOMAINS, "scenes"):
        raise NoiseCLRError(f"--domain {domain}: unknown; use faces or cats (or scenes with --cross-domain).")
    if domain == "scenes" and cross_domain is None:
        raise NoiseCLRError("--domain scenes: the scene benchmark is the cross-domain one; pass --cross-domain FACES_FILE CATS_FILE.")
    if domain != "scenes" and not settings.methods and not files and cross_domain is None:
        raise NoiseCLRError("--methods: nothing to run; name at least one method or pass --directions FILE.")
    for path in files.values():
        if not Path(path).is_file():
            raise NoiseCLRError(f"--directions {path}: no such directions file; check the path.")
    for path in cross_domain or ():
        if not isinstance(path, Directions) and not Path(path).is_file():
            raise NoiseCLRError(f"--cross-domain {path}: no such directions file; check the path.")


def _discovered(
    model: DiffusionModel,
    method: str,
    pixels: torch.Tensor,
    out: Path,
    settings: BenchSettings,
    domain: str,
    *,
    resume: bool,
    progress: bool,
) -> Directions:
    from .discovery import DiscoverySettings, discover

    run = out / "discovery" / method
    summary = run / "summary.json"
    if resume and summary.is_file() and (run / "directions.safetensors").is_file():
        done = json.loads(summary.read_text())
        if int(done.get("steps", -1)) == settings.discovery_steps and int(done.get("num_directions", -1)) == settings.num_directions:
            log.info("%s: reusing finished discovery %s", method, run)
            return Directions.load(run / "directions.safetensors")
    discovery = DiscoverySettings(
        num_directions=settings.num_directions,
        batch_size=settings.discovery_batch,
        num_negatives=settings.negatives,
        micro_batches=settings.discovery_micro_batches,
        steps=settings.discovery_steps,
        lr=settings.discovery_lr,
        loss_variant=DISCOVERY_METHODS[method],
        seed=settings.seed,
        domain=domain,
        checkpoint_every=max(25, settings.discovery_steps // 5),
    )
    log.info("%s: discovering %d directions (%s loss, %d steps) on %d unlabeled renders",
             method, settings.num_directions, DISCOVERY_METHODS[method], settings.discovery_steps, pixels.shape[0])  # fmt: skip
    return discover(model, pixels, run, discovery, resume=resume, progress=progress).directions


def _method_order(methods: Sequence[str], files: Mapping[str, Path]) -> list[str]:
    order = [m for m in ("noiseclr-all", "noiseclr-single") if m in methods or m in files]
    order += [name for name in files if name not in order]
    order += [m for m in ("random", "prompt") if m in methods]
    return order


def run_bench(
    model: DiffusionModel,
    domain: str,
    out: str | Path,
    settings: BenchSettings | None = None,
    *,
    directions_files: Mapping[str, str | Path] | None = None,
    cross_domain: tuple[str | Path | Directions, str | Path | Directions] | None = None,
    readers: Mapping[str, Any] | None = None,
    reader_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_method: Callable[[str, dict[str, Any]], None] | None = None,
) -> BenchResult:
    """Run the benchmark of ``domain`` (``faces``/``cats``; ``scenes`` = only the cross-domain part).

    ``directions_files``: method name -> directions file (a ``noiseclr-all``/``noiseclr-single`` entry
    replaces that discovery). ``readers``: domain -> reader object (default: the shipped readers,
    or ``reader_dir/<domain>.safetensors``). ``resume``: reuse finished methods and discovery runs
    in ``out``. ``on_method(name, result)`` is called as each method finishes.
    """
    from .bench_report import format_table, write_report

    started = time.monotonic()
    settings = settings or BenchSettings()
    files = {name: Path(path) for name, path in (directions_files or {}).items()}
    check_bench_inputs(domain, settings, files, cross_domain)
    check_steps(model, settings.steps)
    out = Path(out)
    if (out / "settings.json").is_file() and not resume:
        raise NoiseCLRError(f"--out {out}: already holds a benchmark; pass --resume to reuse its finished parts or pick another folder.")
    ensure_output_dir(out)

    # Load every directions file first: a bad file fails before any compute.
    given: dict[str, Directions] = {}
    for name, path in files.items():
        directions = Directions.load(path)
        directions.check_compatible(model)
        given[name] = directions
    methods = _method_order(settings.methods, files) if domain != "scenes" else []

    reader_cache = dict(readers or {})

    def reader_for(name: str) -> Any:
        if name not in reader_cache:
            reader_cache[name] = load_reader(name, reader_dir, device="cuda" if model.device.type == "cuda" else "cpu")
        return reader_cache[name]

    results: dict[str, Any] = {
        "benchmark": "noiseclr.bench",
        "domain": domain,
        "model": model.describe(),
        "settings": settings.to_json(),
        "methods_run": methods,
        "definitions": DEFINITIONS,
        "thresholds": {"discovered_strength": DISCOVERED_STRENGTH, "discovered_purity": DISCOVERED_PURITY,
                       "effective_strength": EFFECTIVE_STRENGTH},  # fmt: skip
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "methods": {},
        "cross_domain": None,
    }
    atomic_write_json(out / "settings.json", {k: results[k] for k in ("domain", "model", "settings", "methods_run", "started")}
                      | {"directions_files": {n: str(p) for n, p in files.items()}})  # fmt: skip
    results_path = out / "results.json"
    report_path = out / "report.html"

    def save_progress() -> None:
        atomic_write_json(results_path, results)
        write_report(report_path, results)

    if methods:
        reader = reader_for(domain)
        factor_names = reader_factor_names(reader, domain)
        results["factors"] = factor_names
        log.info("%s: rendering and inverting %d validation and %d held-out images (%s, %d steps)",
                 domain, settings.validation, settings.heldout, settings.inversion, settings.steps)  # fmt: skip
        validation = prepare_split(model, reader, domain, "validation", settings.validation, settings, progress=progress)
        heldout = prepare_split(model, reader, domain, "heldout", settings.heldout, settings,
                                keep_images=settings.strip_images, progress=progress)  # fmt: skip
        results["baseline"] = {"heldout": split_diagnostics(heldout, factor_names),
                               "validation": split_diagnostics(validation, factor_names)}  # fmt: skip
        results["seeds"] = {
            "heldout": [heldout.seeds[0], heldout.seeds[-1]],
            "validation": [validation.seeds[0], validation.seeds[-1]],
            "discovery": [seeds_for("discovery", settings.discovery_images, settings.seed)[i] for i in (0, -1)],
        }
        base_fingerprint = {
            "domain": domain,
            "model": model.fingerprint().get("sha256"),
            "settings": {k: v for k, v in settings.to_json().items()
                         if k not in ("methods", "trajectories_per_pass", "max_batch", "decode_batch", "cross_images", "cross_per_domain")},
        }  # fmt: skip
        discovery_pixels: torch.Tensor | None = None
        token_sets: dict[str, Directions] = {}
        for name in methods:
            # Each method's directions.
            if name in given:
                method = MethodDirections(name, f"file {files[name]}", directions=given[name])
            elif name in DISCOVERY_METHODS:
                if discovery_pixels is None:
                    # Unlabeled: only the pixels of the discovery renders reach the method.
                    discovery_pixels = render_pixels(domain, seeds_for("discovery", settings.discovery_images, settings.seed),
                                                     model.resolution)[0]  # fmt: skip
                directions = _discovered(model, name, discovery_pixels, out, settings, domain, resume=resume, progress=progress)
                source = (f"discovered in this run ({DISCOVERY_METHODS[name]} loss, {settings.discovery_steps} steps, "
                          f"{settings.discovery_images} unlabeled renders)")  # fmt: skip
                method = MethodDirections(name, source, directions=directions)
            elif name == "random":
                reference_name = next(iter(token_sets), None)
                if reference_name is not None:
                    reference = token_sets[reference_name].vectors
                    source = f"random Gaussian, count and per-row norms of {reference_name}"
                else:
                    reference = torch.full((settings.num_directions, model.token_width), 1.0)
                    reference = reference / reference.norm(dim=1, keepdim=True) * model.typical_token_norm()
                    source = "random Gaussian, norm = the model's typical token norm (no NoiseCLR set in this run)"
                vectors = random_directions(reference, settings.seed)
                method = MethodDirections(name, source, directions=Directions.for_model(
                    model, vectors, domain=domain, settings={"baseline": "random", "reference": reference_name}))  # fmt: skip
            else:
                method = MethodDirections(name, "captions of each factor value (supervised reference)", prompts=prompt_captions(domain))
            if method.directions is not None and name != "random":
                token_sets[name] = method.directions
            fingerprint = _fingerprint({**base_fingerprint, "method": name, "source": method.source,
                                        "vectors": hashlib.sha256(method.directions.vectors.numpy().tobytes()).hexdigest()
                                        if method.directions is not None else None})  # fmt: skip
            done_path = out / method_dirname(name) / "result.json"
            result = None
            if resume and done_path.is_file():
                previous = json.loads(done_path.read_text())
                if previous.get("fingerprint") == fingerprint:
                    log.info("%s: reusing finished result %s", name, done_path)
                    result = previous
                else:
                    log.info("%s: settings or directions changed since %s; measuring again", name, done_path)
            if result is None:
                result = evaluate_method(model, reader, method, validation, heldout, settings, out,
                                         factor_names=factor_names, fingerprint=fingerprint, progress=progress)  # fmt: skip
            results["methods"][name] = result
            save_progress()
            if on_method is not None:
                on_method(name, result)

    if cross_domain is not None:
        results["cross_domain"] = run_cross_domain(model, cross_domain[0], cross_domain[1], out, settings,
                                                   reader_for("scenes"), progress=progress)  # fmt: skip
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["seconds"] = round(time.monotonic() - started, 1)
    save_progress()
    return BenchResult(
        out=out,
        results_path=results_path,
        report_path=report_path,
        results=results,
        table=format_table(results),
        seconds=time.monotonic() - started,
    )


__all__ = [
    "BenchResult",
    "BenchSettings",
    "DirectionMetrics",
    "EditConfig",
    "MethodDirections",
    "Selection",
    "alone_interference",
    "any_changed_fraction",
    "change_fractions",
    "changed_mask",
    "coverage",
    "direction_metrics",
    "discovered_factors",
    "edit_grid",
    "pair_interference",
    "random_directions",
    "run_bench",
    "select_configs",
    "select_edit",
    "summarize_changes",
]
