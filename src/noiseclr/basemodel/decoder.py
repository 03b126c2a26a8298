"""Sharpening the VAE by fine-tuning its decoder alone, the encoder frozen (issue 20, arm (e)).

The latent space is the encoder's, so a UNet trained on it stays valid and nothing else is
retrained: the way Stable Diffusion's ``sd-vae-ft-mse`` sharpened its decoder. The shipped VAE
was trained with a plain per-pixel loss, under which a mouth (about 1% of the pixels) or a curl
is worth almost nothing; its round trips smear open mouths and flatten curls while the readers
still classify them. Here every pixel's loss is weighted by the renderer's feature masks (each
factor the same total weight, :func:`~noiseclr.world.masks.equalized_weight_map`, at full
resolution) and edges get their own L1, weighted the same way.

Resumable like the rest of the base-model training: a fixed set of training renders (their
encoder means and weight maps) is built once in ``work/``, steps draw from it by ``(seed, step)``,
and a checkpoint is written every few steps. :func:`apply_decoder` writes a model folder whose
VAE is the fine-tuned one, after checking that its encoder is the folder's own.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import (
    load_checkpoint,
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    save_checkpoint,
)
from ..errors import NoiseCLRError
from ..fileio import atomic_save_safetensors, atomic_write_json, read_safetensors
from .folders import read_training_record, training_record_path

VAE_WEIGHTS = Path("vae") / "diffusion_pytorch_model.safetensors"


@dataclass
class DecoderSettings:
    """How :func:`finetune_decoder` trains."""

    steps: int = 1500
    batch_size: int = 8
    lr: float = 5e-5
    mask_weight: float = 3.0
    """s in the per-pixel weight ``(1 + s E) / (1 + s)`` (mean 1; 0: the plain loss)."""
    edge_weight: float = 1.0
    renders: int = 2048
    """Size of the fixed training set (its means and weight maps are cached in ``work/``)."""
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 25


# ------------------------------------------------------------------------------------ maths
def pixel_weights(maps: torch.Tensor, strength: float) -> torch.Tensor:
    """Equalized weight maps [B, H, W] (mean 1) -> per-pixel loss weights [B, 1, H, W], mean 1."""
    return ((1.0 + strength * maps) / (1.0 + strength)).unsqueeze(1)


def decoder_loss(recon: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """Weighted L1 + MSE on pixels plus ``edge_weight`` times the weighted L1 of the horizontal and
    vertical finite differences (a blurred edge costs there even where its pixels are close)."""
    error = recon - target
    loss = (weights * (error.abs() + error.square())).mean()
    if edge_weight:
        dx = (error[..., :, 1:] - error[..., :, :-1]).abs() * torch.minimum(weights[..., :, 1:], weights[..., :, :-1])
        dy = (error[..., 1:, :] - error[..., :-1, :]).abs() * torch.minimum(weights[..., 1:, :], weights[..., :-1, :])
        loss = loss + edge_weight * (dx.mean() + dy.mean())
    return loss


def weighted_psnr(recon: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> float:
    """PSNR (dB, images in [-1, 1] taken to [0, 1]) of the weight-averaged squared error."""
    mse = float((weights * ((recon - target) / 2).square()).sum() / (weights.sum() * recon.shape[1]))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


# ------------------------------------------------------------------------------------- data
def build_renders(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` training renders of the base model's domain mix (pixels [N, 3, 128, 128] in
    [-1, 1]) and their equalized full-resolution weight maps [N, 128, 128]."""
    from ..world.masks import equalized_weight_map, factor_masks
    from .training import _step_rng, draw_training_seeds, to_pixels

    domains, seeds = draw_training_seeds(count, _step_rng(seed, 0, 7))
    images, maps = [], []
    for domain, render_seed in zip(domains, seeds):
        masks, image = factor_masks(domain, int(render_seed))
        images.append(image)
        maps.append(equalized_weight_map(np.stack(list(masks.values())).astype(np.float32)))
    return to_pixels(np.stack(images)), torch.from_numpy(np.stack(maps))


def _training_set(vae, work: Path, settings: DecoderSettings, log: Any) -> dict[str, torch.Tensor]:
    path = work / "renders.safetensors"
    if path.is_file():
        tensors, meta = read_safetensors(path, "delete it to rebuild the decoder's training renders.")
        if json.loads(meta.get("settings", "{}")) == {"renders": settings.renders, "seed": settings.seed}:
            return tensors
    started = time.monotonic()
    pixels, maps = build_renders(settings.renders, settings.seed)
    with torch.no_grad():
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(64)])
    tensors = {"pixels": pixels.half(), "maps": maps.half(), "means": means.float()}
    atomic_save_safetensors(
        path, tensors, {"settings": json.dumps({"renders": settings.renders, "seed": settings.seed})}
    )
    log(f"decoder: {settings.renders} training renders with weight maps in {time.monotonic() - started:.0f} s")
    return tensors


# ---------------------------------------------------------------------------------- training
def load_vae(model_dir: str | Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(model_dir) / "vae", torch_dtype=torch.float32)


