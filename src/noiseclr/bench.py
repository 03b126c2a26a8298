"""Ground-truth benchmark: what each direction changes, read from the images by the factor readers.

Edit renders of the procedural world, read their factors back with the shipped readers, count what
changed. The protocol, the metrics, the selection rule, the methods and the output folder are
specified in ``docs/benchmark.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .directions import Directions
from .discovery import DiscoverySettings
from .terms import DirectionTerm, EditTerm, PromptTerm, stored_defaults
from .errors import NoiseCLRError
from .fileio import atomic_write_json, ensure_output_dir
from .images import make_grid, save_image, tensor_to_pil
from .inversion import check_steps
from .measure import (
    EditProtocol,
    PassSizes,
    PixelComparison,
    Split,
    annotate_directions,
    annotations_of,
    direction_records,
    load_reader,
    prepare_split,
    reader_factor_names,
    render_and_read,
    render_pixels,
    seeds_for,
    split_diagnostics,
)
from .metrics import (
    DEFINITIONS,
    DISCOVERED_PURITY,
    DISCOVERED_STRENGTH,
    EFFECTIVE_STRENGTH,
    SIGNS,
    EditConfig,
    alone_interference,
    axis_changed,
    change_fractions,
    changed_mask,
    edit_grid,
    pair_interference,
    part_changes,
    random_directions,
    clearly_ineffective,
    screen_settings,
    select_edit,
    summarize_changes,
    target_comparison,
    wilson_interval,
)
from .model import DiffusionModel
from .regions import AutoRegion, region_overlay
from .reuse import discover_or_reuse
from .strength import (
    BENCH_STRENGTHS,
    CALIBRATION_IMAGES,
    calibrate,
    calibration_timesteps,
    noise_response,
)
from .options import (
    check_choice,
    check_count,
    check_fraction,
    check_inversion,
    check_max_batch,
    check_positive,
    check_window,
    flags,
    option,
    option_from,
    positive_int,
    window,
)

log = logging.getLogger("noiseclr")

BENCH_DOMAINS = ("faces", "cats")
REGION_MODES = ("none", "auto")
"""``--region``: none (global edits only) or auto (each pick also measured localized)."""
DISCOVERY_METHODS: dict[str, dict[str, Any]] = {
    "noiseclr-all": {"loss_variant": "all-anchors"},
    "noiseclr-single": {"loss_variant": "single-anchor"},
    # Remedies for collapsed directions (noiseclr.discovery), against the paper's objective above.
    "noiseclr-floor": {"loss_variant": "all-anchors", "magnitude_floor": 0.01},
    "noiseclr-tokens": {"loss_variant": "all-anchors", "init": "tokens"},
    "noiseclr-axis": {"loss_variant": "all-anchors", "axis_negatives": True},
}
"""NoiseCLR variants the bench can discover: the paper's objective (both anchor variants) and the
collapse remedies; each maps to the :class:`~noiseclr.discovery.DiscoverySettings` it changes."""
METHODS = (*DISCOVERY_METHODS, "random", "prompt")
DEFAULT_METHODS = ("noiseclr-all", "noiseclr-single", "random", "prompt")


# The bench's discovery knobs: DiscoverySettings' own options, as --discovery-<flag>; only the defaults
# where the bench differs from DiscoverySettings (a CPU budget) are said here, once.
BENCH_DISCOVERY_DEFAULTS: dict[str, Any] = {"steps": 500, "micro_batches": 2}
"""Field of :class:`~noiseclr.discovery.DiscoverySettings` -> the bench's default (the others keep theirs)."""
BENCH_NEGATIVES = 9
"""``--discovery-negatives`` unset: min(9, K - 1) negatives per micro-batch (the paper uses 20)."""
DISCOVERY_FIELDS = {"steps": "discovery_steps", "batch_size": "discovery_batch", "micro_batches": "discovery_micro_batches",
                    "lr": "discovery_lr"}  # fmt: skip
"""DiscoverySettings field -> the BenchSettings field passed to it as it is."""


def _discovery_option(name: str, **overrides: Any) -> Any:
    """``--discovery-<flag>``: option ``name`` of DiscoverySettings, with the bench's default if it has one."""
    if name in BENCH_DISCOVERY_DEFAULTS:
        overrides.setdefault("default", BENCH_DISCOVERY_DEFAULTS[name])
    return option_from(DiscoverySettings, name, prefix="discovery-", **overrides)


