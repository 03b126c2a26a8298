"""noiseclr: text-free discovery of edit directions in text-to-image diffusion models (NoiseCLR).

The public API mirrors the command line::

    model = DiffusionModel.load("embedded")          # or a diffusers folder / hub id
    result = discover(model, "images/", "runs/x", DiscoverySettings(num_directions=20))
    edited = edit(model, images, [DirectionTerm(result.directions, 0, scale=4.0)])

``import noiseclr`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless you set it (see :mod:`noiseclr.runtime`).
"""

from __future__ import annotations

from .runtime import default_wait_policy

# Before torch starts its OpenMP pool (see noiseclr.runtime): a user's own setting wins.
default_wait_policy()

from .bench import BenchResult, BenchSettings, run_bench  # noqa: E402
from .demo import DemoResult, DemoSettings, run_demo  # noqa: E402
from .directions import Directions  # noqa: E402
from .discovery import DiscoveryResult, DiscoverySettings, discover  # noqa: E402
from .editing import (  # noqa: E402
    DirectionTerm,
    EditResult,
    EditSettings,
    GenerateResult,
    GenerateSettings,
    PromptTerm,
    edit,
    generate,
    parse_direction_spec,
)
from .errors import NoiseCLRError  # noqa: E402
from .explore import ExploreResult, ExploreSettings, explore  # noqa: E402
from .inversion import invert  # noqa: E402
from .regions import AutoRegion, Region  # noqa: E402
from .runtime import RuntimeSettings  # noqa: E402
from .model import EMBEDDED, DiffusionModel  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "EMBEDDED",
    "AutoRegion",
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
    "GenerateResult",
    "GenerateSettings",
    "NoiseCLRError",
    "PromptTerm",
    "Region",
    "RuntimeSettings",
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
