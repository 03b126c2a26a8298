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
trained with augmentations (blur, resampling, JPEG, noise, mild brightness and contrast jitter,
small shifts; no hue changes, which would destroy the colour factors): that half lives in
:mod:`noiseclr.basemodel.reader_training`, beside the base model's training. This module is the network,
its file format and inference.

Seed ranges: :mod:`noiseclr.world.seeds` (:func:`eval_renders` reads the evaluation range).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import NoiseCLRError
from ..fileio import atomic_save_safetensors, read_safetensors
from .factors import Factor, Labels, domain_factors, encode_labels
from .render import IMAGE_SIZE, render_many
from .seeds import BASE_MODEL_SEED_BASE, EVAL_SEED_BASE, READER_TRAIN_SEED_BASE, READER_VAL_SEED_BASE  # noqa: F401 (re-exported)

log = logging.getLogger("noiseclr")


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
    return [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 if kernel % 2 else 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


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
            nn.Flatten(),
            nn.Linear(channels * side * side, config.hidden),
            nn.ReLU(inplace=True),
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
        raise NoiseCLRError(
            f"reader: unsupported image type {type(images).__name__}; pass uint8 arrays, PIL images or tensors."
        )
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

    def __init__(
        self, domain: str, net: ReaderNet, metadata: Mapping[str, str] | None = None, device: str | torch.device = "cpu"
    ):
        self.domain = domain
        self.factors: tuple[Factor, ...] = domain_factors(domain)
        if net.head_sizes != [len(factor.values) for factor in self.factors]:
            raise NoiseCLRError(
                f"reader for {domain}: head sizes do not match its factors; re-run {TRAIN_SCRIPT} --domain {domain}."
            )
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
            raise NoiseCLRError(
                f"reader for {domain}: {path} is not a factor reader file; pass a file written by {TRAIN_SCRIPT}."
            )
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
            net.load_state_dict(
                {key: value.float() if value.is_floating_point() else value for key, value in tensors.items()}
            )
        except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise NoiseCLRError(
                f"reader for {domain}: {path} does not match its architecture ({reason}); re-run {TRAIN_SCRIPT} --domain {domain}."
            ) from None
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
        return (
            f"FactorReader(domain={self.domain!r}, factors={len(self.factors)}, date={self.metadata.get('date', '?')})"
        )


def encode_many(domain: str, labels: Sequence[Mapping[str, str]]) -> torch.Tensor:
    """LongTensor ``[N, F]`` of value indices (registry order)."""
    return torch.tensor([encode_labels(domain, item) for item in labels], dtype=torch.long).reshape(len(labels), -1)


def reader_accuracy(reader: FactorReader, images: ImageInput, labels: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Factor name -> fraction of images whose value the reader reads correctly."""
    truth = encode_many(reader.domain, labels)
    predicted = reader.predict_indices(images)
    if len(truth) != len(predicted):
        raise NoiseCLRError(
            f"reader_accuracy: got {len(labels)} labels for {len(predicted)} images; give one per image."
        )
    correct = (predicted == truth).float().mean(dim=0)
    return {factor.name: float(value) for factor, value in zip(reader.factors, correct)}


def eval_renders(domain: str, count: int, start: int = 0) -> tuple[np.ndarray, list[Labels]]:
    """Fresh evaluation renders: seeds ``EVAL_SEED_BASE + start ...`` (never used for training)."""
    if count < 0 or start < 0 or EVAL_SEED_BASE + start + count > BASE_MODEL_SEED_BASE:
        raise NoiseCLRError(f"eval_renders: start {start} / count {count} out of the evaluation range.")
    return render_many(domain, range(EVAL_SEED_BASE + start, EVAL_SEED_BASE + start + count))
