"""Text-free discovery of edit directions (NoiseCLR training loop).

A direction is one token embedding ``d_k`` fed through the frozen text encoder as
``[BOS, d_k, EOS, pad...]``; only the K direction rows are trained, with the contrastive loss of
:mod:`noiseclr.objective`. The micro-batch, the run folder, the checkpoint format and the resume
rules are specified in ``docs/discovery.md``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .checkpoint import DiscoveryCheckpoint, checkpoint_dir, is_readable_checkpoint, latest_checkpoint, list_checkpoints
from .directions import Directions
from .errors import NoiseCLRError, TrainingDiverged
from .fileio import atomic_write_json, atomic_write_text, check_output_dir, ensure_output_dir
from .images import ImageSet, check_image_folder, image_fingerprint, load_image_folder
from .interrupts import Terminated, hold_interrupts, terminate_as_interrupt
from .model import DiffusionModel, fingerprints_match
from .processes import Processes
from .runtime import RuntimeSettings
from .options import check_choice, check_count, check_positive, check_window, flag, flags, is_whole, option, window
from .objective import (
    VARIANTS,
    contrastive_loss,
    mean_negative_abs_cos,
    mean_vector_abs_cos,
    normalize_features,
)

log = logging.getLogger("noiseclr")

DEFAULT_VARIANT = "all-anchors"
"""Chosen by measurement, see ``docs/loss_variants.md``."""

INITS = ("random", "tokens")
"""How direction rows start (:func:`initial_directions`)."""
RNG_STREAMS = ("directions", "timesteps", "images", "noise")

# --------------------------------------------------------------------------- settings
@dataclass
class DiscoverySettings:
    """Everything that shapes a discovery run. Defaults follow the published configuration.

    How it runs (device, dtype, compile, ...) is :class:`noiseclr.runtime.RuntimeSettings`, passed
    beside it: those knobs never change what is learned beyond float rounding.
    """

    num_directions: int = option(100, flag="--directions", help="number of directions", metavar="K")
    """K, the number of directions learned."""
    steps: int = option(1000, flag="--steps", help="optimizer steps")
    batch_size: int = option(6, flag="--batch", help="images per micro-batch per process", metavar="N")
    """N, images per micro-batch per process (the contrast needs at least 2)."""
    num_negatives: int | None = option(None, flag="--negatives", help="other directions per micro-batch", type=int,
                                       metavar="M", default_text="min(20, K-1)")  # fmt: skip
    """Other directions drawn with the anchor per micro-batch; None = min(20, K-1)."""
    micro_batches: int = option(4, flag="--micro-batches", help="micro-batches per optimizer step")
    """Micro-batches accumulated per optimizer step (published: gradient_accumulation_steps=4)."""
    lr: float = option(1e-3, flag="--lr", help="AdamW learning rate")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    temperature: float = option(0.5, flag="--temperature", help="contrastive temperature tau")
    loss_variant: str = option(DEFAULT_VARIANT, flag="--loss", help="loss variant", choices=list(VARIANTS))
    """``all-anchors`` or ``single-anchor`` (published); see :mod:`noiseclr.objective`."""
    timestep_range: tuple[float, float] = option((0.0, 1.0), flag="--timesteps", help="timestep range as fractions of T",
                                                 type=window, metavar="LO:HI", default_text="0:1")  # fmt: skip
    """Timesteps drawn uniformly from [lo*T, hi*T) as fractions of the T training timesteps."""
    hflip: bool = option(True, flag="--no-hflip", help="do not mirror training images")
    """Randomly mirror training images (both versions are encoded once at the start)."""
    seed: int = option(0, flag="--seed", help="seed of every random draw", default_text="")
    domain: str = option("", flag="--domain", help="label stored with the directions (faces, cats, ...)", default_text="")
    """Free-text label of the image domain, stored with the directions."""
    magnitude_floor: float = option(0.0, flag="--magnitude-floor", metavar="R",
                                    help="keep every direction's noise response ||eps_k - eps_0|| / ||eps_0|| above R with a "
                                         "hinge penalty (0: the paper's objective)")  # fmt: skip
    """Remedy for collapsed directions (``magnitude_hinge``); 0 is the paper's objective."""
    floor_weight: float = option(10.0, flag="--floor-weight", help="weight of the magnitude floor's hinge")
    axis_negatives: bool = option(False, flag="--axis-negatives",
                                  help="negatives by |cos|: a direction and its opposite count as one axis (the paper: signed cos)")  # fmt: skip
    """Remedy for one axis learned twice with opposite signs (:mod:`noiseclr.objective`)."""
    init: str = option("random", flag="--init", help="start rows: random (Gaussian at the typical token norm) or "
                       "tokens (real token embeddings)", choices=list(INITS))  # fmt: skip
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
        check_count(self.num_directions, flag["num_directions"], 2, "need at least 2 directions to contrast; use 2 or more.")
        if self.num_negatives is not None and not (is_whole(self.num_negatives) and 1 <= self.num_negatives < self.num_directions):
            raise NoiseCLRError(
                f"{flag['num_negatives']} {self.num_negatives}: must be between 1 and "
                f"{flag['num_directions']} - 1 = {self.num_directions - 1}."
            )
        check_count(self.batch_size, flag["batch_size"], 2, "the contrast needs at least 2 images per micro-batch; use 2 or more.")
        check_count(self.micro_batches, flag["micro_batches"], why="must be at least 1.")
        check_count(self.steps, flag["steps"], why="must be at least 1.")
        check_positive(self.lr, flag["lr"])
        check_positive(self.temperature, flag["temperature"])
        check_choice(self.loss_variant, VARIANTS, flag["loss_variant"])
        check_window(*self.timestep_range, flag["timestep_range"], of="the training timesteps")
        if not (isinstance(self.magnitude_floor, (int, float)) and 0.0 <= self.magnitude_floor < float("inf")):
            raise NoiseCLRError(f"{flag['magnitude_floor']} {self.magnitude_floor}: must be 0 (off) or a positive number, e.g. 0.05.")
        if not (isinstance(self.floor_weight, (int, float)) and 0.0 <= self.floor_weight < float("inf")):
            raise NoiseCLRError(f"{flag['floor_weight']} {self.floor_weight}: must be 0 or a positive number.")
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


