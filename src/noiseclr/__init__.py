"""noiseclr: text-free discovery of edit directions in text-to-image diffusion models (NoiseCLR).

The public API mirrors the command line::

    model = DiffusionModel.load("embedded")          # or a diffusers folder / hub id
    result = discover(model, "images/", "runs/x", DiscoverySettings(num_directions=20))
    edited = edit(model, images, [DirectionTerm(result.directions, 0, scale=4.0)])
"""

from __future__ import annotations

__version__ = "0.1.0"

from .bench import BenchResult, BenchSettings, run_bench
from .demo import DemoResult, DemoSettings, run_demo
from .directions import Directions
from .discovery import DiscoveryResult, DiscoverySettings, discover
from .editing import DirectionTerm, EditResult, EditSettings, PromptTerm, edit, generate, parse_direction_spec
from .errors import NoiseCLRError
from .explore import ExploreResult, ExploreSettings, explore
from .inversion import invert
from .model import EMBEDDED, DiffusionModel

__all__ = [
    "EMBEDDED",
    "BenchResult",
    "BenchSettings",
    "DemoResult",
    "DemoSettings",
    "DiffusionModel",
    "DirectionTerm",
    "Directions",
    "DiscoveryResult",
    "DiscoverySettings",
    "EditResult",
    "EditSettings",
    "ExploreResult",
    "ExploreSettings",
    "NoiseCLRError",
    "PromptTerm",
    "__version__",
    "discover",
    "edit",
    "explore",
    "generate",
    "invert",
    "parse_direction_spec",
    "run_bench",
    "run_demo",
]
