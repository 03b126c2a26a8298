"""Training the factor readers (:mod:`noiseclr.world.readers`): augmentations and the training loop.

Readers must read clean renders, VAE reconstructions and diffusion samples alike, so they are
trained with :func:`augment_for_reading` (blur, resampling, JPEG, noise, mild brightness and
contrast jitter, small shifts; no hue changes, which would destroy the colour factors) on renders
from the reader seed ranges (:mod:`noiseclr.world.seeds`). ``scripts/train_readers.py`` runs it.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import NoiseCLRError
from ..world.factors import domain_factors
from ..world.readers import FactorReader, ReaderConfig, ReaderNet, encode_many, reader_accuracy, to_reader_input
from ..world.render import render_many
from ..world.seeds import READER_TRAIN_SEED_BASE, READER_VAL_SEED_BASE

log = logging.getLogger("noiseclr")


# ------------------------------------------------------------------------------------ augmentation
def gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``[N, 2*radius+1]``; sigma 0 gives the identity kernel."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigmas.float().clamp_min(1e-3)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(pixels: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` (one sigma, or one per image), reflect-padded."""
    count, channels, height, width = pixels.shape
    sigmas = (
        torch.as_tensor(sigma, dtype=torch.float32).expand(count)
        if not torch.is_tensor(sigma) or sigma.ndim == 0
        else sigma
    )
    radius = max(1, math.ceil(3.0 * float(sigmas.max())))
    kernels = gaussian_kernels(sigmas, radius).repeat_interleave(channels, dim=0).to(pixels)
    flat = pixels.reshape(1, count * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=count * channels
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=count * channels
    )
    return flat.reshape(count, channels, height, width)


@dataclass(frozen=True)
class AugmentSettings:
    """Degradations that mimic VAE reconstructions and diffusion samples, not hue changes."""

    max_shift: int = 3
    """Translation in pixels (replicate-padded)."""
    max_blur_sigma: float = 1.2
    resample_prob: float = 0.3
    """Chance of a down/up-sampling round trip at scale 0.5..0.85."""
    jpeg_prob: float = 0.25
    jpeg_quality: tuple[int, int] = (50, 95)
    brightness: float = 0.05
    contrast: float = 0.05
    channel_offset: float = 0.015
    """Per-channel additive shift (fraction of the range): the VAE's small colour casts."""
    max_noise: float = 0.03
    """Standard deviation of additive Gaussian noise, fraction of the range, drawn per image."""


def augment_for_reading(
    pixels: torch.Tensor, rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()
) -> torch.Tensor:
    """Randomly degrade float images ``[N, 3, H, W]`` in ``[-1, 1]``; deterministic in ``rng``."""
    count, _, height, width = pixels.shape
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    images = pixels.add(1.0).mul(0.5)  # [0, 1] from here on
    # Shifts: pad by replicating the border (the background), then crop.
    shift = settings.max_shift
    if shift > 0:
        padded = F.pad(images, (shift, shift, shift, shift), mode="replicate")
        offsets = rng.integers(0, 2 * shift + 1, size=(count, 2))
        images = torch.stack([padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)])
    # Down/up-sampling: the VAE's and the diffusion model's loss of fine detail.
    for i in np.flatnonzero(rng.random(count) < settings.resample_prob):
        scale = rng.uniform(0.5, 0.85)
        small = F.interpolate(
            images[i : i + 1], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False
        )
        images[i : i + 1] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    # Gaussian blur, one sigma per image.
    sigmas = torch.from_numpy(rng.uniform(0.0, settings.max_blur_sigma, size=count)).float()
    images = gaussian_blur(images, sigmas).clamp(0.0, 1.0)
    # Mild JPEG.
    for i in np.flatnonzero(rng.random(count) < settings.jpeg_prob):
        quality = int(rng.integers(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1))
        array = images[i].mul(255.0).round().byte().permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.uint8)
        images[i] = torch.from_numpy(decoded.copy()).permute(2, 0, 1).float().div(255.0)
    # Brightness, contrast (around each image's mean) and tiny per-channel offsets.
    brightness = (
        1.0 + torch.from_numpy(rng.uniform(-settings.brightness, settings.brightness, size=(count, 1, 1, 1))).float()
    )
    contrast = 1.0 + torch.from_numpy(rng.uniform(-settings.contrast, settings.contrast, size=(count, 1, 1, 1))).float()
    offset = torch.from_numpy(
        rng.uniform(-settings.channel_offset, settings.channel_offset, size=(count, 3, 1, 1))
    ).float()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean * brightness + offset
    # Additive noise.
    noise_std = torch.from_numpy(rng.uniform(0.0, settings.max_noise, size=(count, 1, 1, 1))).float()
    images = images + noise_std * torch.randn(images.shape, generator=generator)
    return images.clamp(0.0, 1.0).mul(2.0).sub(1.0)