@dataclass
class DiscoveryResult:
    """What :func:`discover` produced."""

    directions: Directions
    run_dir: Path
    directions_path: Path
    steps: int
    """Optimizer steps completed in total (including resumed ones)."""
    seconds: float
    """Training wall-clock time in total (including resumed sessions)."""
    final_loss: float
    """Loss of the last step (mean-normalised: 0 = no contrast, lower is better)."""
    checkpoint_path: Path | None = None
    loss_log: list[dict[str, float]] = field(default_factory=list, repr=False)
    is_main_process: bool = True
    """False on the other processes of an ``accelerate launch`` run (they write nothing; skip printing)."""

    def summary(self) -> str:
        return (
            f"{self.directions.count} directions after {self.steps} steps ({self.seconds:.1f} s, final loss "
            f"{self.final_loss:.4f}) -> {self.directions_path}; loss log {self.run_dir / 'loss.csv'}"
        )


class DiscoveryInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during discovery: a checkpoint was written; ``resume=True`` continues from it."""

    logged = True
    """The loop has logged the message (the command line prints nothing more)."""

    def __init__(self, message: str, checkpoint: Path | None, step: int, terminated: bool = False):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step
        self.terminated = terminated
        """True for SIGTERM (a scheduler or ``timeout``), False for Ctrl-C."""


# --------------------------------------------------------------------------- sampling
def _stream_seed(seed: int, stream: str) -> int:
    # Independent streams: changing e.g. hflip never shifts the noise sequence.
    digest = hashlib.sha256(f"noiseclr-discovery:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class MicroBatchDraw(NamedTuple):
    """The random choices of one micro-batch, for the whole (global) batch."""

    drawn: torch.Tensor
    """[J] direction indices; ``drawn[0]`` is the single-anchor variant's anchor."""
    timestep: int
    image_indices: torch.Tensor
    """[world_size * N] distinct image indices."""
    flips: torch.Tensor
    """[world_size * N] bool, mirror the image."""
    noise: torch.Tensor
    """[world_size * N, C, h, w] float32 on the CPU."""