def finetune_decoder(
    model_dir: str | Path,
    work: str | Path,
    settings: DecoderSettings | None = None,
    *,
    minutes: float | None = None,
    log: Any = print,
) -> bool:
    """Train (or continue) the decoder of ``model_dir``'s VAE in ``work``; True when finished, with
    the VAE's weights in ``work/vae.safetensors`` (the folder's dtypes and diffusers names)."""
    settings = settings or DecoderSettings()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if (work / "vae.safetensors").is_file():
        return True
    started = time.monotonic()
    vae = load_vae(model_dir)
    vae.requires_grad_(False)
    data = _training_set(vae.eval(), work, settings, log)
    trained = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=settings.lr, weight_decay=0.0)
    step, ckpt = 0, work / "checkpoint.safetensors"
    if ckpt.is_file():
        tensors, state = load_checkpoint(ckpt)
        load_module_tensors(vae, tensors, "vae")
        load_optimizer_tensors(optimizer, tensors, state["optimizer"])
        step = state["step"]
        log(f"decoder: resuming at step {step}")
    held_out = slice(0, 32)  # never drawn for training: the logged PSNRs are on unseen renders
    pool = len(data["means"]) - 32
    vae.decoder.train()
    while step < settings.steps and not (minutes is not None and time.monotonic() - started > 60 * minutes):
        rows = torch.from_numpy(
            32 + np.random.default_rng([settings.seed, step, 8]).integers(0, pool, settings.batch_size)
        )
        target = data["pixels"][rows].float()
        weights = pixel_weights(data["maps"][rows].float(), settings.mask_weight)
        recon = vae.decode(data["means"][rows]).sample
        loss = decoder_loss(recon, target, weights, settings.edge_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        if step % settings.log_every == 0 or step == settings.steps:
            plain, weighted = _held_out_psnr(vae, data, held_out, settings)
            log(
                f"decoder step {step}/{settings.steps}  loss {loss.item():.4f}  held-out PSNR {plain:.2f} dB, feature-weighted {weighted:.2f} dB"
            )
            with open(work / "log.csv", "a") as file:
                file.write(f"{step},{loss.item():.6f},{plain:.3f},{weighted:.3f}\n")
        if step % settings.checkpoint_every == 0:
            _checkpoint(ckpt, vae, optimizer, step, settings)
    if step < settings.steps:
        _checkpoint(ckpt, vae, optimizer, step, settings)
        return False
    # Each tensor in the dtype the folder stored it in (fp16 for the shipped model): the frozen
    # encoder is then bit for bit the folder's own.
    stored, _ = read_safetensors(Path(model_dir) / VAE_WEIGHTS, "is it a Stable Diffusion model folder?")
    weights = {
        name: value.detach().to(stored[name].dtype if name in stored else torch.float16).contiguous()
        for name, value in vae.state_dict().items()
    }
    atomic_save_safetensors(
        work / "vae.safetensors",
        weights,
        {"format": "pt", "decoder_finetune": json.dumps({"steps": step, **asdict(settings)})},
    )
    log(f"decoder: finished {step} steps -> {work / 'vae.safetensors'}")
    return True


def _checkpoint(path: Path, vae, optimizer: torch.optim.Optimizer, step: int, settings: DecoderSettings) -> None:
    opt_tensors, opt_info = optimizer_tensors(optimizer)
    state = {"step": step, "optimizer": opt_info, "settings": asdict(settings)}
    save_checkpoint(path, {**module_tensors(vae, "vae"), **opt_tensors}, state)


@torch.no_grad()
def _held_out_psnr(vae, data: dict[str, torch.Tensor], rows: slice, settings: DecoderSettings) -> tuple[float, float]:
    was_training = vae.decoder.training
    vae.decoder.eval()
    recon = vae.decode(data["means"][rows]).sample.clamp(-1, 1)
    vae.decoder.train(was_training)
    target = data["pixels"][rows].float()
    ones = torch.ones_like(recon[:, :1])
    return weighted_psnr(recon, target, ones), weighted_psnr(recon, target, data["maps"][rows].float().unsqueeze(1))


def apply_decoder(vae_weights: str | Path, model_dir: str | Path, out: str | Path) -> Path:
    """Copy ``model_dir`` to ``out`` with its VAE weights replaced by ``vae_weights``; refuses a
    VAE whose encoder is not ``model_dir``'s own (its UNet would read another latent space). The
    training record beside the folder gets a ``decoder_finetune`` entry."""
    vae_weights, model_dir, out = Path(vae_weights), Path(model_dir), Path(out)
    tensors, meta = read_safetensors(vae_weights, "run the decoder fine-tune again to write it.")
    own, _ = read_safetensors(model_dir / VAE_WEIGHTS, "is it a Stable Diffusion model folder?")
    for name, value in own.items():
        if name.startswith(("encoder.", "quant_conv.")) and (
            name not in tensors or not torch.equal(value, tensors[name])
        ):
            raise NoiseCLRError(
                f"{vae_weights}: its encoder is not {model_dir}'s ({name} differs); fine-tune that folder's decoder."
            )
    if out.exists():
        raise NoiseCLRError(f"{out} exists: pick a new folder for the model with the fine-tuned decoder.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging)
    atomic_save_safetensors(staging / VAE_WEIGHTS, tensors, {"format": "pt"})
    staging.rename(out)
    record = read_training_record(model_dir)
    record["decoder_finetune"] = json.loads(meta.get("decoder_finetune", "{}"))
    atomic_write_json(training_record_path(out), record)
    return out
