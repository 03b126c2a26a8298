"""Benchmark settings: :class:`BenchSettings`, the methods it can run and the bench's discovery defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..discovery import DiscoverySettings
from ..errors import NoiseCLRError
from ..measure import (
    EditProtocol,
    PassSizes,
)
from ..metrics import (
    EditConfig,
    edit_grid,
)
from ..options import (
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
from ..composition import check_compose, compose_option
from ..regions import AutoRegion
from ..strength import (
    BENCH_STRENGTHS,
)

BENCH_DOMAINS = ("faces", "cats")
CROSS_REGIONS = ("auto", "box", "auto-in-box")
"""``--cross-regions`` default: every localized mode, side by side with global."""
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
DISCOVERY_FIELDS = {
    "steps": "discovery_steps",
    "batch_size": "discovery_batch",
    "micro_batches": "discovery_micro_batches",
    "lr": "discovery_lr",
}
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
    num_directions: int = option(
        20, flag="--num-directions", help="directions per method", type=positive_int, metavar="K"
    )
    """K for the discovered (and random) directions."""
    discovery_steps: int = _discovery_option("steps", type=positive_int)
    discovery_images: int = option(
        100, flag="--discovery-images", help="unlabeled renders to learn from", type=positive_int
    )
    """Unlabeled renders the discovery runs learn from."""
    discovery_batch: int = _discovery_option(
        "batch_size", help="images per micro-batch", type=positive_int, metavar=None
    )
    discovery_negatives: int | None = _discovery_option(
        "num_negatives", type=positive_int, metavar=None, default_text=f"min({BENCH_NEGATIVES}, K-1)"
    )
    """Other directions per micro-batch; None = min(9, K - 1) (CPU budget; the paper uses 20)."""
    discovery_micro_batches: int = _discovery_option("micro_batches", help="micro-batches per step", type=positive_int)
    discovery_lr: float = _discovery_option("lr")
    heldout: int = option(200, flag="--heldout", help="held-out renders every number is measured on", type=positive_int)
    validation: int = option(
        40, flag="--validation", help="validation renders that pick scale and window", type=positive_int
    )
    steps: int = option(12, flag="--steps", help="inversion and denoising steps per edit", type=positive_int)
    """Inversion and denoising steps of every edit. Edit-friendly DDPM inversion reconstructs the latents exactly at
    any count; 12 and 25 steps named the same main factor for 10 of 10 demo directions (strengths
    within 0.08, the sampling error of 12 images), 8 steps for 9 of 10 (benchmarks/quality.md)."""
    inversion: str = option(
        "ddpm", flag="--inversion", help="ddpm (reconstructs the latents exactly) or ddim (the paper's)"
    )
    strengths: tuple[float, ...] = option(
        BENCH_STRENGTHS,
        flag="--strengths",
        metavar="PERCENT",
        help="calibrated strengths (percent change of the noise prediction), each tried with both signs",
        type=float,
        nargs="+",
    )
    """Strength magnitudes (:mod:`noiseclr.strength`); each is tried with both signs."""
    scales: tuple[float, ...] | None = option(
        None,
        flag="--scales",
        help="raw scale magnitudes (lambda) instead of --strengths",
        type=float,
        nargs="+",
        default_text="",
    )
    """Raw lambda magnitudes; when set they replace ``strengths`` (the grid the paper's users hand-tune)."""
    windows: tuple[tuple[float, float], ...] = option(
        ((0.0, 1.0), (0.0, 0.5), (0.3, 1.0)),
        flag="--windows",
        help="windows tried per direction",
        type=window,
        nargs="+",
        metavar="START:END",
    )
    """Active parts of the schedule tried per direction (0 = first, noisiest step)."""
    min_preservation: float = option(0.8, flag="--min-preservation", help="selection constraint on preservation")
    """Selection constraint on a setting's preservation (validation)."""
    screen_fraction: float = option(
        0.25,
        flag="--screen-fraction",
        help="fraction of validation images every grid setting is tried on first (1: no screening)",
    )
    """Every grid setting is tried on this first share of the validation images; only the best
    ``keep_settings`` per direction are tried on the rest (successive halving)."""
    keep_settings: int = option(
        2, flag="--keep-settings", help="grid settings per direction kept after the screening", type=positive_int
    )
    early_stop: bool = option(True, flag="--no-early-stop", help="measure every direction on all held-out images")
    """Directions that cannot be effective (95% upper bound of every factor's change below the effective
    strength on the first quarter of the held-out images) are reported on that quarter only."""
    strip_images: int = option(4, flag="--strip-images", help="held-out images per direction strip in the report")
    """Held-out images shown per direction in the report."""
    seed: int = option(
        0, flag="--seed", help="0..4: fresh image sets and seeds for discovery/random/inversion", default_text=""
    )
    """Shifts every role's seed range (fresh images) and seeds discovery, random directions and inversion."""
    cross_images: int = option(100, flag="--cross-images", help="scene renders for --cross-domain", type=positive_int)
    """Scene renders of the cross-domain evaluation."""
    cross_per_domain: int = option(
        4, flag="--cross-per-domain", help="directions taken from each file for --cross-domain", type=positive_int
    )
    """Directions taken from each of the faces and cats files (their best, one per factor)."""
    trajectories_per_pass: int = option(
        128,
        flag="--trajectories-per-pass",
        help="edited images rendered together (memory)",
        type=positive_int,
        default_text="",
    )
    """Edited images rendered together (memory; results do not depend on it)."""
    max_batch: int | None = option(
        None, flag="--max-batch", help="most UNet rows per call (memory)", type=positive_int, default_text=""
    )
    """Most UNet rows per call (memory; results do not depend on it)."""
    decode_batch: int = 16
    cross_regions: tuple[str, ...] = option(
        CROSS_REGIONS,
        flag="--cross-regions",
        nargs="+",
        metavar="MODE",
        help="--cross-domain: each pair also localized in these modes (auto, box: the "
        "box around its object, auto-in-box; none: global only)",
    )
    """Region modes the scene pairs are measured in besides global (:data:`noiseclr.measure.REGION_MODES`)."""
    region: str = option(
        "none",
        flag="--region",
        choices=list(REGION_MODES),
        help="auto: also measure every pick localized (auto regions), global vs localized side by side",
    )
    """``none``: global edits only; ``auto``: every held-out and cross-domain edit also with an auto region."""
    compose: str = compose_option()
    """:mod:`noiseclr.composition`, for every localized edit the bench makes."""
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
        return replace(
            DiscoverySettings(),
            num_directions=self.num_directions,
            **knobs,
            num_negatives=self.negatives,
            **DISCOVERY_METHODS[method],
            seed=self.seed,
            domain=domain,
            checkpoint_every=max(25, self.discovery_steps // 5),
        )

    def validate(self) -> BenchSettings:
        flag = flags(BenchSettings)
        for method in self.methods:
            check_choice(method, METHODS, "--methods", "unknown method (directions files go to --directions)")
        for name in (
            "num_directions",
            "discovery_steps",
            "discovery_batch",
            "discovery_micro_batches",
            "heldout",
            "validation",
            "steps",
            "trajectories_per_pass",
            "cross_images",
            "cross_per_domain",
        ):
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
            if not values or not all(
                isinstance(v, (int, float)) and float(v) != 0.0 and abs(float(v)) < float("inf") for v in values
            ):
                raise NoiseCLRError(
                    f"{flag[name]}: give one or more nonzero finite magnitudes, e.g. {flag[name]} 5 10."
                )
        if not self.windows:
            raise NoiseCLRError(f"{flag['windows']}: give at least one START:END window, e.g. --windows 0:1 0:0.5.")
        for start, end in self.windows:
            check_window(start, end, flag["windows"])
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 5):
            raise NoiseCLRError(
                f"--seed {self.seed}: use 0..4 (each picks fresh image sets inside the evaluation seed range)."
            )
        check_positive(self.discovery_lr, flag["discovery_lr"])
        check_fraction(self.min_preservation, flag["min_preservation"])
        if not (isinstance(self.screen_fraction, (int, float)) and 0.0 < self.screen_fraction <= 1.0):
            raise NoiseCLRError(
                f"{flag['screen_fraction']} {self.screen_fraction}: must be in (0, 1]; 1 tries every setting on every image."
            )
        check_count(self.strip_images, flag["strip_images"], 0, "must be 0 or more.")
        check_max_batch(self.max_batch)
        check_choice(self.region, REGION_MODES, flag["region"], "unknown region mode")
        self.cross_regions = tuple(m for m in self.cross_regions if m != "none")
        for mode in self.cross_regions:
            check_choice(mode, CROSS_REGIONS, flag["cross_regions"], "unknown region mode (or none)")
        check_compose(self.compose, flag["compose"])
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
