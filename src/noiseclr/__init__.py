"""noiseclr: text-free discovery of edit directions in text-to-image diffusion models (NoiseCLR)."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import NoiseCLRError
from .model import EMBEDDED, DiffusionModel

__all__ = ["EMBEDDED", "DiffusionModel", "NoiseCLRError", "__version__"]
