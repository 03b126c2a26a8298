"""Text-free discovery of edit directions (NoiseCLR training loop).

A direction is one token embedding ``d_k`` fed through the frozen text encoder as
``[BOS, d_k, EOS, pad...]``; only the K direction rows are trained, with the contrastive loss of
:mod:`noiseclr.objective` (the micro-batch loss lives there too). The run folder, the checkpoint
format and the resume rules (:mod:`noiseclr.runfolder`) are specified in ``docs/discovery.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import runfolder
from .checkpoint import DiscoveryCheckpoint, checkpoint_dir
from .directions import Directions
from .discovery_draws import (  # noqa: F401 (re-exported)
    RNG_STREAMS,
    MicroBatchDraw,
    Sampler,
    initial_directions,
    stream_seed,
    timestep_bounds,
)
from .discovery_settings import INITS, RESEED_EVERY, TRAJECTORY, DiscoverySettings, changed_trajectory  # noqa: F401 (re-exported)
from .errors import NoiseCLRError, TrainingDiverged
from .fileio import atomic_write_json, ensure_output_dir
from .images import ImageSet, check_image_folder, image_fingerprint, load_image_folder
from .interrupts import Terminated, hold_interrupts, terminate_as_interrupt
from .model import DiffusionModel
from .objective import (  # noqa: F401 (the micro-batch names are re-exported)
    DEFAULT_VARIANT,
    MicroBatchLoss,
    delta_and_response,
    delta_features,
    magnitude_hinge,
    mean_negative_abs_cos,
    mean_vector_abs_cos,
    micro_batch_loss,
)
from .options import flag
from .processes import Processes
from .reseeding import restart_duplicates
from .runfolder import finished_run, run_settings  # noqa: F401 (re-exported)
from .runtime import RuntimeSettings

log = logging.getLogger("noiseclr")


# --------------------------------------------------------------------------- results
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


# ------------------------------------------------------------------------ images
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
        raise NoiseCLRError(
            f"{flag}: only {pixels.shape[0]} image(s), need at least {needed}; add images or lower --batch."
        )
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
    folder (see ``docs/discovery.md``). ``resume``: continue from the latest checkpoint in
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
    global_batch = settings.batch_size * procs.size
    # Everything the user can get wrong is checked before the model loads, and --out is created
    # only after every check: a failed command leaves no empty folder behind.
    runfolder.check_run_folder(run_dir, resume)
    if isinstance(images, (str, Path)):
        check_image_folder(images, min_count=global_batch, flag="--images", max_pixels=runtime.max_pixels)
    checkpoint, unreadable = runfolder.resume_point(run_dir, resume)
    model = _load_model(model, runtime, procs)
    _log_global_batch(settings, global_batch)
    pixels, image_source = _prepare_pixels(images, model, global_batch, "--images", runtime.max_pixels)
    fingerprint = image_fingerprint(pixels)
    settings = _check_resumed(
        checkpoint, resume, model, settings, run_dir, pixels, global_batch, fingerprint, image_source
    )
    ensure_output_dir(run_dir, "--out")
    if procs.is_main:
        runfolder.set_aside(unreadable)
    start = initial_directions(model, settings.num_directions, settings.seed, settings.init)
    if procs.is_main:
        _record_start(
            run_dir,
            settings,
            runtime,
            model,
            procs,
            global_batch,
            checkpoint,
            {"source": image_source, "count": int(pixels.shape[0]), **fingerprint},
        )
    latents = _encode_latent_cache(model, pixels, settings.hflip, procs)
    del pixels
    trainer = _Trainer(model, settings, procs, run_dir, latents, start, global_batch, fingerprint)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer.run(progress=progress, callback=callback)


def _load_model(model: DiffusionModel | str, runtime: RuntimeSettings, procs: Processes) -> DiffusionModel:
    """A given model gets the runtime's speed-ups; a name loads through :meth:`RuntimeSettings.load`,
    under ``accelerate launch`` on this process's device and mixed precision."""
    if not isinstance(model, (str, os.PathLike)):
        return runtime.apply(model)
    device, dtype = runtime.device, runtime.dtype
    if procs.size > 1 and str(device) in ("auto", "cuda"):
        device = procs.device
    if procs.size > 1 and dtype == "auto" and procs.mixed_precision in ("fp16", "bf16"):
        dtype = procs.mixed_precision
    return replace(runtime, device=device, dtype=dtype).load(str(model))


def _log_global_batch(settings: DiscoverySettings, global_batch: int) -> None:
    if global_batch > settings.batch_size:
        log.info(
            "%d processes x %s %d = %d images per micro-batch",
            global_batch // settings.batch_size,
            flag(DiscoverySettings, "batch_size"),
            settings.batch_size,
            global_batch,
        )


