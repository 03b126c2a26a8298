"""The methods' directions: what each method contributes, its calibration, the command line's
directions files and inputs, and the order the methods run in."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..directions import Directions
from ..errors import NoiseCLRError
from ..metrics import (
    EditConfig,
)
from ..model import DiffusionModel
from ..reuse import discover_or_reuse
from ..strength import (
    calibrate,
    calibration_timesteps,
    noise_response,
)
from ..terms import DirectionTerm, EditTerm, PromptTerm
from .settings import BENCH_DOMAINS, DISCOVERY_METHODS, BenchSettings

log = logging.getLogger("noiseclr")


def prompt_captions(domain: str) -> list[tuple[str, str, str]]:
    """``(factor, value, caption)`` for every value of every factor of ``domain``."""
    from ..world.captions import caption_for_value
    from ..world.factors import domain_factors

    return [
        (factor.name, value, caption_for_value(domain, factor.name, value))
        for factor in domain_factors(domain)
        for value in factor.values
    ]


@dataclass
class MethodDirections:
    """The directions a method contributes: token directions (a :class:`Directions`) or prompts."""

    name: str
    source: str
    directions: Directions | None = None
    prompts: list[tuple[str, str, str]] | None = None
    """(factor, value, caption) per prompt direction."""
    duplicates: list[list[float]] | None = None
    """``[i, j, cos]``: pairs of directions that make the same change (|cos| >= 0.8) on the calibration images."""
    responses: list[float] | None = None
    """Each direction's (or prompt's) response on the run's calibration images (:mod:`noiseclr.strength`):
    what a strength grid entry means for it. Every method is calibrated on the same images."""

    @property
    def count(self) -> int:
        return self.directions.count if self.directions is not None else len(self.prompts or [])

    def term(self, index: int, config: EditConfig, sign: float = 1.0, region: str | None = None) -> EditTerm:
        amount = sign * abs(config.scale)
        by_strength = config.unit == "strength"
        scale, strength = (None, amount) if by_strength else (amount, None)
        if self.directions is not None:
            term: EditTerm = DirectionTerm(
                self.directions, index, scale, config.start, config.end, strength=strength, region=region
            )
        else:
            assert self.prompts is not None
            term = PromptTerm(self.prompts[index][2], scale, config.start, config.end, strength=strength, region=region)
        if by_strength:
            assert self.responses is not None, "calibrate the method before a strength grid"
            term.resolve(self.responses[index])
        return term

    def label(self, index: int) -> str:
        if self.directions is not None:
            return f"direction {index}"
        assert self.prompts is not None
        factor, value, caption = self.prompts[index]
        return f"prompt {factor}={value}"


def calibrate_method(model: DiffusionModel, method: MethodDirections, latents: torch.Tensor) -> list[float]:
    """Every direction's (or prompt's) response on ``latents``, measured the same way for every method;
    for token directions also the pairs that are one axis twice (``method.duplicates``)."""
    if method.directions is not None:
        record = calibrate(model, method.directions, latents)  # the calibration stored with directions
        method.duplicates = record["duplicates"]
        return record["response"]
    timesteps = calibration_timesteps(model)
    assert method.prompts is not None
    conditionings = model.encode_prompts([caption for _, _, caption in method.prompts])
    return [float(r) for r in noise_response(model, conditionings, latents, timesteps)]


# ---------------------------------------------------------------------------- one method
def _fingerprint(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def method_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "method"


def parse_directions_args(values: Sequence[str]) -> dict[str, Path]:
    """``--directions`` values -> method name -> file. ``NAME=FILE`` names the method (e.g.
    ``noiseclr-all=run/directions.safetensors`` replaces that discovery); a bare FILE is ``file:<stem>``."""
    found: dict[str, Path] = {}
    for value in values:
        text = str(value)
        match = re.match(r"^([A-Za-z][A-Za-z0-9_.:-]*)=(.+)$", text)
        if match and not Path(text).exists():
            name, path = match.group(1), Path(match.group(2))
            if name in ("random", "prompt"):
                raise NoiseCLRError(f"--directions {text}: {name} is a built-in baseline; name the file differently.")
        else:
            path = Path(text)
            name = f"file:{path.stem}"
            if name in found:
                name = f"{name}-{len(found)}"
        if not path.is_file():
            raise NoiseCLRError(f"--directions {text}: no such directions file; check the path.")
        found[name] = path
    return found


def check_bench_inputs(
    domain: str, settings: BenchSettings, files: Mapping[str, Path], cross_domain: Sequence[Any] | None
) -> None:
    """Every check that needs no model: one-line errors before anything is loaded."""
    settings.validate()
    if domain not in (*BENCH_DOMAINS, "scenes"):
        raise NoiseCLRError(f"--domain {domain}: unknown; use faces or cats (or scenes with --cross-domain).")
    if domain == "scenes" and cross_domain is None:
        raise NoiseCLRError(
            "--domain scenes: the scene benchmark is the cross-domain one; pass --cross-domain FACES_FILE CATS_FILE."
        )
    if domain != "scenes" and not settings.methods and not files and cross_domain is None:
        raise NoiseCLRError("--methods: nothing to run; name at least one method or pass --directions FILE.")
    for path in files.values():
        if not Path(path).is_file():
            raise NoiseCLRError(f"--directions {path}: no such directions file; check the path.")
    for path in cross_domain or ():
        if not isinstance(path, Directions) and not Path(path).is_file():
            raise NoiseCLRError(f"--cross-domain {path}: no such directions file; check the path.")


def _discovered(
    model: DiffusionModel,
    method: str,
    pixels: torch.Tensor,
    out: Path,
    settings: BenchSettings,
    domain: str,
    *,
    resume: bool,
    progress: bool,
) -> Directions:
    def announce() -> None:
        log.info(
            "%s: discovering %d directions (%s, %d steps) on %d unlabeled renders",
            method,
            settings.num_directions,
            _variant(method),
            settings.discovery_steps,
            pixels.shape[0],
        )

    return discover_or_reuse(
        model,
        pixels,
        out / "discovery" / method,
        settings.discovery(method, domain),
        resume=resume,
        progress=progress,
        on_discover=announce,
    )


def _variant(method: str) -> str:
    """``all-anchors loss, magnitude_floor 0.01``: how a NoiseCLR method's discovery differs."""
    changes = DISCOVERY_METHODS[method]
    extra = ", ".join(f"{k} {v}" for k, v in changes.items() if k != "loss_variant")
    return f"{changes['loss_variant']} loss" + (f", {extra}" if extra else "")


def _method_order(methods: Sequence[str], files: Mapping[str, Path]) -> list[str]:
    order = [m for m in DISCOVERY_METHODS if m in methods or m in files]
    order += [name for name in files if name not in order]
    order += [m for m in ("random", "prompt") if m in methods]
    return order
