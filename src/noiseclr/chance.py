"""The random reference: does a direction change its factor more than a random direction would?

A direction calibrated to a strength changes *something*: calibrated random token embeddings
change skin or background on most images too. So a change table alone cannot tell a good
direction from a random one. The reference is R random directions (Gaussian, the model's typical
token norm), calibrated to the same strength, applied to the same images at both signs and read
by the same reader: their change table ``random_changes`` [R, F].

A direction with change row ``c`` [F] is judged by its **margin over chance**::

    q_f    = 95th percentile of random_changes[:, f]        (per factor: some factors move easily)
    T(c)   = max_f (c_f - q_f)                              (its best factor, above random's 95th)

and it **beats random** when ``T(c) > tau``, where ``tau`` is the 95th percentile of ``T`` over the
random directions themselves, each judged leave-one-out (against the other R - 1). Taking the max
over factors picks the most favourable factor, so a plain per-factor 95th would let far more than
5% of random directions through; ``tau`` is calibrated on the same max, so a fresh random
direction beats random about 1 time in 20. ``tau`` is at least 0: a direction must exceed
random's 95th percentile on some factor.

The random table depends on the model, the domain, the strength, the images and the edit
protocol, not on the directions judged, so it is computed once and cached as JSON
(:class:`ReferenceCache`), keyed by all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_write_json

QUANTILE = 0.95
"""Random's percentile that a change must beat, per factor and for the margin."""
DEFAULT_COUNT = 20
"""Random directions in a reference."""
CACHE_VERSION = 1