# ------------------------------------------------------------------------------------ training
@dataclass
class ReaderTrainSettings:
    """One reader's training run (defaults = the run that produced the shipped weights)."""

    steps: int = 1000
    """``scripts/train_readers.py`` picks a per-domain default (``DEFAULT_STEPS`` there)."""
    batch_size: int = 64
    train_images: int = 20000
    """Fixed set of renders (seeds ``READER_TRAIN_SEED_BASE + i``), augmented afresh every step."""
    val_images: int = 500
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    label_smoothing: float = 0.05
    seed: int = 0
    log_every: int = 100
    val_every: int = 200
    """Validation accuracy (min over factors) is logged this often (0: only at the end)."""
    config: ReaderConfig = field(default_factory=ReaderConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass
class ReaderTrainResult:
    reader: FactorReader
    seconds: float
    render_seconds: float
    val_accuracy: dict[str, float]
    history: list[dict[str, float]]


def _learning_rate(settings: ReaderTrainSettings, step: int) -> float:
    # Linear warmup, then cosine decay to 2% of the peak.
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def train_reader(
    domain: str,
    settings: ReaderTrainSettings = ReaderTrainSettings(),
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> ReaderTrainResult:
    """Train one domain's reader from scratch on renders; deterministic in ``settings.seed`` (per device).

    Augmentation runs on the CPU; the network on ``device``. The returned reader is on the CPU.
    """
    from tqdm.auto import tqdm

    factors = domain_factors(domain)
    head_sizes = [len(factor.values) for factor in factors]
    if settings.train_images > 50_000_000:
        raise NoiseCLRError("--train-images: at most 50 000 000 (the reader training seed range).")
    started = time.monotonic()
    train_pixels, train_labels = render_many(
        domain, range(READER_TRAIN_SEED_BASE, READER_TRAIN_SEED_BASE + settings.train_images)
    )
    val_pixels, val_labels = render_many(
        domain, range(READER_VAL_SEED_BASE, READER_VAL_SEED_BASE + settings.val_images)
    )
    render_seconds = time.monotonic() - started
    train_targets = encode_many(domain, train_labels)
    log.info(
        "reader %s: rendered %d + %d images in %.1f s",
        domain,
        settings.train_images,
        settings.val_images,
        render_seconds,
    )

    torch.manual_seed(settings.seed)
    device = torch.device(device)
    net = ReaderNet(head_sizes, settings.config).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng([settings.seed, 17])
    history: list[dict[str, float]] = []
    net.train()
    running = 0.0
    bar = tqdm(range(settings.steps), desc=f"reader {domain}", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(settings, step)
        batch = rng.integers(0, settings.train_images, size=settings.batch_size)
        pixels = augment_for_reading(to_reader_input(train_pixels[batch]), rng, settings.augment).to(device)
        targets = train_targets[batch].to(device)
        logits = net.split_logits(net(pixels))
        loss = sum(
            F.cross_entropy(head, targets[:, j], label_smoothing=settings.label_smoothing)
            for j, head in enumerate(logits)
        ) / len(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = loss.item() if step == 0 else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            bar.set_postfix(loss=f"{running:.4f}")
            history.append({"step": step + 1, "loss": running, "seconds": time.monotonic() - started})
            log.info("reader %s: step %d loss %.4f (%.0f s)", domain, step + 1, running, time.monotonic() - started)
        if settings.val_every and (step + 1) % settings.val_every == 0 and step + 1 < settings.steps:
            accuracy = reader_accuracy(FactorReader(domain, net, device=device), val_pixels, val_labels)
            worst = min(accuracy, key=accuracy.get)
            history.append({"step": step + 1, "val_min_accuracy": accuracy[worst]})
            log.info("reader %s: step %d val min accuracy %.4f (%s)", domain, step + 1, accuracy[worst], worst)
            net.train()
    reader = FactorReader(domain, net.cpu())
    val_accuracy = reader_accuracy(reader, val_pixels, val_labels)
    return ReaderTrainResult(reader, time.monotonic() - started, render_seconds, val_accuracy, history)


def parameter_count(reader: FactorReader) -> int:
    return sum(parameter.numel() for parameter in reader.net.parameters())
