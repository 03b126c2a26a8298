"""Factor readers: small CNNs that read every factor of a rendered (or generated) world image.

One reader per domain (``faces``, ``cats``, ``scenes``) predicts one value per factor of
:data:`~noiseclr.world.factors.DOMAINS` (multi-head classification; the scene reader reads
``order``, ``background`` and every ``face.*`` / ``cat.*`` factor). The benchmark uses them to
measure what an edit direction changes::

    reader = FactorReader.load("faces")
    reader.predict_labels(images)  # [{"skin": "tan", "hair_color": "red", ...}, ...]

Images may be uint8 arrays ``[N,128,128,3]`` / ``[128,128,3]``, PIL images (or lists of them) or
float tensors ``[N,3,128,128]`` / ``[3,128,128]`` in ``[-1, 1]`` (the pipeline's format); they
are normalised inside. Weights ship in ``noiseclr/assets/readers/<domain>.safetensors`` (fp16)
with JSON metadata: domain, factor names and values, architecture, training command and date.
A reader whose factors differ from the current registry is refused at load.

Readers must read clean renders, VAE reconstructions and diffusion samples alike, so they are
trained with :func:`augment_for_reading` (blur, resampling, JPEG, noise, mild brightness and
contrast jitter, small shifts; no hue changes, which would destroy the colour factors).

Seed ranges (all below ``training.TRAIN_SEED_BASE``, which belongs to the base model):
:data:`READER_TRAIN_SEED_BASE` for reader training, :data:`READER_VAL_SEED_BASE` for its
validation, :data:`EVAL_SEED_BASE` for fresh evaluation renders (:func:`eval_renders`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import NoiseCLRError
from ..fileio import atomic_save_safetensors, read_safetensors
from .factors import Factor, Labels, domain_factors, encode_labels
from .render import IMAGE_SIZE, render_many

log = logging.getLogger("noiseclr")

READER_TRAIN_SEED_BASE = 700_000_000
"""Reader training renders use seeds ``READER_TRAIN_SEED_BASE + i`` (i < 50 M)."""
READER_VAL_SEED_BASE = 750_000_000
"""Validation renders during reader training use seeds ``READER_VAL_SEED_BASE + i``."""
EVAL_SEED_BASE = 900_000_000
"""Fresh evaluation renders (never seen by a reader): seeds ``EVAL_SEED_BASE + i`` (i < 100 M)."""
BASE_MODEL_SEED_BASE = 1_000_000_000
"""``training.TRAIN_SEED_BASE`` (not imported: that module pulls in diffusers); a test checks it."""

FORMAT_NAME = "noiseclr-factor-reader"
FORMAT_VERSION = 1
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "readers"
"""Where the shipped reader weights live (``<domain>.safetensors``)."""
TRAIN_SCRIPT = "scripts/train_readers.py"

ImageInput = Union[np.ndarray, torch.Tensor, Image.Image, Sequence[Image.Image]]


# ------------------------------------------------------------------------------------ network
@dataclass(frozen=True)
class ReaderConfig:
    """Architecture of a reader network (stored in the weights' metadata)."""

    stem_channels: int = 24
    """A 4x4 stride-2 convolution: 128 -> 64."""
    stage_channels: tuple[int, ...] = (32, 48, 64, 96)
    """Each stage halves the resolution (64 -> 32 -> 16 -> 8 -> 4)."""
    stage_extra_convs: tuple[int, ...] = (1, 1, 0, 0)
    """Extra stride-1 3x3 convolutions after each stage's downsampling one."""
    hidden: int = 128
    """Width of the shared layer on the flattened 4x4 map (flattened, not pooled: the scene
    reader must know which half each object is in)."""
    dropout: float = 0.1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ReaderConfig:
        raw = json.loads(text)
        for key in ("stage_channels", "stage_extra_convs"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def _conv_block(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 if kernel % 2 else 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ReaderNet(nn.Module):
    """Shared CNN trunk plus one linear classification head per factor.

    Input: float ``[N, 3, 128, 128]`` in ``[-1, 1]``. Output: concatenated logits
    ``[N, sum(head_sizes)]`` (split with :meth:`split_logits`).
    """

    def __init__(self, head_sizes: Sequence[int], config: ReaderConfig = ReaderConfig()):
        super().__init__()
        if len(config.stage_channels) != len(config.stage_extra_convs):
            raise ValueError("stage_channels and stage_extra_convs must have the same length")
        self.head_sizes = [int(size) for size in head_sizes]
        self.config = config
        layers: list[nn.Module] = _conv_block(3, config.stem_channels, 4, 2)
        channels = config.stem_channels
        for width, extra in zip(config.stage_channels, config.stage_extra_convs):
            layers += _conv_block(channels, width, 3, 2)
            for _ in range(extra):
                layers += _conv_block(width, width, 3, 1)
            channels = width
        self.trunk = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 ** (1 + len(config.stage_channels))
        self.shared = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, config.hidden), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        )
        self.heads = nn.Linear(config.hidden, sum(self.head_sizes))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.heads(self.shared(self.trunk(pixels)))

    def split_logits(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(logits, self.head_sizes, dim=1))


# ------------------------------------------------------------------------------------ inputs
def to_reader_input(images: ImageInput) -> torch.Tensor:
    """Any accepted image format -> float32 ``[N, 3, 128, 128]`` in ``[-1, 1]`` (CPU).

    uint8 arrays/tensors are channels-last (``[N,H,W,3]`` or ``[H,W,3]``); float tensors are
    channels-first in ``[-1, 1]`` (``[N,3,H,W]`` or ``[3,H,W]``); PIL images are converted to RGB.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise NoiseCLRError("reader: got an empty list of images; pass at least one image.")
        if not all(isinstance(image, Image.Image) for image in images):
            raise NoiseCLRError("reader: a list of images must hold PIL images; stack arrays into one uint8 array.")
        images = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise NoiseCLRError(
                f"reader: numpy images must be uint8 [N,H,W,3], got {images.dtype}; "
                "pass uint8 arrays or float tensors in [-1, 1] [N,3,H,W]."
            )
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise NoiseCLRError(f"reader: unsupported image type {type(images).__name__}; pass uint8 arrays, PIL images or tensors.")
    if images.dtype == torch.uint8:
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise NoiseCLRError(f"reader: uint8 images must be [N,H,W,3], got shape {tuple(images.shape)}.")
        pixels = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    elif images.is_floating_point():
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise NoiseCLRError(f"reader: float images must be [N,3,H,W] in [-1, 1], got shape {tuple(images.shape)}.")
        pixels = images.detach().float().cpu().clamp(-1.0, 1.0)
    else:
        raise NoiseCLRError(f"reader: unsupported tensor dtype {images.dtype}; pass uint8 or float images.")
    if tuple(pixels.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise NoiseCLRError(
            f"reader: images must be {IMAGE_SIZE}x{IMAGE_SIZE}, got {pixels.shape[-2]}x{pixels.shape[-1]}; "
            "resize them first."
        )
    return pixels.contiguous()


# ------------------------------------------------------------------------------------ reader
def default_reader_path(domain: str) -> Path:
    """``noiseclr/assets/readers/<domain>.safetensors``."""
    domain_factors(domain)
    return ASSETS_DIR / f"{domain}.safetensors"


def factors_signature(factors: Sequence[Factor]) -> list[list[Any]]:
    """JSON-able ``[[name, [values...]], ...]``: what a reader's heads mean."""
    return [[factor.name, list(factor.values)] for factor in factors]


class FactorReader:
    """Reads every factor of one domain from images.

    ``factors`` are the domain's factors in registry order; ``predict_indices`` columns follow it.
    """

    def __init__(self, domain: str, net: ReaderNet, metadata: Mapping[str, str] | None = None, device: str | torch.device = "cpu"):
        self.domain = domain
        self.factors: tuple[Factor, ...] = domain_factors(domain)
        if net.head_sizes != [len(factor.values) for factor in self.factors]:
            raise NoiseCLRError(f"reader for {domain}: head sizes do not match its factors; re-run {TRAIN_SCRIPT} --domain {domain}.")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def factor_names(self) -> list[str]:
        return [factor.name for factor in self.factors]

    # ---------------------------------------------------------------- persistence
    @classmethod
    def load(cls, domain: str, path: str | Path | None = None, device: str | torch.device = "cpu") -> FactorReader:
        """Load a reader from safetensors (default: the shipped one for ``domain``).

        Refuses weights for another domain, another factor registry or another format version.
        """
        factors = domain_factors(domain)
        path = Path(path) if path is not None else default_reader_path(domain)
        if not path.is_file():
            raise NoiseCLRError(f"reader for {domain}: no weights at {path}; run {TRAIN_SCRIPT} --domain {domain}.")
        tensors, metadata = read_safetensors(path, f"re-run {TRAIN_SCRIPT}.", what=f"reader for {domain}")
        if metadata.get("format") != FORMAT_NAME:
            raise NoiseCLRError(f"reader for {domain}: {path} is not a factor reader file; pass a file written by {TRAIN_SCRIPT}.")
        if metadata.get("format_version") != str(FORMAT_VERSION):
            raise NoiseCLRError(
                f"reader for {domain}: {path} has format version {metadata.get('format_version')}, expected {FORMAT_VERSION}; "
                f"re-run {TRAIN_SCRIPT} --domain {domain}."
            )
        if metadata.get("domain") != domain:
            raise NoiseCLRError(
                f"reader for {domain}: {path} holds the reader for {metadata.get('domain')!r}; pass the {domain} reader."
            )
        try:
            stored = json.loads(metadata.get("factors", "null"))
        except json.JSONDecodeError:
            stored = None
        if stored != factors_signature(factors):
            raise NoiseCLRError(
                f"reader for {domain} ({path}) was trained for other factors; re-run {TRAIN_SCRIPT} --domain {domain}."
            )
        try:
            config = ReaderConfig.from_json(metadata["config"])
            net = ReaderNet([len(factor.values) for factor in factors], config)
            net.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in tensors.items()})
        except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise NoiseCLRError(f"reader for {domain}: {path} does not match its architecture ({reason}); re-run {TRAIN_SCRIPT} --domain {domain}.") from None
        return cls(domain, net, metadata, device)

    def save(self, path: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
        """Write fp16 weights plus metadata (strings; dicts/lists are stored as JSON)."""
        metadata = {**self.metadata}
        for key, value in (extra_metadata or {}).items():
            metadata[key] = value if isinstance(value, str) else json.dumps(value)
        metadata.update(
            format=FORMAT_NAME,
            format_version=str(FORMAT_VERSION),
            domain=self.domain,
            factors=json.dumps(factors_signature(self.factors)),
            config=self.net.config.to_json(),
        )
        tensors = {
            key: value.detach().cpu().half() if value.is_floating_point() else value.detach().cpu()
            for key, value in self.net.state_dict().items()
        }
        self.metadata = metadata
        return atomic_save_safetensors(path, tensors, metadata)

    # ---------------------------------------------------------------- prediction
    @torch.inference_mode()
    def predict_logits(self, images: ImageInput, batch_size: int = 256) -> list[torch.Tensor]:
        """One float32 ``[N, V_f]`` logits tensor per factor (CPU)."""
        pixels = to_reader_input(images)
        chunks = []
        for start in range(0, len(pixels), batch_size):
            chunks.append(self.net(pixels[start : start + batch_size].to(self.device)).float().cpu())
        return self.net.split_logits(torch.cat(chunks))

    def predict_probs(self, images: ImageInput) -> dict[str, torch.Tensor]:
        """Factor name -> softmax probabilities ``[N, V]`` (columns follow the factor's values)."""
        return {factor.name: logits.softmax(dim=1) for factor, logits in zip(self.factors, self.predict_logits(images))}

    def predict_indices(self, images: ImageInput) -> torch.Tensor:
        """Most likely value index per factor: LongTensor ``[N, F]`` (registry order)."""
        return torch.stack([logits.argmax(dim=1) for logits in self.predict_logits(images)], dim=1)

    def predict_labels(self, images: ImageInput) -> list[Labels]:
        """Most likely value name per factor, one labels dict per image."""
        indices = self.predict_indices(images).tolist()
        return [{factor.name: factor.values[i] for factor, i in zip(self.factors, row)} for row in indices]

    def __repr__(self) -> str:
        return f"FactorReader(domain={self.domain!r}, factors={len(self.factors)}, date={self.metadata.get('date', '?')})"


def encode_many(domain: str, labels: Sequence[Mapping[str, str]]) -> torch.Tensor:
    """LongTensor ``[N, F]`` of value indices (registry order)."""
    return torch.tensor([encode_labels(domain, item) for item in labels], dtype=torch.long).reshape(len(labels), -1)


def reader_accuracy(reader: FactorReader, images: ImageInput, labels: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Factor name -> fraction of images whose value the reader reads correctly."""
    truth = encode_many(reader.domain, labels)
    predicted = reader.predict_indices(images)
    if len(truth) != len(predicted):
        raise NoiseCLRError(f"reader_accuracy: got {len(labels)} labels for {len(predicted)} images; give one per image.")
    correct = (predicted == truth).float().mean(dim=0)
    return {factor.name: float(value) for factor, value in zip(reader.factors, correct)}


def eval_renders(domain: str, count: int, start: int = 0) -> tuple[np.ndarray, list[Labels]]:
    """Fresh evaluation renders: seeds ``EVAL_SEED_BASE + start ...`` (never used for training)."""
    if count < 0 or start < 0 or EVAL_SEED_BASE + start + count > BASE_MODEL_SEED_BASE:
        raise NoiseCLRError(f"eval_renders: start {start} / count {count} out of the evaluation range.")
    return render_many(domain, range(EVAL_SEED_BASE + start, EVAL_SEED_BASE + start + count))


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
    sigmas = torch.as_tensor(sigma, dtype=torch.float32).expand(count) if not torch.is_tensor(sigma) or sigma.ndim == 0 else sigma
    radius = max(1, math.ceil(3.0 * float(sigmas.max())))
    kernels = gaussian_kernels(sigmas, radius).repeat_interleave(channels, dim=0).to(pixels)
    flat = pixels.reshape(1, count * channels, height, width)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=count * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=count * channels)
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


def augment_for_reading(pixels: torch.Tensor, rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()) -> torch.Tensor:
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
        small = F.interpolate(images[i : i + 1], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
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
    brightness = 1.0 + torch.from_numpy(rng.uniform(-settings.brightness, settings.brightness, size=(count, 1, 1, 1))).float()
    contrast = 1.0 + torch.from_numpy(rng.uniform(-settings.contrast, settings.contrast, size=(count, 1, 1, 1))).float()
    offset = torch.from_numpy(rng.uniform(-settings.channel_offset, settings.channel_offset, size=(count, 3, 1, 1))).float()
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
    domain: str, settings: ReaderTrainSettings = ReaderTrainSettings(), progress: bool = True, device: str | torch.device = "cpu"
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
    train_pixels, train_labels = render_many(domain, range(READER_TRAIN_SEED_BASE, READER_TRAIN_SEED_BASE + settings.train_images))
    val_pixels, val_labels = render_many(domain, range(READER_VAL_SEED_BASE, READER_VAL_SEED_BASE + settings.val_images))
    render_seconds = time.monotonic() - started
    train_targets = encode_many(domain, train_labels)
    log.info("reader %s: rendered %d + %d images in %.1f s", domain, settings.train_images, settings.val_images, render_seconds)

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
        loss = sum(F.cross_entropy(head, targets[:, j], label_smoothing=settings.label_smoothing) for j, head in enumerate(logits)) / len(logits)
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
