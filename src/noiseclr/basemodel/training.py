"""Training the embedded base model from scratch on the procedural world.

Four stages, each resumable and deterministic in its seed (every step derives its randomness
from ``(seed, step)``, so a run cut into pieces equals an uninterrupted one):

1. ``tokenizer``: CLIP BPE files learned from the caption grammar;
2. ``vae``: ``AutoencoderKL`` on fresh renders of all domains (L1 + MSE + a tiny KL, as SD's
   autoencoder minus the perceptual and GAN terms, which flat cartoon images do not need);
   trained on random crops because it is fully convolutional and crops are 4x cheaper;
3. ``pool``: a fixed pool of renders encoded once to latents (posterior mean); the latent
   scaling factor is set to 1/std of those latents, as Stable Diffusion did;
4. ``diffusion``: ``UNet2DConditionModel`` and ``CLIPTextModel`` trained jointly from scratch
   on epsilon prediction with min-SNR weighting; captions are re-drawn from the labels at every
   step (about 10% empty, which teaches the null conditioning); EMA weights are kept.

``export`` writes the EMA pipeline in fp16 to a diffusers folder (``save_pretrained``) and a
training record beside it (``<folder>.training.json``: steps, images seen, recipe).
Each call can be time-boxed (``minutes``): it checkpoints and returns, and the next call goes on.

``warm_start`` seeds an empty work folder from a trained model folder (the shipped one), so
training goes on in a fresh session without the 230 MB of state that ``work/`` held: tokenizer
and VAE are copied, the pool is re-encoded with that VAE and its scaling factor, UNet and text
encoder start from the folder's weights (online and EMA alike) with a new optimizer and a new
LR warm-up. UNet blocks the folder lacks (an architecture that grew) start as the identity.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..architecture import PipelineSpec, load_clip_tokenizer
from ..checkpoint import (
    load_checkpoint,
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    save_checkpoint,
)
from ..fileio import atomic_save_safetensors, atomic_write_json
from ..world.seeds import BASE_MODEL_SEED_BASE
from .diffusion_step import DiffusionBatch, DiffusionState, batch_split, draw_diffusion_batch
from .folders import grow_into, read_training_record, sample_grid, standard_sd_layout, training_record_path
from .losses import diffusion_loss, edge_l1, mask_loss_weights, readout_loss, readout_targets
from .spec import base_model_spec

DOMAIN_MIX: dict[str, float] = {"faces": 0.4, "cats": 0.3, "scenes": 0.3}
"""Share of each domain in the training renders."""

TRAIN_SEED_BASE = BASE_MODEL_SEED_BASE
"""Training renders use seeds >= this; evaluation and benchmarks use seeds below it (:mod:`noiseclr.world.seeds`)."""


@dataclass
class VAESettings:
    steps: int = 8000
    batch_size: int = 16
    crop: int | None = 64
    """Random square crops of this size (None: full 128x128 images)."""
    lr: float = 2e-4
    sharpen_from: int = 5000
    """From this step on: an L1 loss on image gradients (small features such as lips stay crisp) and
    a linear LR decay to 10% at ``steps``. Earlier steps do not depend on it or on ``steps``."""
    edge_weight: float = 1.0
    kl_weight: float = 1e-6
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50


@dataclass
class DiffusionSettings:
    steps: int = 40000
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 500
    ema_decay: float = 0.9995
    min_snr_gamma: float = 5.0
    pool_size: int = 60000
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50
    sample_every: int = 2000
    snapshot_every: int = 1000
    """Keep an fp16 export of the EMA weights every this many steps (``diffusion/snapshots/``), for
    the controllability probe's learning curve; 0: none."""
    # Recipe arms of issue 20 (defaults: the original recipe, bit for bit).
    mask_weight: float = 0.0
    """(a) Strength s of the feature-mask weighting: the per-cell loss weight is ``(1 + s E) / (1 + s)``
    with ``E`` the pool's equalized weight map (every factor the same total weight, mean 1), so the
    mean weight stays 1; 0: the plain loss. Needs a pool built with ``pool_masks``."""
    text_aux_weight: float = 0.0
    """(b) Weight of the text encoder's read-out loss: one linear head per factor on the pooled
    output predicts each value the caption mentions (cross-entropy); 0: none."""
    paired_fraction: float = 0.0
    """(c) Share of each batch drawn as counterfactual pairs (a pool render and the same seed with
    one factor changed, shared noise and timestep, captions naming the change); needs ``pool_pairs``."""
    pool_masks: bool = False
    """Store every pool render's equalized weight map at latent resolution (``pool/extras.safetensors``)."""
    pool_pairs: int = 0
    """Encode a counterfactual partner for the first this many pool renders."""


