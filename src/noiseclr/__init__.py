"""noiseclr: text-free discovery of edit directions in text-to-image diffusion models (NoiseCLR).

The public API mirrors the command line::

    model = DiffusionModel.load("embedded")          # or a diffusers folder / hub id
    result = discover(model, "images/", "runs/x", DiscoverySettings(num_directions=20))
    edited = edit(model, images, [DirectionTerm(result.directions, 0, scale=4.0)])

``import noiseclr`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless you set it (see :mod:`noiseclr.runtime`).
The public names are imported on first use (PEP 562, as diffusers and transformers do), so
``import noiseclr`` and ``noiseclr --version`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .runtime import default_wait_policy
from .version import __version__

# Before torch starts its OpenMP pool (see noiseclr.runtime): a user's own setting wins.
default_wait_policy()

_EXPORTS: dict[str, tuple[str, ...]] = {
    "bench": ("BenchResult", "BenchSettings", "run_bench"),
    "demo": ("DemoResult", "DemoSettings", "run_demo"),
    "directions": ("Directions",),
    "discovery": ("DiscoveryResult", "DiscoverySettings", "discover"),
    "errors": ("NoiseCLRError",),
    "explore": ("ExploreResult", "ExploreSettings", "explore"),
    "inversion": ("invert",),
    "model": ("EMBEDDED", "DiffusionModel"),
    "regions": ("AutoRegion", "Region"),
    "runtime": ("RuntimeSettings",),
    "editing": ("EditResult", "EditSettings", "edit"),
    "generation": ("GenerateResult", "GenerateSettings", "generate"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_MODULE_OF, "__version__"])


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'noiseclr' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools see: the eager imports
    from .bench import BenchResult, BenchSettings, run_bench
    from .demo import DemoResult, DemoSettings, run_demo
    from .directions import Directions
    from .discovery import DiscoveryResult, DiscoverySettings, discover
    from .editing import EditResult, EditSettings, edit
    from .errors import NoiseCLRError
    from .explore import ExploreResult, ExploreSettings, explore
    from .generation import GenerateResult, GenerateSettings, generate
    from .inversion import invert
    from .model import EMBEDDED, DiffusionModel
    from .regions import AutoRegion, Region
    from .runtime import RuntimeSettings
    from .terms import DirectionTerm, PromptTerm, parse_direction_spec