def _check_resumed(
    checkpoint: DiscoveryCheckpoint | None,
    resume: bool,
    model: DiffusionModel,
    settings: DiscoverySettings,
    run_dir: Path,
    pixels: torch.Tensor,
    global_batch: int,
    fingerprint: dict[str, str],
    image_source: str,
) -> DiscoverySettings:
    """Refuse a checkpoint the run cannot continue; the settings to run with (a longer run keeps its steps)."""
    if resume and checkpoint is None:
        log.info("--resume: no checkpoint in %s; starting a new run", run_dir)
    if checkpoint is None:
        return settings
    runfolder.check_resume(checkpoint, model, settings, int(pixels.shape[0]), global_batch, fingerprint, image_source)
    if checkpoint.step <= settings.steps:
        return settings
    # Training cannot be undone: keep the longer run, and record what it is.
    log.warning(
        "%s %d: the run in %s already has %d steps; nothing to train, returning its directions after "
        "%d steps (for a %d-step run, start one in another --out folder)",
        flag(DiscoverySettings, "steps"),
        settings.steps,
        run_dir,
        checkpoint.step,
        checkpoint.step,
        settings.steps,
    )
    return replace(settings, steps=checkpoint.step)


def _record_start(
    run_dir: Path,
    settings: DiscoverySettings,
    runtime: RuntimeSettings,
    model: DiffusionModel,
    procs: Processes,
    global_batch: int,
    checkpoint: DiscoveryCheckpoint | None,
    images: dict[str, Any],
) -> None:
    """RUN/settings.json: what the run (or this session of it) started with."""
    atomic_write_json(
        run_dir / "settings.json",
        {
            "settings": settings.to_json(),
            "runtime": asdict(runtime),
            "model": model.describe(),
            "images": images,
            "world_size": procs.size,
            "global_batch": global_batch,
            "resumed_from": str(checkpoint.path) if checkpoint is not None else None,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


class _Trainer:
    """The state of one discovery run and its loop (internal; use :func:`discover`)."""

    def __init__(
        self,
        model: DiffusionModel,
        settings: DiscoverySettings,
        procs: Processes,
        run_dir: Path,
        latents: torch.Tensor,
        start: torch.Tensor,
        global_batch: int,
        images: dict[str, str] | None = None,
    ):
        self.model = model
        self.settings = settings
        self.procs = procs
        self.run_dir = run_dir
        self.latents = latents
        """[V, M, C, h, w] latents of the training images (:func:`_encode_latent_cache`)."""
        self.num_images = int(latents.shape[1])
        self.global_batch = global_batch
        self.images = images or {}
        """:func:`noiseclr.images.image_fingerprint` of the training images."""
        self.bounds = timestep_bounds(model, settings.timestep_range)
        self.sampler = Sampler(settings.seed)
        # Master weights in float32 whatever the model's dtype; ``start`` from :func:`initial_directions`.
        self.vectors = torch.nn.Parameter(start.to(model.device))
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
        return runfolder.checkpoint_name(self.step)

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
        runfolder.rotate(self.run_dir, self.settings.keep_checkpoints, self.removable, self.kept_unreadable)
        self.write_loss_csv()
        return path

    def write_loss_csv(self) -> None:
        if self.procs.is_main:
            runfolder.write_logs(self.run_dir, self.loss_log, self.response_log)

    @torch.no_grad()
    def log_responses(self) -> None:
        """Per direction: last seen noise response, and the conditioning change ``||c_k - c_0|| / ||c_0||``."""
        null = self.model.null_conditioning().float()
        conditionings = self.model.encode_directions(self.vectors.detach()).float()
        change = (conditionings - null).flatten(1).norm(dim=1) / null.flatten().norm().clamp_min(1e-30)
        self.response_log.append(
            {
                "step": self.step,
                "response": [round(float(v), 6) for v in self.last_response],
                "conditioning_change": [round(float(v), 6) for v in change.cpu()],
            }
        )

    # --------------------------------------------------------------- loop
    def one_step(self) -> dict[str, Any]:
        """Accumulate ``micro_batches`` micro-batches and take one AdamW step (not applied yet)."""
        settings, model, procs = self.settings, self.model, self.procs
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
                diversity_weight=settings.diversity_weight,
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

    def reseed_duplicates(self) -> int | None:
        """``--reseed-duplicates`` every :data:`RESEED_EVERY` steps (:func:`reseeding.restart_duplicates`);
        how many directions restarted, None when no check ran."""
        threshold, step = self.settings.reseed_duplicates, self.step
        if threshold <= 0 or step % RESEED_EVERY or step >= self.settings.steps:
            return None
        seed = self.settings.seed
        return restart_duplicates(
            self.model,
            self.vectors,
            self.optimizer,
            self.latents[0],
            threshold,
            self.settings.timestep_range,
            seed=seed,
            step=step,
            stream_seed=lambda stream: stream_seed(seed, stream),
        )

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
                reseeded = self.reseed_duplicates()
                if reseeded is not None:
                    row["reseeded"] = reseeded
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
            calibration = calibrate(
                self.model,
                Directions(vectors=self.vectors.detach()),
                self.latents[0],
                timestep_range=settings.timestep_range,
                seed=settings.seed,
                source="end of discovery",
            )
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