class Sampler:
    """All randomness of the loop, from named CPU generators (identical on every process)."""

    def __init__(self, seed: int):
        self.generators = {name: torch.Generator().manual_seed(_stream_seed(seed, name)) for name in RNG_STREAMS}

    def draw(
        self,
        *,
        num_directions: int,
        num_drawn: int,
        timestep_bounds: tuple[int, int],
        num_images: int,
        global_batch: int,
        latent_shape: tuple[int, ...],
    ) -> MicroBatchDraw:
        g = self.generators
        drawn = torch.randperm(num_directions, generator=g["directions"])[:num_drawn]
        timestep = int(torch.randint(timestep_bounds[0], timestep_bounds[1], (1,), generator=g["timesteps"]))
        image_indices = torch.randperm(num_images, generator=g["images"])[:global_batch]
        flips = torch.rand(global_batch, generator=g["images"]) < 0.5
        noise = torch.randn((global_batch, *latent_shape), generator=g["noise"])
        return MicroBatchDraw(drawn, timestep, image_indices, flips, noise)

    def state(self) -> dict[str, torch.Tensor]:
        return {name: gen.get_state().clone() for name, gen in self.generators.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, gen in self.generators.items():
            gen.set_state(state[name].clone())


def timestep_bounds(model: DiffusionModel, timestep_range: tuple[float, float]) -> tuple[int, int]:
    """``[low, high)`` integer timesteps for fractions of the model's T training timesteps."""
    total = model.num_train_timesteps
    low = min(total - 1, int(math.floor(timestep_range[0] * total)))
    high = max(low + 1, min(total, int(math.ceil(timestep_range[1] * total))))
    return low, high


def initial_directions(model: DiffusionModel, count: int, seed: int, init: str = "random") -> torch.Tensor:
    """[count, width] starting rows.

    ``random``: Gaussian rows rescaled to the typical token-embedding norm (SDXL: per encoder part).
    ``tokens``: the embeddings of ``count`` distinct random real tokens of the vocabulary (specials
    excluded; SDXL: the same token id in both encoders), so every direction starts as a word the
    model knows and already moves the noise prediction.
    """
    generator = torch.Generator().manual_seed(_stream_seed(seed, "init"))
    if init == "random":
        rows = torch.randn((count, model.token_width), generator=generator, dtype=torch.float32)
        return model.scale_to_token_norms(rows)
    if init != "tokens":
        raise ValueError(f"unknown init {init!r}; one of {INITS}")
    tables = [encoder.get_input_embeddings().weight.detach().float().cpu() for encoder, _ in model.encoders]
    vocab = min(table.shape[0] for table in tables)
    special = {model.tokenizer.bos_token_id, model.tokenizer.eos_token_id, model.tokenizer.pad_token_id}
    candidates = torch.tensor([i for i in range(vocab) if i not in special])
    if count > len(candidates):
        raise NoiseCLRError(f"--init tokens: {count} directions but only {len(candidates)} real tokens; use --init random.")
    ids = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    return torch.cat([table[ids] for table in tables], dim=1)


# ------------------------------------------------------------------- the objective
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
    """``mean_j max(0, floor - response_j)``: zero once every drawn direction changes the noise
    prediction by at least ``floor`` (relative), so the contrastive loss cannot buy its
    normalised separation with directions that barely act."""
    return torch.relu(floor - response).mean()


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
) -> MicroBatchLoss:
    """The loss of one micro-batch: N local images, J drawn directions, one timestep.

    ``latents`` and ``noise`` are this process's [N, C, h, w]; ``gather`` turns the local
    [J, N, F] features into the global batch (see :class:`Processes`), identity by default.
    With ``magnitude_floor > 0`` the loss adds ``floor_weight * magnitude_hinge`` (this process's
    images; the paper's objective has none).
    """
    features, response = delta_and_response(model, direction_vectors, latents, timestep, noise, drawn)
    if gather is not None:
        features = gather(features)
    loss = contrastive_loss(features, temperature, variant, axis_negatives)
    if magnitude_floor > 0 and floor_weight > 0:
        loss = loss + floor_weight * magnitude_hinge(response, magnitude_floor)
    return MicroBatchLoss(loss, features, response.detach())


# ----------------------------------------------------------------- helpers
def _loss_csv(rows: list[dict[str, float]]) -> str:
    out = io.StringIO()
    columns = ["step", "loss", "seconds", "delta_abs_cos", "vector_abs_cos", "response_mean", "response_min"]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in columns if k in row})
    return out.getvalue()


def _responses_csv(rows: list[dict[str, Any]]) -> str:
    """step, direction, response (last time drawn), conditioning_change: one row per direction and log step."""
    out = io.StringIO()
    out.write("step,direction,response,conditioning_change\n")
    for row in rows:
        for k, (response, change) in enumerate(zip(row["response"], row["conditioning_change"])):
            out.write(f"{row['step']},{k},{response:.6g},{change:.6g}\n")
    return out.getvalue()


def _prepare_pixels(
    images: str | Path | ImageSet | torch.Tensor, model: DiffusionModel, needed: int, flag: str, max_pixels: int
) -> tuple[torch.Tensor, str]:
    """Pixels [M, 3, S, S] in [-1, 1] and a description of where they came from."""
    if isinstance(images, (str, Path)):
        image_set = load_image_folder(images, model.resolution, min_count=needed, flag=flag, max_pixels=max_pixels)
        return image_set.pixels, str(images)
    if isinstance(images, ImageSet):
        pixels, source = images.pixels, f"{len(images)} images"
    elif isinstance(images, torch.Tensor):
        pixels, source = images, "tensor"
    else:
        raise TypeError(f"images must be a folder, an ImageSet or a tensor, not {type(images).__name__}")
    size = model.resolution
    if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (size, size):
        raise NoiseCLRError(
            f"{flag}: images must be [M, 3, {size}, {size}] for model {model.name}, got {tuple(pixels.shape)}; "
            "load them with noiseclr.images.load_image_folder."
        )
    if pixels.shape[0] < needed:
        raise NoiseCLRError(f"{flag}: only {pixels.shape[0]} image(s), need at least {needed}; add images or lower --batch.")
    return pixels, source