@dataclass(frozen=True)
class RandomReference:
    """The change table of R calibrated random directions at one strength, and what follows from it."""

    changes: torch.Tensor
    """[R, F] float64: fraction of the images whose factor f changed under either sign."""
    factor_names: tuple[str, ...]
    strength: float
    """The edit strength (percent) the random directions were calibrated to."""
    images: int
    key: str = ""

    @property
    def count(self) -> int:
        return int(self.changes.shape[0])

    def percentiles(self) -> torch.Tensor:
        """``q_f`` [F]: random's 95th percentile of each factor's change."""
        return factor_percentiles(self.changes)

    def threshold(self) -> float:
        """``tau``: the margin a direction must exceed to beat random (>= 0)."""
        return margin_threshold(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "key": self.key,
            "strength": self.strength,
            "images": self.images,
            "factor_names": list(self.factor_names),
            "changes": [[round(float(v), 6) for v in row] for row in self.changes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RandomReference:
        return cls(
            changes=torch.tensor(data["changes"], dtype=torch.float64),
            factor_names=tuple(data["factor_names"]),
            strength=float(data["strength"]),
            images=int(data["images"]),
            key=str(data.get("key", "")),
        )


# --------------------------------------------------------------------------------- math
def factor_percentiles(random_changes: torch.Tensor, quantile: float = QUANTILE) -> torch.Tensor:
    """[F]: the ``quantile`` of each column of ``random_changes`` [R, F] (linear interpolation)."""
    return torch.quantile(random_changes.to(torch.float64), quantile, dim=0)


def margins(changes: torch.Tensor, percentiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``T`` [K] and its factor [K] of change rows [K, F] against per-factor percentiles [F]."""
    above = changes.to(torch.float64) - percentiles.to(torch.float64)
    return above.max(dim=1)


def leave_one_out_margins(random_changes: torch.Tensor, quantile: float = QUANTILE) -> torch.Tensor:
    """[R]: each random direction's margin against the other R - 1 (needs R >= 2)."""
    count = random_changes.shape[0]
    if count < 2:
        raise ValueError("a random reference needs at least 2 directions")
    values = []
    for r in range(count):
        others = torch.cat([random_changes[:r], random_changes[r + 1 :]])
        values.append(margins(random_changes[r : r + 1], factor_percentiles(others, quantile))[0][0])
    return torch.stack(values)


def margin_threshold(random_changes: torch.Tensor, quantile: float = QUANTILE) -> float:
    """``tau`` = max(0, the ``quantile`` of the random directions' leave-one-out margins)."""
    return max(0.0, float(torch.quantile(leave_one_out_margins(random_changes, quantile), quantile)))


def judge(changes: torch.Tensor, reference: RandomReference) -> list[dict[str, Any]]:
    """Per row of ``changes`` [K, F] (same factors and images as the reference): its best factor
    over chance, its change there, random's 95th percentile there, the margin, ``tau`` and whether
    it beats random."""
    if changes.ndim != 2 or changes.shape[1] != len(reference.factor_names):
        raise ValueError(f"changes must be [K, {len(reference.factor_names)}], got {tuple(changes.shape)}")
    percentiles = reference.percentiles()
    tau = reference.threshold()
    value, factor = margins(changes, percentiles)
    rows = []
    for k in range(changes.shape[0]):
        f = int(factor[k])
        rows.append(
            {
                "factor": reference.factor_names[f],
                "change": round(float(changes[k, f]), 4),
                "random_p95": round(float(percentiles[f]), 4),
                "margin": round(float(value[k]), 4),
                "threshold": round(tau, 4),
                "beats_random": bool(float(value[k]) > tau + 1e-12),
                "count": reference.count,
            }
        )
    return rows


def beats_random(changes: torch.Tensor, reference: RandomReference) -> torch.Tensor:
    """bool [K]: which rows of ``changes`` beat the random reference."""
    value, _ = margins(changes, reference.percentiles())
    return value > reference.threshold() + 1e-12


def describe(row: Mapping[str, Any]) -> str:
    """One line for a :func:`judge` row: ``beats random (hair_color 0.83 vs 95th of 20 random 0.20)``."""
    verdict = "beats random" if row["beats_random"] else "within chance"
    return f"{verdict} ({row['factor']} {row['change']:.2f} vs 95th of {row.get('count', '?')} random {row['random_p95']:.2f})"


# -------------------------------------------------------------------------- measuring it
def random_vectors(model: Any, count: int = DEFAULT_COUNT, seed: int = 0) -> torch.Tensor:
    """[count, W] Gaussian token rows, each encoder's part at its typical token norm (seeded apart
    from the benchmark's random method, so its directions are never their own reference)."""
    generator = torch.Generator().manual_seed(
        int(hashlib.sha256(f"noiseclr-random-reference:{seed}".encode()).hexdigest()[:15], 16)
    )
    rows = torch.randn(count, model.token_width, generator=generator, dtype=torch.float64)
    return model.scale_to_token_norms(rows.float()).float()


def measure_reference(
    model: Any,
    reader: Any,
    split: Any,
    factor_names: Sequence[str],
    strength: float,
    window: tuple[float, float] = (0.0, 1.0),
    *,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    passes: Any = None,
    progress: bool = True,
) -> RandomReference:
    """The change table of ``count`` random directions at edit ``strength`` (percent, calibrated on
    the split's own latents) in ``window``, both signs, on every image of ``split`` (a
    :class:`~noiseclr.measure.Split`), read by ``reader``."""
    from .directions import Directions
    from .measure import PassSizes, read_axis_edits
    from .metrics import SIGNS, axis_changed, change_fractions
    from .terms import DirectionTerm

    directions = Directions.for_model(
        model, random_vectors(model, count, seed), settings={"baseline": "random reference"}
    )
    edits = [
        [DirectionTerm(directions, k, None, *window, strength=sign * abs(float(strength)))]
        for k in range(count)
        for sign in SIGNS
    ]
    _, changed = read_axis_edits(
        model, split, reader, edits, passes or PassSizes(), desc="random reference", progress=progress
    )
    changes = change_fractions(axis_changed(changed))
    return RandomReference(changes.to(torch.float64), tuple(factor_names), float(abs(strength)), int(split.count))


def model_digest(model: Any) -> str:
    """A digest of the weights the reference depends on (UNet and text encoders): up to 4 096 evenly
    spaced values of every tensor, as fp16, so a retrained UNet or a dtype change of the same weights
    is told apart in milliseconds."""
    digest = hashlib.sha256()
    modules = [("unet", model.unet), *((f"encoder{i}", encoder) for i, (encoder, _) in enumerate(model.encoders))]
    for prefix, module in modules:
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().flatten()
            step = max(1, flat.numel() // 4096)
            # transformers 5 names CLIPTextModel tensors without "text_model.", 4.x with it: same weights, same digest
            digest.update(f"{prefix}.{name.removeprefix('text_model.')}:{tuple(tensor.shape)}".encode())
            digest.update(flat[::step][:4096].to("cpu", torch.float16).numpy().tobytes())
    return digest.hexdigest()[:20]


def split_reference(
    model: Any,
    reader: Any,
    split: Any,
    factor_names: Sequence[str],
    strength: float,
    window: tuple[float, float] = (0.0, 1.0),
    *,
    protocol: Any,
    cache: ReferenceCache | None,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    progress: bool = True,
) -> tuple[RandomReference, bool]:
    """:func:`measure_reference`, from ``cache`` when it holds the same model, domain, images,
    protocol, reader factors, strength, window, count and seed; and whether it came from the cache."""
    payload = reference_payload(model, split, factor_names, strength, window, protocol, count, seed)

    def compute() -> RandomReference:
        return measure_reference(
            model,
            reader,
            split,
            factor_names,
            strength,
            window,
            count=count,
            seed=seed,
            passes=protocol.passes,
            progress=progress,
        )

    if cache is None:
        return compute(), False
    return cache.get_or_compute(reference_key(payload), compute)


# -------------------------------------------------------------------------------- cache
def reference_payload(
    model: Any,
    split: Any,
    factor_names: Sequence[str],
    strength: float,
    window: tuple[float, float],
    protocol: Any,
    count: int,
    seed: int,
) -> dict[str, Any]:
    """Everything a random table depends on; ``split`` needs only its ``domain``, ``role`` and ``seeds``."""
    return {
        "model": model_digest(model),
        "domain": split.domain,
        "role": split.role,
        "seeds": list(split.seeds),
        "steps": protocol.steps,
        "inversion": protocol.inversion,
        "protocol_seed": protocol.seed,
        "factors": list(factor_names),
        "strength": round(abs(float(strength)), 6),
        "window": [float(w) for w in window],
        "count": int(count),
        "seed": int(seed),
        "version": CACHE_VERSION,
    }


def reference_key(payload: Mapping[str, Any]) -> str:
    """A stable digest of what the random table depends on (model fingerprint, domain, strength,
    image seeds, protocol, reader, count, seed)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


SHIPPED_DIR = Path(__file__).parent / "assets" / "chance"
"""References computed once for the embedded model at the demo's defaults, shipped with it (a
read-only second cache): a fresh install's first demo does not spend two minutes on them. Any
other model, domain, strength, image set or protocol has another key and is computed as usual."""


class ReferenceCache:
    """Random references as JSON files ``<folder>/random-<key>.json``; a damaged or stale file is
    recomputed. ``shipped`` folders are read too (never written), after ``folder``."""

    def __init__(self, folder: str | Path, shipped: Sequence[str | Path] = ()):
        self.folder = Path(folder).expanduser()
        self.shipped = [Path(extra) for extra in shipped]

    def path(self, key: str) -> Path:
        return self.folder / f"random-{key}.json"

    def get(self, key: str) -> RandomReference | None:
        for folder in (self.folder, *self.shipped):
            reference = self._read(folder / self.path(key).name, key)
            if reference is not None:
                return reference
        return None

    def _read(self, path: Path, key: str) -> RandomReference | None:
        try:
            data = json.loads(path.read_text())
            reference = RandomReference.from_json(data)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if data.get("version") != CACHE_VERSION or reference.key != key or reference.changes.ndim != 2:
            return None
        if not bool(torch.isfinite(reference.changes).all()) or reference.count < 2:
            return None
        return reference

    def put(self, reference: RandomReference) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.path(reference.key), reference.to_json())

    def get_or_compute(self, key: str, compute: Callable[[], RandomReference]) -> tuple[RandomReference, bool]:
        """The cached reference of ``key``, or ``compute()`` stored under it; and whether it was cached."""
        cached = self.get(key)
        if cached is not None:
            return cached, True
        reference = compute()
        reference = RandomReference(
            reference.changes, reference.factor_names, reference.strength, reference.images, key
        )
        self.put(reference)
        return reference, False


def default_cache_dir() -> Path:
    """``$NOISECLR_CACHE`` or ``~/.cache/noiseclr`` (XDG_CACHE_HOME respected)."""
    import os

    if os.environ.get("NOISECLR_CACHE"):
        return Path(os.environ["NOISECLR_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "noiseclr"


__all__ = [
    "DEFAULT_COUNT",
    "QUANTILE",
    "RandomReference",
    "ReferenceCache",
    "beats_random",
    "default_cache_dir",
    "describe",
    "factor_percentiles",
    "judge",
    "leave_one_out_margins",
    "margin_threshold",
    "margins",
    "measure_reference",
    "model_digest",
    "random_vectors",
    "reference_key",
    "split_reference",
]
