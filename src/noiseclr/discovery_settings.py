"""What shapes a discovery run: :class:`DiscoverySettings`, the one source of discover's flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import NoiseCLRError
from .objective import DEFAULT_VARIANT, VARIANTS
from .options import check_choice, check_count, check_positive, check_window, flags, is_whole, option, window

RESEED_EVERY = 50
"""Steps between the duplicate checks of ``--reseed-duplicates``."""

INITS = ("random", "tokens")
"""How direction rows start (:func:`noiseclr.discovery.initial_directions`)."""

TRAJECTORY = (
    "num_negatives",
    "micro_batches",
    "temperature",
    "loss_variant",
    "seed",
    "hflip",
    "timestep_range",
    "lr",
    "betas",
    "weight_decay",
    "magnitude_floor",
    "floor_weight",
    "init",
    "axis_negatives",
    "diversity_weight",
    "reseed_duplicates",
)
"""Settings that change what a run learns (besides K, N and the step count)."""


@dataclass
class DiscoverySettings:
    """Everything that shapes a discovery run. Defaults follow the published configuration.

    How it runs (device, dtype, compile, ...) is :class:`noiseclr.runtime.RuntimeSettings`, passed
    beside it: those knobs never change what is learned beyond float rounding.
    """

    num_directions: int = option(
        100, flag="--num-directions", help="number of directions", metavar="K", aliases=("--directions",)
    )
    """K, the number of directions learned."""
    steps: int = option(1000, flag="--steps", help="optimizer steps")
    batch_size: int = option(6, flag="--batch", help="images per micro-batch per process", metavar="N")
    """N, images per micro-batch per process (the contrast needs at least 2)."""
    num_negatives: int | None = option(
        None,
        flag="--negatives",
        help="other directions per micro-batch",
        type=int,
        metavar="M",
        default_text="min(20, K-1)",
    )
    """Other directions drawn with the anchor per micro-batch; None = min(20, K-1)."""
    micro_batches: int = option(4, flag="--micro-batches", help="micro-batches per optimizer step")
    """Micro-batches accumulated per optimizer step (published: gradient_accumulation_steps=4)."""
    lr: float = option(1e-3, flag="--lr", help="AdamW learning rate")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    temperature: float = option(0.5, flag="--temperature", help="contrastive temperature tau")
    loss_variant: str = option(DEFAULT_VARIANT, flag="--loss", help="loss variant", choices=list(VARIANTS))
    """``all-anchors`` or ``single-anchor`` (published); see :mod:`noiseclr.objective`."""
    timestep_range: tuple[float, float] = option(
        (0.0, 1.0),
        flag="--timesteps",
        help="timestep range as fractions of T",
        type=window,
        metavar="LO:HI",
        default_text="0:1",
    )
    """Timesteps drawn uniformly from [lo*T, hi*T) as fractions of the T training timesteps."""
    hflip: bool = option(True, flag="--no-hflip", help="do not mirror training images")
    """Randomly mirror training images (both versions are encoded once at the start)."""
    seed: int = option(0, flag="--seed", help="seed of every random draw", default_text="")
    domain: str = option(
        "", flag="--domain", help="label stored with the directions (faces, cats, ...)", default_text=""
    )
    """Free-text label of the image domain, stored with the directions."""
    magnitude_floor: float = option(
        0.0,
        flag="--magnitude-floor",
        metavar="R",
        help="keep every direction's noise response ||eps_k - eps_0|| / ||eps_0|| above R with a "
        "hinge penalty (0: the paper's objective)",
    )
    """Remedy for collapsed directions (``magnitude_hinge``); 0 is the paper's objective."""
    floor_weight: float = option(
        1.0, flag="--floor-weight", help="weight of the magnitude floor's hinge (on log response)"
    )
    diversity_weight: float = option(
        0.0,
        flag="--diversity-weight",
        metavar="W",
        help="penalise W * mean squared cosine between the directions' mean noise changes "
        "over the batch (0: the paper's objective)",
    )
    """Remedy for directions that repeat each other (``objective.decorrelation_penalty``)."""
    reseed_duplicates: float = option(
        0.0,
        flag="--reseed-duplicates",
        metavar="COS",
        help=f"every {RESEED_EVERY} steps, restart from a fresh embedding each direction whose "
        "noise change has |cos| >= COS with an earlier one (0: off; e.g. 0.9)",
    )
    """Remedy for one change learned twice: the later of each duplicate pair starts again."""
    axis_negatives: bool = option(
        False,
        flag="--axis-negatives",
        help="negatives by |cos|: a direction and its opposite count as one axis (the paper: signed cos)",
    )
    """Remedy for one axis learned twice with opposite signs (:mod:`noiseclr.objective`)."""
    init: str = option(
        "random",
        flag="--init",
        help="start rows: random (Gaussian at the typical token norm) or tokens (real token embeddings)",
        choices=list(INITS),
    )
    checkpoint_every: int = option(200, flag="--checkpoint-every", help="steps between checkpoints")
    """Optimizer steps between checkpoints (0: only at the end and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """How many of the latest checkpoints are kept."""
    log_every: int = 10
    """Steps between rewrites of loss.csv."""
    names: list[str] | None = None
    """Optional K names stored with the directions."""

    @property
    def negatives(self) -> int:
        """Resolved number of negatives per micro-batch."""
        return min(20, self.num_directions - 1) if self.num_negatives is None else int(self.num_negatives)

    def validate(self) -> DiscoverySettings:
        """One-line :class:`NoiseCLRError` for any setting that cannot work."""
        flag = flags(DiscoverySettings)
        check_count(
            self.num_directions, flag["num_directions"], 2, "need at least 2 directions to contrast; use 2 or more."
        )
        if self.num_negatives is not None and not (
            is_whole(self.num_negatives) and 1 <= self.num_negatives < self.num_directions
        ):
            raise NoiseCLRError(
                f"{flag['num_negatives']} {self.num_negatives}: must be between 1 and "
                f"{flag['num_directions']} - 1 = {self.num_directions - 1}."
            )
        check_count(
            self.batch_size,
            flag["batch_size"],
            2,
            "the contrast needs at least 2 images per micro-batch; use 2 or more.",
        )
        check_count(self.micro_batches, flag["micro_batches"], why="must be at least 1.")
        check_count(self.steps, flag["steps"], why="must be at least 1.")
        check_positive(self.lr, flag["lr"])
        check_positive(self.temperature, flag["temperature"])
        check_choice(self.loss_variant, VARIANTS, flag["loss_variant"])
        check_window(*self.timestep_range, flag["timestep_range"], of="the training timesteps")
        if not (isinstance(self.magnitude_floor, (int, float)) and 0.0 <= self.magnitude_floor < float("inf")):
            raise NoiseCLRError(
                f"{flag['magnitude_floor']} {self.magnitude_floor}: must be 0 (off) or a positive number, e.g. 0.05."
            )
        if not (isinstance(self.floor_weight, (int, float)) and 0.0 <= self.floor_weight < float("inf")):
            raise NoiseCLRError(f"{flag['floor_weight']} {self.floor_weight}: must be 0 or a positive number.")
        if not (isinstance(self.reseed_duplicates, (int, float)) and 0.0 <= self.reseed_duplicates <= 1.0):
            raise NoiseCLRError(
                f"{flag['reseed_duplicates']} {self.reseed_duplicates}: must be 0 (off) or a cosine in (0, 1], e.g. 0.9."
            )
        if not (isinstance(self.diversity_weight, (int, float)) and 0.0 <= self.diversity_weight < float("inf")):
            raise NoiseCLRError(
                f"{flag['diversity_weight']} {self.diversity_weight}: must be 0 (off) or a positive number, e.g. 1."
            )
        check_choice(self.init, INITS, flag["init"])
        check_count(self.checkpoint_every, flag["checkpoint_every"], 0, "must be 0 (off) or positive.")
        check_count(self.keep_checkpoints, "keep_checkpoints", why="must be at least 1.")
        if self.names is not None and len(self.names) != self.num_directions:
            raise NoiseCLRError(
                f"--names: got {len(self.names)} names for {self.num_directions} directions; give one per direction."
            )
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        data["timestep_range"] = list(self.timestep_range)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiscoverySettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("betas", "timestep_range"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def changed_trajectory(before: DiscoverySettings, now: DiscoverySettings) -> list[str]:
    """The :data:`TRAJECTORY` settings that differ between two runs (the floor's weight only
    matters when a floor is set)."""
    ignored = {"floor_weight"} if before.magnitude_floor == now.magnitude_floor == 0 else set()
    return [name for name in TRAJECTORY if name not in ignored and getattr(before, name) != getattr(now, name)]