# ----------------------------------------------------------------------------------- settings
@dataclass
class BenchSettings:
    """Everything that shapes a benchmark run. Defaults: the project's reported configuration."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    """Which methods to run (files given separately are added); the CLI's ``--methods`` is a comma list."""
    num_directions: int = option(20, flag="--num-directions", help="directions per method", type=positive_int, metavar="K")
    """K for the discovered (and random) directions."""
    discovery_steps: int = _discovery_option("steps", type=positive_int)
    discovery_images: int = option(100, flag="--discovery-images", help="unlabeled renders to learn from", type=positive_int)
    """Unlabeled renders the discovery runs learn from."""
    discovery_batch: int = _discovery_option("batch_size", help="images per micro-batch", type=positive_int,
                                             metavar=None)  # fmt: skip
    discovery_negatives: int | None = _discovery_option("num_negatives", type=positive_int, metavar=None,
                                                        default_text=f"min({BENCH_NEGATIVES}, K-1)")  # fmt: skip
    """Other directions per micro-batch; None = min(9, K - 1) (CPU budget; the paper uses 20)."""
    discovery_micro_batches: int = _discovery_option("micro_batches", help="micro-batches per step", type=positive_int)
    discovery_lr: float = _discovery_option("lr")
    heldout: int = option(200, flag="--heldout", help="held-out renders every number is measured on", type=positive_int)
    validation: int = option(40, flag="--validation", help="validation renders that pick scale and window", type=positive_int)
    steps: int = option(12, flag="--steps", help="inversion and denoising steps per edit", type=positive_int)
    """Inversion and denoising steps of every edit. Edit-friendly DDPM inversion reconstructs the latents exactly at
    any count; 12 and 25 steps named the same main factor for 10 of 10 demo directions (strengths
    within 0.08, the sampling error of 12 images), 8 steps for 9 of 10 (benchmarks/quality.md)."""
    inversion: str = option("ddpm", flag="--inversion", help="ddpm (reconstructs the latents exactly) or ddim (the paper's)")
    strengths: tuple[float, ...] = option(BENCH_STRENGTHS, flag="--strengths", metavar="PERCENT",
                                          help="calibrated strengths (percent change of the noise prediction), each tried with both signs",
                                          type=float, nargs="+")  # fmt: skip
    """Strength magnitudes (:mod:`noiseclr.strength`); each is tried with both signs."""
    scales: tuple[float, ...] | None = option(None, flag="--scales", help="raw scale magnitudes (lambda) instead of --strengths",
                                              type=float, nargs="+", default_text="")  # fmt: skip
    """Raw lambda magnitudes; when set they replace ``strengths`` (the grid the paper's users hand-tune)."""
    windows: tuple[tuple[float, float], ...] = option(
        ((0.0, 1.0), (0.0, 0.5), (0.3, 1.0)), flag="--windows", help="windows tried per direction",
        type=window, nargs="+", metavar="START:END",
    )  # fmt: skip
    """Active parts of the schedule tried per direction (0 = first, noisiest step)."""
    min_preservation: float = option(0.8, flag="--min-preservation", help="selection constraint on preservation")
    """Selection constraint on a setting's preservation (validation)."""
    screen_fraction: float = option(0.25, flag="--screen-fraction",
                                    help="fraction of validation images every grid setting is tried on first (1: no screening)")  # fmt: skip
    """Every grid setting is tried on this first share of the validation images; only the best
    ``keep_settings`` per direction are tried on the rest (successive halving)."""
    keep_settings: int = option(2, flag="--keep-settings", help="grid settings per direction kept after the screening",
                                type=positive_int)  # fmt: skip
    early_stop: bool = option(True, flag="--no-early-stop", help="measure every direction on all held-out images")
    """Directions that cannot be effective (95% upper bound of every factor's change below the effective
    strength on the first quarter of the held-out images) are reported on that quarter only."""
    strip_images: int = option(4, flag="--strip-images", help="held-out images per direction strip in the report")
    """Held-out images shown per direction in the report."""
    seed: int = option(0, flag="--seed", help="0..4: fresh image sets and seeds for discovery/random/inversion", default_text="")
    """Shifts every role's seed range (fresh images) and seeds discovery, random directions and inversion."""
    cross_images: int = option(100, flag="--cross-images", help="scene renders for --cross-domain", type=positive_int)
    """Scene renders of the cross-domain evaluation."""
    cross_per_domain: int = option(4, flag="--cross-per-domain", help="directions taken from each file for --cross-domain",
                                   type=positive_int)  # fmt: skip
    """Directions taken from each of the faces and cats files (their best, one per factor)."""
    trajectories_per_pass: int = option(128, flag="--trajectories-per-pass", help="edited images rendered together (memory)",
                                        type=positive_int, default_text="")  # fmt: skip
    """Edited images rendered together (memory; results do not depend on it)."""
    max_batch: int | None = option(None, flag="--max-batch", help="most UNet rows per call (memory)", type=positive_int,
                                   default_text="")  # fmt: skip
    """Most UNet rows per call (memory; results do not depend on it)."""
    decode_batch: int = 16
    region: str = option("none", flag="--region", choices=list(REGION_MODES),
                         help="auto: also measure every pick localized (auto regions), global vs localized side by side")  # fmt: skip
    """``none``: global edits only; ``auto``: every held-out and cross-domain edit also with an auto region."""
    auto_region: AutoRegion = field(default_factory=AutoRegion)
    """Parameters of the auto regions (``--region-top``, ``--region-smoothing``)."""

    @property
    def localized(self) -> bool:
        return self.region != "none"

    @property
    def negatives(self) -> int:
        if self.discovery_negatives is not None:
            return int(self.discovery_negatives)
        return max(1, min(BENCH_NEGATIVES, self.num_directions - 1))

    def grid(self) -> list[EditConfig]:
        if self.scales is not None:
            return edit_grid(self.scales, self.windows)
        return edit_grid(self.strengths, self.windows, unit="strength")

    def protocol(self) -> EditProtocol:
        """How every image set of the run is inverted and edited."""
        passes = PassSizes(self.trajectories_per_pass, self.max_batch, self.decode_batch)
        return EditProtocol(steps=self.steps, inversion=self.inversion, seed=self.seed, passes=passes)

    def discovery(self, method: str, domain: str) -> DiscoverySettings:
        """The discovery run of a NoiseCLR method."""
        knobs = {name: getattr(self, mine) for name, mine in DISCOVERY_FIELDS.items()}
        return replace(DiscoverySettings(), num_directions=self.num_directions, **knobs, num_negatives=self.negatives,
                       **DISCOVERY_METHODS[method], seed=self.seed, domain=domain,
                       checkpoint_every=max(25, self.discovery_steps // 5))  # fmt: skip

    def validate(self) -> BenchSettings:
        flag = flags(BenchSettings)
        for method in self.methods:
            check_choice(method, METHODS, "--methods", "unknown method (directions files go to --directions)")
        for name in ("num_directions", "discovery_steps", "discovery_batch", "discovery_micro_batches", "heldout",
                     "validation", "steps", "trajectories_per_pass", "cross_images", "cross_per_domain"):  # fmt: skip
            check_count(getattr(self, name), flag[name])
        discovering = any(m in DISCOVERY_METHODS for m in self.methods)
        if discovering:
            check_count(self.num_directions, flag["num_directions"], 2, "discovery needs at least 2 directions.")
            check_count(self.discovery_batch, flag["discovery_batch"], 2, "the contrast needs at least 2 images.")
            if self.discovery_images < self.discovery_batch:
                raise NoiseCLRError(
                    f"{flag['discovery_images']} {self.discovery_images}: fewer than {flag['discovery_batch']} "
                    f"{self.discovery_batch}; render more images or lower the batch."
                )
        check_inversion(self.inversion, flag["inversion"])
        for name, values in (("strengths", self.strengths), ("scales", self.scales)):
            if values is None and name == "scales":
                continue
            if not values or not all(isinstance(v, (int, float)) and float(v) != 0.0 and abs(float(v)) < float("inf") for v in values):
                raise NoiseCLRError(f"{flag[name]}: give one or more nonzero finite magnitudes, e.g. {flag[name]} 5 10.")
        if not self.windows:
            raise NoiseCLRError(f"{flag['windows']}: give at least one START:END window, e.g. --windows 0:1 0:0.5.")
        for start, end in self.windows:
            check_window(start, end, flag["windows"])
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 5):
            raise NoiseCLRError(f"--seed {self.seed}: use 0..4 (each picks fresh image sets inside the evaluation seed range).")
        check_positive(self.discovery_lr, flag["discovery_lr"])
        check_fraction(self.min_preservation, flag["min_preservation"])
        if not (isinstance(self.screen_fraction, (int, float)) and 0.0 < self.screen_fraction <= 1.0):
            raise NoiseCLRError(f"{flag['screen_fraction']} {self.screen_fraction}: must be in (0, 1]; 1 tries every setting on every image.")
        check_count(self.strip_images, flag["strip_images"], 0, "must be 0 or more.")
        check_max_batch(self.max_batch)
        check_choice(self.region, REGION_MODES, flag["region"], "unknown region mode")
        self.auto_region.validate()
        if self.discovery_negatives is not None and not 1 <= self.discovery_negatives < self.num_directions:
            raise NoiseCLRError(
                f"{flag['discovery_negatives']} {self.discovery_negatives}: must be between 1 and "
                f"{flag['num_directions']} - 1 = {self.num_directions - 1}."
            )
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["methods"] = list(self.methods)
        data["scales"] = None if self.scales is None else [float(s) for s in self.scales]
        data["strengths"] = [float(s) for s in self.strengths]
        data["windows"] = [[float(a), float(b)] for a, b in self.windows]
        return data



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
    duplicates: list[list[float]] | None = None
    """``[i, j, cos]``: pairs of directions that make the same change (|cos| >= 0.8) on the calibration images."""
    responses: list[float] | None = None
    """Each direction's (or prompt's) response on the run's calibration images (:mod:`noiseclr.strength`):
    what a strength grid entry means for it. Every method is calibrated on the same images."""

    @property
    def count(self) -> int:
        return self.directions.count if self.directions is not None else len(self.prompts or [])

    def term(self, index: int, config: EditConfig, sign: float = 1.0, region: str | None = None) -> EditTerm:
        amount = sign * abs(config.scale)
        by_strength = config.unit == "strength"
        scale, strength = (None, amount) if by_strength else (amount, None)
        if self.directions is not None:
            term: EditTerm = DirectionTerm(self.directions, index, scale, config.start, config.end, strength=strength,
                                           region=region)  # fmt: skip
        else:
            assert self.prompts is not None
            term = PromptTerm(self.prompts[index][2], scale, config.start, config.end, strength=strength, region=region)
        if by_strength:
            assert self.responses is not None, "calibrate the method before a strength grid"
            term.resolve(self.responses[index])
        return term

    def label(self, index: int) -> str:
        if self.directions is not None:
            return f"direction {index}"
        assert self.prompts is not None
        factor, value, caption = self.prompts[index]
        return f"prompt {factor}={value}"



def calibrate_method(model: DiffusionModel, method: MethodDirections, latents: torch.Tensor) -> list[float]:
    """Every direction's (or prompt's) response on ``latents``, measured the same way for every method;
    for token directions also the pairs that are one axis twice (``method.duplicates``)."""
    if method.directions is not None:
        record = calibrate(model, method.directions, latents)  # the calibration stored with directions
        method.duplicates = record["duplicates"]
        return record["response"]
    timesteps = calibration_timesteps(model)
    assert method.prompts is not None
    conditionings = model.encode_prompts([caption for _, _, caption in method.prompts])
    return [float(r) for r in noise_response(model, conditionings, latents, timesteps)]


# ---------------------------------------------------------------------------- one method
def _fingerprint(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def method_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "method"



def strip_image(inputs: torch.Tensor, recon: torch.Tensor, edited: Sequence[torch.Tensor], title: str, *, labels: Sequence[str] = ("-scale", "+scale")):
    """Rows input / recon / each edit, one column per image."""
    rows = [[tensor_to_pil(t[i]) for i in range(t.shape[0])] for t in (inputs, recon, *edited)]
    return make_grid(rows, row_labels=["input", "recon", *labels], title=title)


def overlays(pixels: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """[n, 3, S, S] edits dimmed outside their regions [n, h, w] (the strips' "region" row)."""
    return torch.stack([region_overlay(pixels[i], inside[i].float()) for i in range(pixels.shape[0])])


def _mean(values: torch.Tensor) -> float | None:
    """Mean of the finite entries (None if there are none), rounded for JSON."""
    finite = values[torch.isfinite(values)]
    return round(float(finite.mean()), 4) if finite.numel() else None


PIXEL_KEYS = ("region_fraction", "psnr_outside_global", "psnr_outside_local", "psnr_global", "psnr_local")
"""Per (edit, image) pixel measures of localized twins (:class:`Twins`)."""


@dataclass
class Twins:
    """Edits rendered globally and with regions on the same images: the localized side of them."""

    edited: torch.Tensor
    """[E, B, F] read factor values of the localized edits."""
    kept: torch.Tensor | None
    """[E, keep, 3, S, S] the first localized images (strips)."""
    inside: torch.Tensor
    """[E, B, h, w] bool: each localized edit's final region."""
    pixels: dict[str, torch.Tensor]
    """:data:`PIXEL_KEYS` -> [E, B] float64 (NaN where undefined): the region's share of the latent grid,
    PSNR against the reconstruction outside the localized region (global and localized edit on the
    same pixels) and over the whole image."""


def render_twins(
    model: DiffusionModel,
    reader: Any,
    split: Split,
    edits: Sequence[Sequence[EditTerm]],
    local_edits: Sequence[Sequence[EditTerm]],
    images: Sequence[int],
    settings: BenchSettings,
    *,
    keep: int,
    desc: str,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, Twins]:
    """``edits`` and their localized twins on ``images`` of ``split``: (global reads [E, B, F], global kept,
    :class:`Twins`). The localized ones go first: their regions are where the global edits' pixels are
    compared too."""
    assert split.recon_small is not None, "prepare the split with keep_recon_pixels"
    passes = settings.protocol().passes
    inversion = split.inversion.select(list(images))
    recon = split.recon_small[torch.as_tensor(list(images), dtype=torch.long)]
    local = PixelComparison(recon, len(local_edits), len(images))
    local_read, local_kept = render_and_read(model, inversion, reader, local_edits, passes, keep_images=keep,
                                             desc=f"{desc} (localized)", progress=progress, auto_region=settings.auto_region,
                                             on_chunk=local)  # fmt: skip
    assert local.inside is not None
    other = PixelComparison(recon, len(edits), len(images), inside=local.inside)
    edited, kept = render_and_read(model, inversion, reader, edits, passes, keep_images=keep, desc=desc, progress=progress,
                                   on_chunk=other)  # fmt: skip
    pixels = {"region_fraction": local.region, "psnr_outside_global": other.psnr_outside, "psnr_outside_local": local.psnr_outside,
              "psnr_global": other.psnr, "psnr_local": local.psnr}  # fmt: skip
    return edited, kept, Twins(local_read, local_kept, local.inside, pixels)


def pixel_means(pixels: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    """Mean of each pixel measure over its finite entries."""
    return {key: _mean(values) for key, values in pixels.items()}


def localized_result(
    changes: torch.Tensor,
    local_edited: Sequence[torch.Tensor],
    local_pixels: Sequence[Mapping[str, torch.Tensor]],
    heldout: Split,
    settings: BenchSettings,
    factor_names: Sequence[str],
    values: Sequence[Sequence[str]],
) -> dict[str, Any]:
    """The ``localized`` block of a method. ``local_edited[k]`` [2, B_k, F] and ``local_pixels[k]``
    (measures [2, B_k]) are direction k's localized twins on the first B_k held-out images (as its
    global measurement). Reports their own summary and, per direction and on average over the
    effective global directions, target strength, preservation and pixels, global vs localized."""
    local_changed = [changed_mask(read, heldout.recon_indices[: read.shape[1]]) for read in local_edited]
    local_changes = torch.stack([change_fractions(axis_changed(changed)) for changed in local_changed])
    records = direction_records(local_changes, local_edited, local_changed, factor_names, values)
    compared = target_comparison(changes, local_changes)
    directions = []
    for k, record in enumerate(records):
        row = {key: value for key, value in record.to_json().items()
               if key in ("index", "name", "main_factor", "strength", "purity", "preservation", "changes")}  # fmt: skip
        row["target_factor"] = factor_names[int(compared["target"][k])]
        row["target_strength_global"] = round(float(compared["strength_global"][k]), 4)
        row["target_strength_local"] = round(float(compared["strength_local"][k]), 4)
        row["preservation_global"] = round(float(compared["preservation_global"][k]), 4)
        row["preservation_local"] = round(float(compared["preservation_local"][k]), 4)
        row["images"] = int(local_edited[k].shape[1])
        row.update(pixel_means(local_pixels[k]))
        directions.append(row)
    effective = [k for k in range(changes.shape[0]) if float(compared["strength_global"][k]) >= EFFECTIVE_STRENGTH - 1e-9]
    picked = torch.as_tensor(effective, dtype=torch.long)

    def mean(key: str) -> float | None:
        return _mean(compared[key][picked].to(torch.float64)) if effective else None

    comparison: dict[str, Any] = {
        "directions": len(effective),
        "target_strength_global": mean("strength_global"),
        "target_strength_local": mean("strength_local"),
        "preservation_global": mean("preservation_global"),
        "preservation_local": mean("preservation_local"),
    }
    if effective:
        comparison.update(pixel_means({key: torch.cat([local_pixels[k][key].flatten() for k in effective]) for key in PIXEL_KEYS}))
        comparison["target_strength_drop"] = round(comparison["target_strength_global"] - comparison["target_strength_local"], 4)
    return {
        "region": settings.region,
        "auto_region": asdict(settings.auto_region),
        "comparison": comparison,
        "summary": summarize_changes(local_changes, factor_names),
        "directions": directions,
    }


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

    passes = settings.protocol().passes

    def axis_changes(split: Split, edits: list[list[EditTerm]], images: list[int], desc: str, keep: int = 0,
                     local_edits: list[list[EditTerm]] | None = None):  # fmt: skip
        """Read every edit (both signs adjacent) on ``images`` of ``split``: changes [E/2, F], edited, changed, kept,
        and with ``local_edits`` (their localized twins) the :class:`Twins` (else None)."""
        twins = None
        if local_edits is None:
            inversion = split.inversion.select(images)
            edited, kept = render_and_read(model, inversion, reader, edits, passes, keep_images=keep, desc=desc, progress=progress)
        else:
            edited, kept, twins = render_twins(model, reader, split, edits, local_edits, images, settings, keep=keep,
                                               desc=desc, progress=progress)  # fmt: skip
        edited = edited.view(len(edits) // len(SIGNS), len(SIGNS), *edited.shape[1:])
        changed = changed_mask(edited, split.recon_indices[images])
        return change_fractions(axis_changed(changed)), edited, changed, kept, twins

    def localized_edits(directions: Sequence[int]) -> list[list[EditTerm]] | None:
        """The held-out picks of ``directions`` with regions (--region), or None when not localized."""
        if not settings.localized:
            return None
        return [[method.term(k, selections[k].config, sign, region=settings.region)] for k in directions for sign in SIGNS]

    # 1. the grid, at both signs, on validation images only: every setting on a first slice
    #    (screening), the best keep_settings per direction on the rest.
    screened = min(validation.count, max(4, math.ceil(settings.screen_fraction * validation.count)))
    first, rest = list(range(screened)), list(range(screened, validation.count))
    edits = [[method.term(k, config, sign)] for k in range(count) for config in grid for sign in SIGNS]
    screen, *_ = axis_changes(validation, edits, first, f"{method.name}: validation grid")
    screen = screen.view(count, len(grid), -1)
    survivors = screen_settings(screen, settings.keep_settings, settings.min_preservation) if rest else [list(range(len(grid)))] * count
    validation_changes = screen.clone()
    if rest:
        edits = [[method.term(k, grid[g], sign)] for k in range(count) for g in survivors[k] for sign in SIGNS]
        more, *_ = axis_changes(validation, edits, rest, f"{method.name}: validation, kept settings")
        cursor = 0
        for k in range(count):
            for g in survivors[k]:
                validation_changes[k, g] = (screen[k, g] * len(first) + more[cursor] * len(rest)) / validation.count
                cursor += 1
    selections = []
    for k in range(count):
        pick = select_edit(validation_changes[k, survivors[k]], [grid[g] for g in survivors[k]], settings.min_preservation)
        selections.append(replace(pick, index=survivors[k][pick.index]))

    # 2. the picks, at both signs, on held-out images: a first slice for every direction; the rest
    #    only for directions that could still be effective (95% upper bound of every factor's
    #    change at or above the effective strength). With --region, each also localized, on the
    #    same images.
    head_count = heldout.count if not settings.early_stop else min(heldout.count, max(20, math.ceil(heldout.count / 4)))
    head, tail = list(range(head_count)), list(range(head_count, heldout.count))
    edits = [[method.term(k, selection.config, sign)] for k, selection in enumerate(selections) for sign in SIGNS]
    changes, edited_head, changed_head, kept, twins = axis_changes(heldout, edits, head, f"{method.name}: held-out",
                                                                   keep=settings.strip_images, local_edits=localized_edits(range(count)))  # fmt: skip
    local_edited = None if twins is None else [twins.edited[2 * k : 2 * k + 2] for k in range(count)]
    local_pixels = None if twins is None else [{key: v[2 * k : 2 * k + 2] for key, v in twins.pixels.items()} for k in range(count)]
    stopped = clearly_ineffective(changes, head_count) if tail else torch.zeros(count, dtype=torch.bool)
    going = [k for k in range(count) if not bool(stopped[k])]
    edited: list[torch.Tensor] = list(edited_head)
    changed: list[torch.Tensor] = list(changed_head)
    if tail and going:
        edits = [[method.term(k, selections[k].config, sign)] for k in going for sign in SIGNS]
        _, edited_tail, changed_tail, _, twins_tail = axis_changes(heldout, edits, tail, f"{method.name}: held-out, rest",
                                                                   local_edits=localized_edits(going))  # fmt: skip
        for position, k in enumerate(going):
            edited[k] = torch.cat([edited_head[k], edited_tail[position]], dim=1)
            changed[k] = torch.cat([changed_head[k], changed_tail[position]], dim=1)
            changes[k] = change_fractions(axis_changed(changed[k]))
            if local_edited is not None and local_pixels is not None and twins_tail is not None:
                rows = slice(2 * position, 2 * position + 2)
                local_edited[k] = torch.cat([local_edited[k], twins_tail.edited[rows]], dim=1)
                local_pixels[k] = {key: torch.cat([v, twins_tail.pixels[key][rows]], dim=1) for key, v in local_pixels[k].items()}
    values = [factor.values for factor in domain_factors(heldout.domain)]
    records = direction_records(changes, edited, changed, factor_names, values)
    for k, (record, selection) in enumerate(zip(records, selections)):
        images = int(changed[k].shape[1])
        main = factor_names.index(record.main_factor)
        record.images = images
        record.strength_ci = [round(v, 4) for v in wilson_interval(float(changes[k, main]) * images, images)]
        record.stopped_early = bool(stopped[k])
        record.set_edit(**selection.config.to_json())
        record.label = method.label(k)
        record.validation = selection.to_json(factor_names)
        if method.prompts is not None:
            factor, value, caption = method.prompts[k]
            record.prompt, record.intended_factor, record.intended_value = caption, factor, value
            record.hit = record.main_factor == factor
        if kept is not None and heldout.recon_kept is not None:
            keep = kept.shape[1]
            title = f"{k}: {record.name} ({selection.config.describe()})"
            magnitude = f"{abs(selection.config.scale):g}{'%' if selection.config.unit == 'strength' else ''}"
            rows, labels = [kept[2 * k + 1], kept[2 * k]], [f"-{magnitude}", f"+{magnitude}"]
            if twins is not None and twins.kept is not None:
                rows += [twins.kept[2 * k + 1], twins.kept[2 * k], overlays(twins.kept[2 * k], twins.inside[2 * k, :keep])]
                labels += [f"local -{magnitude}", f"local +{magnitude}", "region +"]
            grid_image = strip_image(heldout.pixels[:keep], heldout.recon_kept[:keep], rows, title, labels=labels)
            path = save_image(grid_image, folder / "strips" / f"direction-{k:03d}.png")
            record.strip = str(path.relative_to(out))
    summary = summarize_changes(changes, factor_names)
    if method.duplicates is not None:
        involved = {int(i) for pair in method.duplicates for i in pair[:2]}
        summary["duplicate_pairs"] = method.duplicates
        summary["duplicate_fraction"] = len(involved) / max(1, count)
    if method.responses is not None:
        summary["response_median"] = float(torch.tensor(method.responses).median())
    if method.prompts is not None:
        summary["intended_hit_rate"] = sum(bool(r.hit) for r in records) / max(1, len(records))
    directions_file = None
    if method.directions is not None:
        annotated = annotate_directions(
            model, method.directions, records, domain=heldout.domain, source=f"noiseclr bench ({method.name})",
            protocol=settings.protocol(),
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
        "validation_survivors": survivors,
        "screening": {"validation_images": screened, "heldout_head": head_count,
                      "stopped_early": [k for k in range(count) if bool(stopped[k])]},  # fmt: skip
        "directions": [record.to_json() for record in records],
        "seconds": round(time.monotonic() - started, 1),
    }
    if local_edited is not None and local_pixels is not None:
        result["localized"] = localized_result(changes, local_edited, local_pixels, heldout, settings, factor_names, values)
    atomic_write_json(folder / "result.json", result)
    return result


# ---------------------------------------------------------------------------- cross-domain

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
    scenes = prepare_split(model, reader, "scenes", "scenes", settings.cross_images, settings.protocol(),
                           keep_images=settings.strip_images, keep_recon_pixels=settings.localized, progress=progress)  # fmt: skip
    recon_labels = _decode_labels("scenes", scenes.recon_indices)

    def term(part: str, index: int, sign: float, region: str | None = None) -> DirectionTerm:
        directions, records, _ = loaded[part]
        record = records[index]
        defaults = stored_defaults(directions, index) or record
        window = (float(defaults.get("start", 0.0)), float(defaults.get("end", 1.0)))
        if defaults.get("strength") is not None and defaults is not record:  # an edit strength (edit_defaults)
            return DirectionTerm(directions, index, None, *window, strength=sign * abs(float(defaults["strength"])), region=region)
        if defaults.get("edit_strength") is not None:
            return DirectionTerm(directions, index, None, *window, strength=sign * abs(float(defaults["edit_strength"])),
                                 region=region)  # fmt: skip
        return DirectionTerm(directions, index, sign * abs(float(defaults["scale"])), *window, region=region)

    faces, cats = loaded["face"][2], loaded["cat"][2]
    pairs = [(faces[i % len(faces)], cats[i % len(cats)]) for i in range(max(len(faces), len(cats)))]
    alone = [("face", k) for k in faces] + [("cat", k) for k in cats]

    def edits_with(region: str | None) -> list[list[EditTerm]]:
        # Every edit at both signs (pairs share the sign), as in the per-domain benchmark; in a
        # localized pair each direction has its own auto region.
        edits: list[list[EditTerm]] = [[term(part, k, sign, region)] for part, k in alone for sign in SIGNS]
        edits += [[term("face", f, sign, region), term("cat", c, sign, region)] for f, c in pairs for sign in SIGNS]
        return edits

    twins: Twins | None = None
    if settings.localized:
        edited, kept, twins = render_twins(model, reader, scenes, edits_with(None), edits_with(settings.region),
                                           range(scenes.count), settings, keep=settings.strip_images, desc="cross-domain",
                                           progress=progress)  # fmt: skip
    else:
        edited, kept = render_and_read(model, scenes.inversion, reader, edits_with(None), settings.protocol().passes,
                                       keep_images=settings.strip_images, desc="cross-domain", progress=progress)  # fmt: skip

    def main_of(part: str, k: int) -> str:
        return str(loaded[part][1][k]["main_factor"])

    def rows_of(read: torch.Tensor) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The alone and pair rows of one rendering (global or localized) of every edit."""

        def per_part(e: int) -> dict[str, tuple[list[str], torch.Tensor]]:
            """Changes of edit ``e`` under either sign, per scene object."""
            result = {}
            for part in ("face", "cat"):
                signed = [part_changes(_decode_labels("scenes", read[len(SIGNS) * e + s]), recon_labels, part) for s in range(len(SIGNS))]
                result[part] = (signed[0][0], torch.stack([changed for _, changed in signed]).any(dim=0))
            return result

        alone_rows = []
        for e, (part, k) in enumerate(alone):
            other = "cat" if part == "face" else "face"
            changes = per_part(e)
            numbers = alone_interference(changes[part], changes[other], main_of(part, k))
            alone_rows.append({"part": part, "index": k, "name": loaded[part][1][k].get("name"),
                               "main_factor": main_of(part, k), **numbers})  # fmt: skip
        pair_rows = []
        for p, (f, c) in enumerate(pairs):
            changes = per_part(len(alone) + p)
            pair_rows.append({
                "face": {"index": f, "name": loaded["face"][1][f].get("name"), "main_factor": main_of("face", f)},
                "cat": {"index": c, "name": loaded["cat"][1][c].get("name"), "main_factor": main_of("cat", c)},
                **pair_interference(changes["face"], changes["cat"], main_of("face", f), main_of("cat", c)),
            })  # fmt: skip
        return alone_rows, pair_rows

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(float(r[key]) for r in rows) / len(rows), 4) if rows else None

    def summary_of(alone_rows: list[dict[str, Any]], pair_rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "pairs": len(pair_rows),
            "mean_face_change": mean(pair_rows, "face_change"),
            "mean_cat_change": mean(pair_rows, "cat_change"),
            "mean_both_changed": mean(pair_rows, "both_changed"),
            "interference": mean(pair_rows, "interference"),
            "interference_alone": mean(alone_rows, "interference"),
        }

    alone_rows, pair_rows = rows_of(edited)
    for p, row in enumerate(pair_rows):
        e = len(alone) + p
        if kept is not None and scenes.recon_kept is not None:
            keep = kept.shape[1]
            title = f"face {row['face']['index']}: {row['face']['name']}  +  cat {row['cat']['index']}: {row['cat']['name']}"
            rows, labels = [kept[2 * e + 1], kept[2 * e]], ["both -", "both +"]
            if twins is not None and twins.kept is not None:
                rows += [twins.kept[2 * e + 1], twins.kept[2 * e], overlays(twins.kept[2 * e], twins.inside[2 * e, :keep])]
                labels += ["local both -", "local both +", "regions +"]
            image = strip_image(scenes.pixels[:keep], scenes.recon_kept[:keep], rows, title, labels=labels)
            row["strip"] = str(save_image(image, folder / f"pair-{p:02d}.png").relative_to(out))

    localized = None
    if twins is not None:
        local_alone, local_pairs = rows_of(twins.edited)

        def pixels_of(edits: range) -> dict[str, float | None]:
            return pixel_means({key: values[edits.start : edits.stop] for key, values in twins.pixels.items()})

        for e, row in enumerate(local_alone + local_pairs):
            row.update(pixels_of(range(len(SIGNS) * e, len(SIGNS) * (e + 1))))
        localized = {
            "region": settings.region,
            "auto_region": asdict(settings.auto_region),
            "summary": {**summary_of(local_alone, local_pairs),
                        **pixels_of(range(len(SIGNS) * len(alone), len(SIGNS) * (len(alone) + len(pairs))))},  # fmt: skip
            "alone": local_alone,
            "pairs": local_pairs,
        }

    result = {
        "faces_file": str(loaded["face"][0].path or ""),
        "cats_file": str(loaded["cat"][0].path or ""),
        "images": scenes.count,
        "seeds": [scenes.seeds[0], scenes.seeds[-1]],
        "reader_factors": reader_names,
        "baseline": split_diagnostics(scenes, reader_names),
        "summary": summary_of(alone_rows, pair_rows),
        "alone": alone_rows,
        "pairs": pair_rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    if localized is not None:
        result["localized"] = localized
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
    def announce() -> None:
        log.info("%s: discovering %d directions (%s, %d steps) on %d unlabeled renders",
                 method, settings.num_directions, _variant(method), settings.discovery_steps, pixels.shape[0])  # fmt: skip

    return discover_or_reuse(model, pixels, out / "discovery" / method, settings.discovery(method, domain), resume=resume,
                             progress=progress, on_discover=announce)  # fmt: skip


def _variant(method: str) -> str:
    """``all-anchors loss, magnitude_floor 0.01``: how a NoiseCLR method's discovery differs."""
    changes = DISCOVERY_METHODS[method]
    extra = ", ".join(f"{k} {v}" for k, v in changes.items() if k != "loss_variant")
    return f"{changes['loss_variant']} loss" + (f", {extra}" if extra else "")


def _method_order(methods: Sequence[str], files: Mapping[str, Path]) -> list[str]:
    order = [m for m in DISCOVERY_METHODS if m in methods or m in files]
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
        protocol = settings.protocol()
        validation = prepare_split(model, reader, domain, "validation", settings.validation, protocol, progress=progress)
        heldout = prepare_split(model, reader, domain, "heldout", settings.heldout, protocol,
                                keep_images=settings.strip_images, keep_recon_pixels=settings.localized, progress=progress)  # fmt: skip
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
            # The region keys only when localized: global runs keep the fingerprints of earlier runs.
            "settings": {k: v for k, v in settings.to_json().items()
                         if k not in ("methods", "trajectories_per_pass", "max_batch", "decode_batch", "cross_images", "cross_per_domain")
                         and (settings.localized or k not in ("region", "auto_region"))},
        }  # fmt: skip
        discovery_pixels: torch.Tensor | None = None
        calibration_latents: torch.Tensor | None = None  # the first discovery renders: the same for every method
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
                source = (f"discovered in this run ({_variant(name)}, {settings.discovery_steps} steps, "
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
            if calibration_latents is None:
                calibration_latents = model.encode_images(render_pixels(
                    domain, seeds_for("discovery", CALIBRATION_IMAGES, settings.seed), model.resolution)[0])  # fmt: skip
            method.responses = calibrate_method(model, method, calibration_latents)
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
    "BENCH_DOMAINS",
    "METHODS",
    "BenchResult",
    "BenchSettings",
    "MethodDirections",
    "check_bench_inputs",
    "evaluate_method",
    "parse_directions_args",
    "pick_cross_directions",
    "prompt_captions",
    "run_bench",
    "run_cross_domain",
]