def _encode_latent_cache(model: DiffusionModel, pixels: torch.Tensor, hflip: bool, procs: Processes) -> torch.Tensor:
    """[V, M, C, h, w] latents of every image (V=2 with its mirror image), encoded once.

    With several processes each encodes a share and the shares are gathered.
    """
    variants = [pixels, pixels.flip(-1)] if hflip else [pixels]
    stacked = torch.cat(variants)  # [V*M, 3, S, S]
    total = stacked.shape[0]
    share = math.ceil(total / procs.size)
    start = min(total, procs.rank * share)
    mine = stacked[start : start + share]
    if mine.shape[0] < share:  # equal shapes for gather: pad with copies of the first image
        mine = torch.cat([mine, stacked[:1].expand(share - mine.shape[0], *stacked.shape[1:])])
    latents = procs.gather_rows(model.encode_images(mine))[:total]
    return latents.view(len(variants), pixels.shape[0], *latents.shape[1:])


def _check_resume(
    ckpt: DiscoveryCheckpoint,
    model: DiffusionModel,
    settings: DiscoverySettings,
    num_images: int,
    global_batch: int,
    images: dict[str, str] | None = None,
    image_source: str = "",
) -> None:
    where = ckpt.path
    count = int(ckpt.directions.shape[0])
    if count != settings.num_directions:
        raise NoiseCLRError(
            f"{where}: the run has {count} directions but {flag(DiscoverySettings, 'num_directions')} is {settings.num_directions}; "
            f"pass {flag(DiscoverySettings, 'num_directions')} {count} to resume it, or pick another --out folder."
        )
    made_with = ckpt.meta.get("model", "another model")
    fingerprint = json.loads(ckpt.meta.get("fingerprint") or "{}")
    if int(ckpt.directions.shape[1]) != model.token_width or not fingerprints_match(fingerprint, model.fingerprint()):
        raise NoiseCLRError(
            f"{where}: the run was made with model {made_with}, not {model.name}; "
            f"resume with --model {made_with} or pick another --out folder."
        )
    used = int(ckpt.meta.get("num_images", "-1"))
    if used != num_images:
        raise NoiseCLRError(
            f"{where}: the run used {used} images but --images now has {num_images}; "
            "resume with the same images or pick another --out folder."
        )
    changed = []
    if images is not None:
        recorded = ckpt.meta.get("images_sha256")
        if recorded is None:
            log.info("%s predates image fingerprints; cannot check that --images holds the same images", where)
        elif recorded != images["sha256"]:
            named = f"--images {image_source}" if image_source not in ("", "tensor") else "--images"
            run = where.parent.parent if where is not None else "this folder"
            raise NoiseCLRError(
                f"{named}: not the images the run in {run} was trained on (same count, different pixels); "
                "resume with those images or pick another --out folder."
            )
        elif ckpt.meta.get("images_order_sha256") != images["order_sha256"]:
            changed.append("image order")
    before = DiscoverySettings.from_json(json.loads(ckpt.meta.get("settings") or "{}"))
    changed += changed_trajectory(before, settings)
    if int(ckpt.meta.get("global_batch", global_batch)) != global_batch:
        changed.append("batch size x processes")
    if changed:
        log.warning("resuming %s with changed settings (%s); the run will not match an uninterrupted one", where, ", ".join(changed))


TRAJECTORY = (
    "num_negatives", "micro_batches", "temperature", "loss_variant", "seed", "hflip", "timestep_range", "lr", "betas",
    "weight_decay", "magnitude_floor", "floor_weight", "init", "axis_negatives",
)  # fmt: skip
"""Settings that change what a run learns (besides K, N and the step count)."""


def changed_trajectory(before: DiscoverySettings, now: DiscoverySettings) -> list[str]:
    """The :data:`TRAJECTORY` settings that differ between two runs."""
    return [name for name in TRAJECTORY if getattr(before, name) != getattr(now, name)]


def run_settings(run: str | Path) -> DiscoverySettings | None:
    """The settings a run folder was made with (None if it holds no run)."""
    path = Path(run) / "settings.json"
    try:
        return DiscoverySettings.from_json(json.loads(path.read_text())["settings"])
    except (OSError, KeyError, json.JSONDecodeError, TypeError):
        return None


def finished_run(run: str | Path, settings: DiscoverySettings, images: torch.Tensor | None = None) -> Directions | None:
    """The directions of a finished run in ``run`` if it ran exactly ``settings.steps`` steps with
    ``settings.num_directions`` directions (and, given ``images`` [M, 3, S, S], on those images);
    None otherwise (then :func:`discover` with ``resume`` continues or extends it, or refuses it)."""
    run = Path(run)
    summary, path = run / "summary.json", run / "directions.safetensors"
    if not (summary.is_file() and path.is_file()):
        return None
    try:
        done = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if int(done.get("steps", -1)) != settings.steps or int(done.get("num_directions", -1)) != settings.num_directions:
        return None
    before = run_settings(run)
    if before is None or changed_trajectory(before, settings):
        return None
    if images is not None and done.get("images_sha256") not in (None, image_fingerprint(images)["sha256"]):
        return None
    log.info("reusing the finished discovery run %s", run)
    return Directions.load(path)