def _step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, stream])


def _torch_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(_step_rng(seed, step, stream).integers(0, 2**63 - 1)))


def draw_training_seeds(count: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """The domains and render seeds :func:`draw_training_renders` draws from ``rng``."""
    names = list(DOMAIN_MIX)
    domains = rng.choice(len(names), size=count, p=list(DOMAIN_MIX.values()))
    seeds = TRAIN_SEED_BASE + rng.integers(0, TRAIN_SEED_BASE, size=count)
    return [names[d] for d in domains], seeds


def draw_training_renders(count: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[dict]]:
    """``count`` fresh renders (uint8 [N,128,128,3]) from the domain mix, with domains and labels."""
    from ..world.render import render_many

    names = list(DOMAIN_MIX)
    drawn, seeds = draw_training_seeds(count, rng)
    domains = np.array([names.index(d) for d in drawn])
    pixels = np.empty((count, 128, 128, 3), dtype=np.uint8)
    labels: list[dict] = [{}] * count
    for index, name in enumerate(names):
        where = np.flatnonzero(domains == index)
        if len(where):
            rendered, rendered_labels = render_many(name, [int(s) for s in seeds[where]])
            pixels[where] = rendered
            for slot, label in zip(where, rendered_labels):
                labels[slot] = label
    return pixels, [names[d] for d in domains], labels


def to_pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _Clock:
    def __init__(self, minutes: float | None):
        self.start = time.monotonic()
        self.limit = None if minutes is None else minutes * 60.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.limit is not None and self.elapsed() >= self.limit


class _Progress:
    """Smoothed loss (and read-out loss) of the diffusion stage, logged and appended to log.csv."""

    def __init__(self, settings: DiffusionSettings, clock: _Clock, log: Any, csv_path: Path, write_row: Any):
        self.settings, self.clock, self.log, self.csv_path, self.write_row = settings, clock, log, csv_path, write_row
        self.loss = self.aux = None
        self.seen, self.tick, self.cpu = 0, time.monotonic(), time.process_time()

    def add(self, step: int, loss: float, aux: float | None) -> None:
        self.loss = loss if self.loss is None else 0.98 * self.loss + 0.02 * loss
        if aux is not None:
            self.aux = aux if self.aux is None else 0.98 * self.aux + 0.02 * aux
        self.seen += self.settings.batch_size
        if step % self.settings.log_every and step != self.settings.steps:
            return
        rate = self.seen / max(time.monotonic() - self.tick, 1e-9)
        extra = f"  aux {self.aux:.4f}" if self.aux is not None else ""
        self.log(
            f"diffusion step {step}/{self.settings.steps}  loss {self.loss:.4f}{extra}  {rate:.0f} img/s  "
            f"{self.clock.elapsed() / 60:.1f} min  {(time.process_time() - self.cpu) / 60:.1f} CPU-min"
        )
        row = {"step": step, "loss": round(self.loss, 6)}
        if self.aux is not None:  # only in arms' logs: an old log.csv keeps its columns
            row["aux"] = round(self.aux, 6)
        self.write_row(self.csv_path, row)
        self.seen, self.tick = 0, time.monotonic()


class BaseModelTrainer:
    """Trains the base model in ``work`` (tokenizer/, vae/, pool/, diffusion/)."""

    def __init__(
        self,
        work: str | Path,
        *,
        device: str = "auto",
        minutes: float | None = None,
        spec: PipelineSpec | None = None,
        log: Any = print,
    ):
        from ..model import resolve_device

        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        self.clock = _Clock(minutes)
        self._spec = spec
        self.log = log
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # ---------------------------------------------------------------- common
    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def tokenizer(self):
        from ..world.tokenizer import build_world_tokenizer

        folder = self.work / "tokenizer"
        if not (folder / "vocab.json").is_file():
            build_world_tokenizer(folder)
        return load_clip_tokenizer(folder)

    def spec(self) -> PipelineSpec:
        if self._spec is None:
            tokenizer = self.tokenizer()
            self._spec = base_model_spec(len(tokenizer), tokenizer.model_max_length)
        return self._spec

    def _new_modules(self, seed: int) -> dict[str, torch.nn.Module]:
        from ..architecture import build_pipeline

        pipe = build_pipeline(self.spec(), self.tokenizer(), seed=seed)
        return {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder, "scheduler": pipe.scheduler}

    def _log_row(self, path: Path, row: dict[str, Any]) -> None:
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    # ------------------------------------------------------------ warm start
    def warm_start(self, model_dir: str | Path, settings: DiffusionSettings) -> int:
        """Seed this (empty) work folder from a trained model folder; returns the step it resumes at.

        The step is the folder's recorded diffusion step (its ``.training.json``), so the learning
        curve counts every training image the weights have seen.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        model_dir = Path(model_dir)
        ckpt = self.work / "diffusion" / "checkpoint.safetensors"
        if ckpt.is_file():
            raise RuntimeError(f"{ckpt} exists: warm start only fills an empty work folder (use another --work)")
        record = read_training_record(model_dir)
        start_step = int(record.get("diffusion_step", 0))
        # Tokenizer and VAE are taken as they are.
        shutil.copytree(model_dir / "tokenizer", self.work / "tokenizer", dirs_exist_ok=True)
        vae = AutoencoderKL.from_pretrained(model_dir / "vae", torch_dtype=torch.float32)
        vae.save_pretrained(self.work / "vae" / "final")
        atomic_write_json(
            self.work / "warm_start.json",
            {
                "from": str(model_dir),
                "step": start_step,
                "record": record,
                "scaling_factor": float(vae.config.scaling_factor),
            },
        )
        modules = self._new_modules(settings.seed + 1)
        unet, text_encoder = modules["unet"], modules["text_encoder"]
        trained_unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.float32)
        grown = grow_into(unet, trained_unet.state_dict())
        text_encoder.load_state_dict(
            CLIPTextModel.from_pretrained(model_dir / "text_encoder", torch_dtype=torch.float32).state_dict()
        )
        params = list(unet.parameters()) + list(text_encoder.parameters())
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-2)
        tensors = {**module_tensors(unet, "unet"), **module_tensors(text_encoder, "text_encoder")}
        tensors.update({f"ema_unet.{i}": p.detach().clone() for i, p in enumerate(unet.parameters())})
        tensors.update({f"ema_text.{i}": p.detach().clone() for i, p in enumerate(text_encoder.parameters())})
        opt_tensors, opt_info = optimizer_tensors(optimizer)
        (self.work / "diffusion").mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            ckpt,
            {**tensors, **opt_tensors},
            {
                "step": start_step,
                "warmup_from": start_step,
                "optimizer": opt_info,
                "settings": asdict(settings),
                "warm_start": str(model_dir),
                "grown": grown,
            },
        )
        self.log(f"warm start from {model_dir} at diffusion step {start_step}; new UNet tensors: {len(grown)}")
        return start_step

    def _warm_scaling_factor(self) -> float | None:
        path = self.work / "warm_start.json"
        return float(json.loads(path.read_text())["scaling_factor"]) if path.is_file() else None

    # ------------------------------------------------------------------- vae
    def vae_done(self, settings: VAESettings) -> bool:
        return (self.work / "vae" / "final" / "config.json").is_file()

    def load_vae(self):
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(self.work / "vae" / "final")

    def train_vae(self, settings: VAESettings) -> bool:
        """Train (or continue) the VAE; returns True when finished."""
        if self.vae_done(settings):
            return True
        folder = self.work / "vae"
        folder.mkdir(exist_ok=True)
        vae = self._new_modules(settings.seed)["vae"].to(self.device).train()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
        step = 0
        ckpt = folder / "checkpoint.safetensors"
        if ckpt.is_file():
            tensors, state = load_checkpoint(ckpt)
            load_module_tensors(vae, tensors, "vae")
            load_optimizer_tensors(optimizer, tensors, state["optimizer"])
            step = state["step"]
            self.log(f"vae: resuming at step {step}")
        val = to_pixels(draw_training_renders(32, _step_rng(settings.seed, 0, 99))[0]).to(self.device)
        seen, tick = 0, time.monotonic()
        while step < settings.steps and not self.clock.expired():
            rng = _step_rng(settings.seed, step, 1)
            images = to_pixels(draw_training_renders(settings.batch_size, rng)[0])
            if settings.crop:
                top, left = rng.integers(0, 128 - settings.crop + 1, size=2)
                images = images[:, :, top : top + settings.crop, left : left + settings.crop]
            images = images.to(self.device)
            sharpening = step >= settings.sharpen_from
            for group in optimizer.param_groups:
                group["lr"] = _warmup_lr(settings.lr, step, warmup=200)
                if sharpening:
                    group["lr"] *= 1.0 - 0.9 * (step - settings.sharpen_from) / max(
                        1, settings.steps - settings.sharpen_from
                    )
            with self._autocast():
                posterior = vae.encode(images).latent_dist
                latents = posterior.sample(generator=_torch_generator(settings.seed, step, 2))
                recon = vae.decode(latents).sample
            recon = recon.float()
            loss = F.l1_loss(recon, images) + F.mse_loss(recon, images) + settings.kl_weight * posterior.kl().mean()
            if sharpening:
                loss = loss + settings.edge_weight * edge_l1(recon, images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            step += 1
            seen += len(images)
            if step % settings.log_every == 0 or step == settings.steps:
                psnr = self._vae_psnr(vae, val)
                rate = seen / max(time.monotonic() - tick, 1e-9)
                self.log(
                    f"vae step {step}/{settings.steps}  loss {loss.item():.4f}  val PSNR {psnr:.2f} dB  {rate:.0f} img/s"
                )
                self._log_row(
                    folder / "log.csv", {"step": step, "loss": round(loss.item(), 6), "val_psnr": round(psnr, 3)}
                )
                seen, tick = 0, time.monotonic()
            if step % settings.checkpoint_every == 0 or step == settings.steps or self.clock.expired():
                tensors = module_tensors(vae, "vae")
                opt_tensors, opt_info = optimizer_tensors(optimizer)
                save_checkpoint(
                    ckpt,
                    {**tensors, **opt_tensors},
                    {"step": step, "optimizer": opt_info, "settings": asdict(settings)},
                )
        if step >= settings.steps:
            vae.eval().save_pretrained(folder / "final")
            self.log(f"vae: finished {step} steps -> {folder / 'final'}")
            return True
        return False

    @torch.no_grad()
    def _vae_psnr(self, vae, images: torch.Tensor) -> float:
        was_training = vae.training
        vae.eval()
        with self._autocast():
            recon = vae.decode(vae.encode(images).latent_dist.mean).sample.float().clamp(-1, 1)
        vae.train(was_training)
        mse = F.mse_loss((recon + 1) / 2, (images + 1) / 2).item()
        return 10 * math.log10(1.0 / max(mse, 1e-12))

    # ------------------------------------------------------------------ pool
    def pool_path(self) -> Path:
        return self.work / "pool" / "latents.safetensors"

    def build_pool(self, settings: DiffusionSettings, chunk: int = 256) -> bool:
        """Encode ``pool_size`` renders once; resumable chunk by chunk."""
        if self.pool_path().is_file():
            return True
        folder = self.work / "pool"
        parts = folder / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        vae = self.load_vae().to(self.device).eval().requires_grad_(False)
        total = math.ceil(settings.pool_size / chunk)
        for index in range(total):
            part = parts / f"{index:05d}.safetensors"
            if part.is_file():
                continue
            if self.clock.expired():
                return False
            count = min(chunk, settings.pool_size - index * chunk)
            images, domains, labels = draw_training_renders(count, _step_rng(settings.seed, index, 3))
            with torch.no_grad(), self._autocast():
                means = vae.encode(to_pixels(images).to(self.device)).latent_dist.mean.float().cpu()
            tensors, meta = {"latents": means.half()}, {"domains": json.dumps(domains), "labels": json.dumps(labels)}
            if settings.pool_masks or settings.pool_pairs:
                _, seeds = draw_training_seeds(count, _step_rng(settings.seed, index, 3))
                tensors, meta = self._pool_extras(vae, settings, index * chunk, domains, seeds, labels, tensors, meta)
            atomic_save_safetensors(part, tensors, meta)
            if index % 20 == 0:
                self.log(f"pool: encoded {min((index + 1) * chunk, settings.pool_size)}/{settings.pool_size}")
        from safetensors import safe_open

        latents, domains, labels = [], [], []
        maps, pair_latents, pair_index, pair_changes = [], [], [], []
        for index in range(total):
            with safe_open(str(parts / f"{index:05d}.safetensors"), framework="pt") as handle:
                latents.append(handle.get_tensor("latents"))
                meta = handle.metadata()
                if "weight_maps" in handle.keys():
                    maps.append(handle.get_tensor("weight_maps"))
                if "pair_latents" in handle.keys():
                    pair_latents.append(handle.get_tensor("pair_latents"))
                    pair_index += [len(domains) + row for row in json.loads(meta["pair_rows"])]
                    pair_changes += json.loads(meta["pair_changes"])
                domains += json.loads(meta["domains"])
                labels += json.loads(meta["labels"])
        stacked = torch.cat(latents).float()
        # A warm-started UNet was trained on latents at its VAE's scaling factor: keep it.
        scaling = self._warm_scaling_factor() or 1.0 / float(stacked.std())
        if maps or pair_latents:
            extras: dict[str, torch.Tensor] = {}
            if maps:
                extras["weight_maps"] = torch.cat(maps)
            if pair_latents:
                extras["pair_latents"] = (torch.cat(pair_latents).float() * scaling).half()
                extras["pair_index"] = torch.tensor(pair_index, dtype=torch.long)
            atomic_save_safetensors(
                self.work / "pool" / "extras.safetensors", extras, {"pair_changes": json.dumps(pair_changes)}
            )
        atomic_save_safetensors(
            self.pool_path(),
            {"latents": (stacked * scaling).half()},
            {"domains": json.dumps(domains), "labels": json.dumps(labels), "scaling_factor": repr(scaling)},
        )
        self.log(f"pool: {len(domains)} latents, scaling factor {scaling:.5f}")
        return True

    def _pool_extras(
        self,
        vae,
        settings: DiffusionSettings,
        first: int,
        domains: list[str],
        seeds: np.ndarray,
        labels: list[dict],
        tensors: dict[str, torch.Tensor],
        meta: dict[str, str],
    ):
        """Add one pool chunk's weight maps and counterfactual partners (rows ``first + i < pool_pairs``)."""
        from ..world.factors import domain_factors
        from ..world.masks import latent_weight_map
        from ..world.render import render_many

        if settings.pool_masks:
            maps = [latent_weight_map(d, int(s)) for d, s in zip(domains, seeds)]
            tensors["weight_maps"] = torch.from_numpy(np.stack(maps)).half()
        rows = [i for i in range(len(domains)) if first + i < settings.pool_pairs]
        if rows:
            rng = _step_rng(settings.seed, first, 6)
            images, changes = [], []
            for i in rows:
                factor = domain_factors(domains[i])[int(rng.integers(len(domain_factors(domains[i]))))]
                others = [v for v in factor.values if v != labels[i][factor.name]]
                value = others[int(rng.integers(len(others)))]
                images.append(render_many(domains[i], [int(seeds[i])], [{**labels[i], factor.name: value}])[0][0])
                changes.append([factor.name, value])
            with torch.no_grad(), self._autocast():
                partner = vae.encode(to_pixels(np.stack(images)).to(self.device)).latent_dist.mean.float().cpu()
            tensors["pair_latents"] = partner.half()
            meta = {**meta, "pair_rows": json.dumps(rows), "pair_changes": json.dumps(changes)}
        return tensors, meta

    def load_pool_extras(self) -> dict[str, Any]:
        """``weight_maps`` [N, h, w], ``pair_latents`` [P, C, h, w], ``pair_index`` [P] (pool rows),
        ``pair_changes`` ([factor, value] per pair), as far as the pool was built with them."""
        from safetensors import safe_open

        path = self.work / "pool" / "extras.safetensors"
        if not path.is_file():
            return {}
        with safe_open(str(path), framework="pt") as handle:
            out: dict[str, Any] = {key: handle.get_tensor(key) for key in handle.keys()}
            out["pair_changes"] = json.loads(handle.metadata()["pair_changes"])
        for key in ("weight_maps", "pair_latents"):
            if key in out:
                out[key] = out[key].float()
        return out

    def pool_scaling_factor(self) -> float:
        """The VAE scaling factor stored with the pool (metadata only; the latents stay on disk)."""
        from safetensors import safe_open

        with safe_open(str(self.pool_path()), framework="pt") as handle:
            return float(handle.metadata()["scaling_factor"])

    def load_pool(self) -> tuple[torch.Tensor, list[str], list[dict], float]:
        from safetensors import safe_open

        with safe_open(str(self.pool_path()), framework="pt") as handle:
            meta = handle.metadata()
            latents = handle.get_tensor("latents").float()
        return latents, json.loads(meta["domains"]), json.loads(meta["labels"]), float(meta["scaling_factor"])

    # ------------------------------------------------------------- diffusion
    def diffusion_done(self, settings: DiffusionSettings) -> bool:
        ckpt = self.work / "diffusion" / "checkpoint.safetensors"
        if not ckpt.is_file():
            return False
        from safetensors import safe_open

        with safe_open(str(ckpt), framework="pt") as handle:
            return json.loads(handle.metadata()["state"])["step"] >= settings.steps

    def train_diffusion(self, settings: DiffusionSettings) -> bool:
        """Train (or continue) UNet + text encoder; returns True when finished."""
        folder = self.work / "diffusion"
        folder.mkdir(exist_ok=True)
        tokenizer = self.tokenizer()
        modules = self._new_modules(settings.seed + 1)
        state = DiffusionState.create(
            modules["unet"].to(self.device).train(),
            modules["text_encoder"].to(self.device).train(),
            settings.lr,
        )
        ckpt = folder / "checkpoint.safetensors"
        tensors, record = load_checkpoint(ckpt) if ckpt.is_file() else ({}, {})
        if record:
            state.restore(tensors, record)
            self.log(f"diffusion: resuming at step {state.step}")
        latents_pool, domains, labels, _ = self.load_pool()
        extras = self.load_pool_extras() if (settings.mask_weight or settings.paired_fraction) else {}
        if settings.mask_weight and "weight_maps" not in extras:
            raise RuntimeError("mask_weight needs a pool built with pool_masks (a new --work, or delete pool/)")
        split = batch_split(settings.batch_size, settings.paired_fraction)
        if split[1] and "pair_latents" not in extras:
            raise RuntimeError("paired_fraction needs a pool built with pool_pairs > 0 (a new --work, or delete pool/)")
        if settings.text_aux_weight:
            readout_seed = int(_step_rng(settings.seed, 0, 7).integers(0, 2**63 - 1))
            state.add_readout(settings.lr, self.device, readout_seed, tensors, record)
        del tensors
        alphas = modules["scheduler"].alphas_cumprod.float()
        progress = _Progress(settings, self.clock, self.log, folder / "log.csv", self._log_row)
        while state.step < settings.steps and not self.clock.expired():
            step = state.step
            batch = draw_diffusion_batch(
                _step_rng(settings.seed, step, 4),
                _torch_generator(settings.seed, step, 5),
                (latents_pool, domains, labels),
                extras,
                tokenizer,
                split,
                len(alphas),
            )
            loss, aux = self._diffusion_loss(state, batch, alphas, extras, settings)
            state.apply(loss, _warmup_lr(settings.lr, step - state.warmup_from, settings.warmup), settings.ema_decay)
            value = loss.item()
            if not math.isfinite(value):
                raise RuntimeError(f"diffusion loss became {value} at step {state.step}; the last checkpoint is intact")
            progress.add(state.step, value, None if aux is None else aux.item())
            step = state.step
            if step % settings.checkpoint_every == 0 or step == settings.steps or self.clock.expired():
                save_checkpoint(ckpt, *state.checkpoint(asdict(settings)))
            if settings.snapshot_every and step % settings.snapshot_every == 0:
                self.export(folder / "snapshots" / f"step-{step:06d}")
            if settings.sample_every and step % settings.sample_every == 0:
                self.export(folder / "snapshot", dtype=torch.float32)
                self.sample_grid(folder / "snapshot", folder / "samples" / f"step-{step:06d}.png")
        return state.step >= settings.steps

    def _diffusion_loss(
        self,
        state: DiffusionState,
        batch: DiffusionBatch,
        alphas: torch.Tensor,
        extras: dict[str, Any],
        settings: DiffusionSettings,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The step's loss (min-SNR epsilon MSE, mask-weighted, plus the read-out) and its read-out part."""
        alpha_bar = alphas[batch.timesteps].view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * batch.clean + (1 - alpha_bar).sqrt() * batch.noise
        with self._autocast():
            encoded = state.text_encoder(batch.token_ids.to(self.device))
            pred = state.unet(
                noisy.to(self.device), batch.timesteps.to(self.device), encoder_hidden_states=encoded[0]
            ).sample
        pixel_weights = None
        if settings.mask_weight:
            maps = extras["weight_maps"][batch.pool_rows]
            pixel_weights = mask_loss_weights(maps, settings.mask_weight).to(self.device)
        loss = diffusion_loss(
            pred, batch.noise.to(self.device), alpha_bar.to(self.device), settings.min_snr_gamma, pixel_weights
        )
        aux = None
        if state.readout is not None:
            targets = readout_targets(batch.domains, batch.mentions, state.readout.heads).to(self.device)
            aux = readout_loss(state.readout(encoded[1].float()), targets, state.readout.heads)
            loss = loss + settings.text_aux_weight * aux
        return loss, aux

    # ---------------------------------------------------------------- export
    def export(self, dest: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the EMA weights as a diffusers ``StableDiffusionPipeline`` folder."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        from ..architecture import SD_SCHEDULER

        modules = self._new_modules(0)
        tensors, state = load_checkpoint(self.work / "diffusion" / "checkpoint.safetensors")
        for name, prefix in (("unet", "ema_unet"), ("text_encoder", "ema_text")):
            with torch.no_grad():
                for i, p in enumerate(modules[name].parameters()):
                    p.copy_(tensors[f"{prefix}.{i}"])
        vae = self.load_vae()
        vae.register_to_config(scaling_factor=self.pool_scaling_factor())
        scheduler = DDIMScheduler.from_config({k: v for k, v in SD_SCHEDULER.items() if not k.startswith("_")})
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=modules["text_encoder"],
            tokenizer=self.tokenizer(),
            unet=modules["unet"],
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.to(dtype=dtype)
        dest = Path(dest)
        pipe.save_pretrained(dest, safe_serialization=True)
        # transformers 5 writes only tokenizer.json; the BPE files keep slow/older CLIPTokenizers working.
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(self.work / "tokenizer" / name, dest / "tokenizer" / name)
        standard_sd_layout(dest)
        settings = state.get("settings", {})
        atomic_write_json(
            training_record_path(dest),
            {
                "diffusion_step": int(state["step"]),
                "diffusion_images": int(state["step"]) * int(settings.get("batch_size", 0)),
                "settings": settings,
                "warm_start": state.get("warm_start"),
                "runs": json.loads((self.work / "runs.json").read_text())
                if (self.work / "runs.json").is_file()
                else [],
            },
        )
        return dest

    def sample_grid(self, model_dir: Path, out: Path, steps: int = 30, guidance: float = 5.0) -> Path:
        """A few samples from fixed captions (one per domain and empty), for eyeballing progress."""
        return sample_grid(model_dir, out, self.device, steps, guidance)


def _warmup_lr(base: float, step: int, warmup: int) -> float:
    # Constant after warmup: a run stopped at any step equals a run planned for that many steps,
    # so CPU-limited training can stop early and a later (GPU) run can extend it reproducibly.
    return base * min(1.0, (step + 1) / warmup)