# ------------------------------------------------------------------------ discover
def discover(
    model: DiffusionModel | str,
    images: str | Path | ImageSet | torch.Tensor,
    out: str | Path,
    settings: DiscoverySettings | None = None,
    *,
    runtime: RuntimeSettings | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> DiscoveryResult:
    """Discover ``settings.num_directions`` edit directions from a folder of images.

    ``model``: a :class:`DiffusionModel` or a name for :meth:`DiffusionModel.load` (loaded on
    ``runtime.device`` / ``runtime.dtype``; ``runtime`` also applies its speed-ups to a given model). ``images``: a folder, an
    :class:`~noiseclr.images.ImageSet` or pixels [M, 3, S, S] in [-1, 1]. ``out``: the run
    folder (see the module docstring). ``resume``: continue from the latest checkpoint in
    ``out``. ``callback``: called after every optimizer step with a dict (``step``, ``loss``,
    ``seconds``, ``delta_abs_cos``, ``vector_abs_cos``, ``anchors`` = directions that got a
    positive-pair term, ``vectors`` = the current [K, W] directions, detached).

    Works unchanged under ``accelerate launch`` (several processes/GPUs/nodes): only the main
    process writes files. Ctrl-C writes a checkpoint and raises :class:`DiscoveryInterrupted`.
    """
    settings = (settings or DiscoverySettings()).validate()
    runtime = (runtime or RuntimeSettings()).validate()
    procs = Processes.detect(runtime.device)
    run_dir = Path(out)
    # Everything the user can get wrong is checked before the model loads, and --out is created
    # only after every check: a failed command leaves no empty folder behind.
    check_output_dir(run_dir, "--out")
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise NoiseCLRError(
            f"--out {run_dir}: already holds a discovery run (checkpoint {existing[-1][1].name}); "
            "pass --resume to continue it or pick another folder."
        )
    global_batch = settings.batch_size * procs.size
    if isinstance(images, (str, Path)):
        check_image_folder(images, min_count=global_batch, flag="--images", max_pixels=runtime.max_pixels)
    checkpoint, unreadable = latest_checkpoint(run_dir) if resume else (None, [])
    if checkpoint is None and unreadable:
        _refuse_unreadable(run_dir, unreadable)

    if isinstance(model, (str, os.PathLike)):
        device: Any = runtime.device
        dtype: Any = runtime.dtype
        if procs.size > 1 and str(device) in ("auto", "cuda"):
            device = procs.device
        if procs.size > 1 and dtype == "auto" and procs.mixed_precision in ("fp16", "bf16"):
            dtype = procs.mixed_precision
        runtime.apply_threads()
        model = DiffusionModel.load(str(model), device=device, dtype=dtype)
    runtime.apply(model)

    if global_batch > settings.batch_size:
        log.info(
            "%d processes x %s %d = %d images per micro-batch",
            procs.size, flag(DiscoverySettings, "batch_size"), settings.batch_size, global_batch,
        )  # fmt: skip
    pixels, image_source = _prepare_pixels(images, model, global_batch, "--images", runtime.max_pixels)
    num_images = int(pixels.shape[0])
    fingerprint = image_fingerprint(pixels)

    if resume and checkpoint is None:
        log.info("--resume: no checkpoint in %s; starting a new run", run_dir)
    if checkpoint is not None:
        _check_resume(checkpoint, model, settings, num_images, global_batch, fingerprint, image_source)
        if checkpoint.step > settings.steps:
            # Training cannot be undone: keep the longer run, and record what it is.
            log.warning(
                "%s %d: the run in %s already has %d steps; nothing to train, returning its directions after "
                "%d steps (for a %d-step run, start one in another --out folder)",
                flag(DiscoverySettings, "steps"), settings.steps, run_dir, checkpoint.step,
                checkpoint.step, settings.steps,
            )  # fmt: skip
            settings = replace(settings, steps=checkpoint.step)

    ensure_output_dir(run_dir, "--out")
    if procs.is_main:
        _set_aside(unreadable)
    trainer = _Trainer(model, settings, procs, run_dir, num_images, global_batch, fingerprint)
    if procs.is_main:
        atomic_write_json(
            run_dir / "settings.json",
            {
                "settings": settings.to_json(),
                "runtime": asdict(runtime),
                "model": model.describe(),
                "images": {"source": image_source, "count": num_images, **fingerprint},
                "world_size": procs.size,
                "global_batch": global_batch,
                "resumed_from": str(checkpoint.path) if checkpoint is not None else None,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
    trainer.latents = _encode_latent_cache(model, pixels, settings.hflip, procs)
    del pixels
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer.run(progress=progress, callback=callback)


def _refuse_unreadable(run_dir: Path, unreadable: list[tuple[Path, str]]) -> None:
    """--resume with no readable checkpoint: stop rather than silently start over (and later rotate
    the user's files away)."""
    folder = checkpoint_dir(run_dir)
    names = ", ".join(path.name for path, _ in unreadable)
    newer = any("newer noiseclr" in problem for _, problem in unreadable)
    raise NoiseCLRError(
        f"--resume: no checkpoint in {folder} can be read ({names}: {unreadable[0][1]}); "
        + ("upgrade noiseclr to resume the run, or " if newer else "")
        + f"move those files out of {folder} to start the run over, or pick another --out folder."
    )


def _set_aside(unreadable: list[tuple[Path, str]]) -> None:
    """Rename unreadable checkpoints newer than the resumed one, which the resumed run would
    overwrite when it reaches their step: they are kept, never deleted."""
    for path, problem in unreadable:
        kept = path.with_name(path.name + ".unreadable")
        suffix = 1
        while kept.exists():
            kept, suffix = path.with_name(f"{path.name}.unreadable-{suffix}"), suffix + 1
        path.replace(kept)
        log.warning("kept the unreadable checkpoint %s as %s (%s)", path, kept.name, problem)


class _Trainer:
    """The state of one discovery run and its loop (internal; use :func:`discover`)."""

    def __init__(
        self,
        model: DiffusionModel,
        settings: DiscoverySettings,
        procs: Processes,
        run_dir: Path,
        num_images: int,
        global_batch: int,
        images: dict[str, str] | None = None,
    ):
        self.model = model
        self.settings = settings
        self.procs = procs
        self.run_dir = run_dir
        self.num_images = num_images
        self.global_batch = global_batch
        self.images = images or {}
        """:func:`noiseclr.images.image_fingerprint` of the training images."""
        self.latents: torch.Tensor | None = None
        self.bounds = timestep_bounds(model, settings.timestep_range)
        self.sampler = Sampler(settings.seed)
        # Master weights in float32 whatever the model's dtype.
        init = initial_directions(model, settings.num_directions, settings.seed, settings.init)
        self.vectors = torch.nn.Parameter(init.to(model.device))
        self.optimizer = torch.optim.AdamW(
            [self.vectors], lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay
        )
        self.step = 0
        self.seconds = 0.0
        self.loss_log: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        # Each direction's response the last time it was drawn (NaN until then) and its conditioning
        # change, logged every log_every steps to RUN/responses.csv: how collapse shows.
        self.last_response = torch.full((settings.num_directions,), float("nan"))
        self.response_log: list[dict[str, Any]] = []
        self.removable: set[Path] = set()
        """Checkpoints rotation may delete: written by this run, or read by it."""
        self.kept_unreadable: set[Path] = set()

    # -------------------------------------------------------------- state
    def restore(self, ckpt: DiscoveryCheckpoint) -> None:
        with torch.no_grad():
            self.vectors.copy_(ckpt.directions.to(self.vectors.device))
        if ckpt.optimizer:
            ckpt.restore_optimizer(self.optimizer)
        self.sampler.load_state(ckpt.rng)
        self.step = ckpt.step
        self.seconds = ckpt.seconds
        self.loss_log = list(ckpt.loss_log)[: ckpt.step]
        responses = json.loads(ckpt.meta.get("response_log") or "[]")
        self.response_log = [row for row in responses if row["step"] <= ckpt.step]
        if self.response_log:
            self.last_response = torch.tensor(self.response_log[-1]["response"], dtype=torch.float32)
        self.last_checkpoint = ckpt.path
        if ckpt.path is not None:
            self.removable.add(ckpt.path)
        log.info("resuming %s at step %d", ckpt.path, ckpt.step)

    def checkpoint_meta(self) -> dict[str, Any]:
        meta = {
            "model": self.model.name,
            "fingerprint": self.model.fingerprint(),
            "num_images": str(self.num_images),
            "world_size": str(self.procs.size),
            "global_batch": str(self.global_batch),
            "settings": self.settings.to_json(),
            "response_log": self.response_log,
        }
        if self.images:
            meta.update(images_sha256=self.images["sha256"], images_order_sha256=self.images["order_sha256"])
        return meta

    def _checkpoint_name(self) -> str:
        return f"step-{self.step:06d}.safetensors"

    def save_checkpoint(self, rng: dict[str, torch.Tensor]) -> Path:
        """Write the state after ``self.step`` steps (main process) and prune old ones."""
        path = checkpoint_dir(self.run_dir) / self._checkpoint_name()
        self.last_checkpoint = path
        if not self.procs.is_main:
            return path
        DiscoveryCheckpoint.of(
            self.optimizer,
            step=self.step,
            directions=self.vectors.detach(),
            rng=rng,
            seconds=self.seconds,
            loss_log=self.loss_log,
            meta=self.checkpoint_meta(),
        ).save(path)
        self.removable.add(path)
        self.rotate()
        self.write_loss_csv()
        return path

    def rotate(self) -> None:
        """Delete all but the latest ``keep_checkpoints``, but only files this run wrote or could
        read: a checkpoint that cannot be read may still be someone's only copy of a run."""
        for _, old in list_checkpoints(self.run_dir)[: -self.settings.keep_checkpoints]:
            if old in self.removable or (old not in self.kept_unreadable and is_readable_checkpoint(old)):
                old.unlink(missing_ok=True)
                self.removable.discard(old)
            elif old not in self.kept_unreadable:
                self.kept_unreadable.add(old)
                log.warning("kept the unreadable checkpoint %s (rotation deletes only checkpoints it can read)", old)

    def write_loss_csv(self) -> None:
        if self.procs.is_main:
            atomic_write_text(self.run_dir / "loss.csv", _loss_csv(self.loss_log))
            atomic_write_text(self.run_dir / "responses.csv", _responses_csv(self.response_log))

    @torch.no_grad()
    def log_responses(self) -> None:
        """Per direction: last seen noise response, and the conditioning change ``||c_k - c_0|| / ||c_0||``."""
        null = self.model.null_conditioning().float()
        conditionings = self.model.encode_directions(self.vectors.detach()).float()
        change = (conditionings - null).flatten(1).norm(dim=1) / null.flatten().norm().clamp_min(1e-30)
        self.response_log.append({
            "step": self.step,
            "response": [round(float(v), 6) for v in self.last_response],
            "conditioning_change": [round(float(v), 6) for v in change.cpu()],
        })  # fmt: skip

    # --------------------------------------------------------------- loop
    def one_step(self) -> dict[str, Any]:
        """Accumulate ``micro_batches`` micro-batches and take one AdamW step (not applied yet)."""
        settings, model, procs = self.settings, self.model, self.procs
        assert self.latents is not None
        latent_shape = tuple(self.latents.shape[2:])
        rank_slice = slice(procs.rank * settings.batch_size, (procs.rank + 1) * settings.batch_size)
        losses, diversity, anchors, responses = [], [], set(), []
        for _ in range(settings.micro_batches):
            draw = self.sampler.draw(
                num_directions=settings.num_directions,
                num_drawn=settings.negatives + 1,
                timestep_bounds=self.bounds,
                num_images=self.num_images,
                global_batch=self.global_batch,
                latent_shape=latent_shape,
            )
            indices = draw.image_indices[rank_slice]
            flips = draw.flips[rank_slice] if settings.hflip else torch.zeros_like(indices, dtype=torch.bool)
            latents = self.latents[flips.long().to(self.latents.device), indices.to(self.latents.device)]
            noise = draw.noise[rank_slice].to(latents.device)
            result = micro_batch_loss(
                model,
                self.vectors,
                latents,
                draw.timestep,
                noise,
                draw.drawn,
                variant=settings.loss_variant,
                temperature=settings.temperature,
                gather=procs.gather_features,
                magnitude_floor=settings.magnitude_floor,
                floor_weight=settings.floor_weight,
                axis_negatives=settings.axis_negatives,
            )
            responses.append(result.response)
            self.last_response[draw.drawn] = result.response.to(self.last_response)
            # NaN/inf is checked once per step (one device sync); a NaN loss only poisons the grad.
            (result.loss / settings.micro_batches).backward()
            losses.append(result.loss.detach())
            diversity.append(mean_negative_abs_cos(result.features))
            anchors.update(draw.drawn[:1].tolist() if settings.loss_variant == "single-anchor" else draw.drawn.tolist())
        loss_values = torch.stack(losses)
        grad = self.vectors.grad
        if grad is not None and procs.size > 1:
            grad.copy_(procs.sum_(grad))
        finite = torch.isfinite(loss_values).all()
        if grad is not None:
            finite = finite & torch.isfinite(grad).all()
        if not bool(finite):
            bad = [float(v) for v in loss_values.tolist() if not math.isfinite(v)]
            return {"diverged": f"the loss became {bad[0]}" if bad else "the gradient became nan or inf"}
        drawn_response = torch.cat(responses)
        return {
            "loss": float(loss_values.double().mean()),
            "delta_abs_cos": float(torch.stack(diversity).mean()),
            "response_mean": float(drawn_response.mean()),
            "response_min": float(drawn_response.min()),
            "anchors": sorted(anchors),
        }

    def diverged(self, what: str) -> TrainingDiverged:
        last = self.last_checkpoint
        kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written yet"
        return TrainingDiverged(
            f"step {self.step + 1}: {what} (training diverged); stopped, {kept}. "
            f"Try a lower --lr (now {self.settings.lr:g}) or --dtype float32, then --resume."
        )

    def run(self, *, progress: bool, callback: Callable[[dict[str, Any]], None] | None) -> DiscoveryResult:
        from tqdm.auto import tqdm

        settings = self.settings
        self.rng_at_step = self.sampler.state()
        bar = tqdm(
            total=settings.steps,
            initial=min(self.step, settings.steps),
            desc="discovering directions",
            unit="step",
            disable=not (progress and self.procs.is_main),
            dynamic_ncols=True,
        )
        try:
            with terminate_as_interrupt():
                self._loop(bar, callback)
        except KeyboardInterrupt as interrupt:
            if isinstance(interrupt, DiscoveryInterrupted):
                raise
            bar.close()
            self.optimizer.zero_grad(set_to_none=True)
            path = self.last_checkpoint
            if self.step > 0 and (path is None or path.name != self._checkpoint_name()):
                path = self.save_checkpoint(self.rng_at_step)
            terminated = isinstance(interrupt, Terminated)
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            message = (
                f"{what} after step {self.step}; checkpoint {path}; continue with --resume."
                if path is not None
                else f"{what} after step {self.step}; nothing to save yet."
            )
            if self.procs.is_main:
                log.warning(message)
            raise DiscoveryInterrupted(message, path, self.step, terminated) from None
        finally:
            bar.close()
        return self.finish(self.rng_at_step)

    def _loop(self, bar: Any, callback: Callable[[dict[str, Any]], None] | None) -> None:
        settings = self.settings
        while self.step < settings.steps:
            started = time.perf_counter()
            outcome = self.one_step()
            if "diverged" in outcome:
                self.optimizer.zero_grad(set_to_none=True)
                self.write_loss_csv()
                raise self.diverged(outcome["diverged"])
            with hold_interrupts():
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.seconds += time.perf_counter() - started
                row = {
                    "step": self.step,
                    "loss": outcome["loss"],
                    "seconds": round(self.seconds, 3),
                    "delta_abs_cos": outcome["delta_abs_cos"],
                    "vector_abs_cos": mean_vector_abs_cos(self.vectors),
                    "response_mean": outcome["response_mean"],
                    "response_min": outcome["response_min"],
                }
                self.loss_log.append(row)
                self.rng_at_step = self.sampler.state()
            bar.update(1)
            bar.set_postfix(loss=f"{outcome['loss']:.4f}")
            if callback is not None:
                callback({**row, "anchors": outcome["anchors"], "vectors": self.vectors.detach()})
            every = settings.checkpoint_every
            if self.step % max(1, settings.log_every) == 0 or self.step == settings.steps:
                self.log_responses()
            if self.step < settings.steps and every and self.step % every == 0:
                with hold_interrupts():
                    self.save_checkpoint(self.rng_at_step)
            elif self.step % max(1, settings.log_every) == 0:
                self.write_loss_csv()

    def finish(self, rng: dict[str, torch.Tensor]) -> DiscoveryResult:
        from .strength import calibrate

        settings = self.settings
        calibration = None
        if self.procs.is_main:
            # Each direction's response on the discovery images: what makes strengths comparable.
            assert self.latents is not None
            calibration = calibrate(
                self.model, Directions(vectors=self.vectors.detach()), self.latents[0],
                timestep_range=settings.timestep_range, seed=settings.seed, source="end of discovery",
            )  # fmt: skip
        directions = Directions.for_model(
            self.model,
            self.vectors.detach(),
            names=list(settings.names) if settings.names else None,
            domain=settings.domain,
            settings={
                **settings.to_json(),
                "steps_done": self.step,
                "num_images": self.num_images,
                "world_size": self.procs.size,
                "global_batch": self.global_batch,
            },
            calibration=calibration,
        )
        directions_path = self.run_dir / "directions.safetensors"
        final_loss = float(self.loss_log[-1]["loss"]) if self.loss_log else float("nan")
        if self.last_checkpoint is None or self.last_checkpoint.name != self._checkpoint_name():
            self.save_checkpoint(rng)  # lets a later run extend --steps with --resume
        else:
            self.write_loss_csv()
        if self.procs.is_main:
            directions.save(directions_path)
            atomic_write_json(
                self.run_dir / "summary.json",
                {
                    "directions": str(directions_path),
                    "loss_csv": str(self.run_dir / "loss.csv"),
                    "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                    "steps": self.step,
                    "seconds": round(self.seconds, 3),
                    "final_loss": final_loss,
                    "num_directions": settings.num_directions,
                    "num_images": self.num_images,
                    "images_sha256": self.images.get("sha256"),
                    "world_size": self.procs.size,
                    "model": self.model.name,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
            )
        self.procs.barrier()
        result = DiscoveryResult(
            directions=directions,
            run_dir=self.run_dir,
            directions_path=directions_path,
            steps=self.step,
            seconds=self.seconds,
            final_loss=final_loss,
            checkpoint_path=self.last_checkpoint,
            loss_log=list(self.loss_log),
            is_main_process=self.procs.is_main,
        )
        if self.procs.is_main:
            log.info(result.summary())
        return result
