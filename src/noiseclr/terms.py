"""Edit terms: what the editing kernel applies, and the command line's ``FILE:INDEX=SCALE@A:B#REGION``.

A term is ``scale * (eps(x_t, c) - eps(x_t, c_0))`` on a window of the denoising steps, optionally
inside a region: :class:`DirectionTerm` takes ``c`` from a discovered direction, :class:`PromptTerm`
from a text prompt. Both share :class:`Term`'s fields and checks. :func:`parse_direction_spec` reads
the command-line syntax (a file's stored ``edit_defaults`` fill what it leaves out);
:func:`stored_edit_protocol` is the inversion and step count a direction was measured with.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .directions import Directions
from .errors import NoiseCLRError
from .regions import Region, as_region
from .strength import CALIBRATION_IMAGES, calibration_timesteps, direction_response, noise_response, scale_for

if TYPE_CHECKING:
    from .model import DiffusionModel

log = logging.getLogger("noiseclr")

SPEC_FORM = (
    "FILE:INDEX[=SCALE|=STRENGTH%][@START:END][#auto|#MASK.png|#box=X0,Y0,X1,Y1|#auto+box=X0,Y0,X1,Y1], "
    "e.g. runs/faces/directions.safetensors:3=15%@0:0.6#auto"
)
_WINDOW_TOLERANCE = 1e-9  # so 0.6 * 50 steps is exactly 30 steps, not 31


# ------------------------------------------------------------------------------------ terms
class Term:
    """What both term kinds share: how much (a scale or a strength), when (a window) and where (a region).

    Subclasses are declared with :func:`edit_term`, which appends these fields after their own
    identity fields (so ``DirectionTerm(directions, 3, 4.0, 0.0, 0.6)`` and ``PromptTerm("a cat", 3.0)``
    read positionally as before).
    """

    scale: float | None = None
    """lambda in ``lambda * (eps(c_k) - eps(c_0))``; None when the term is given a ``strength``."""
    start: float = 0.0
    """Fraction of the denoising steps where the term switches on (0 = first, noisiest step)."""
    end: float = 1.0
    """Fraction where it switches off (1 = after the last step)."""
    strength: float | None = None
    """Percent change of the noise prediction (:mod:`noiseclr.strength`); sets ``scale`` when resolved."""
    response: float | None = None
    """The direction's response the scale was derived from (set by :meth:`resolve`)."""
    region: Region | str | Path | torch.Tensor | None = None
    """Where the term acts: None (everywhere), ``"auto"``, a mask image path or a [H, W] / [N, H, W]
    tensor in [0, 1] (:mod:`noiseclr.regions`); normalised to None or a Region."""

    def __post_init__(self) -> None:
        self.check_identity()
        _check_scale_and_window(self)
        _check_region(self)

    def check_identity(self) -> None:
        """Check or normalise the subclass's own fields (before the shared ones are checked)."""

    def label(self) -> str:
        """What the term applies, e.g. ``faces.safetensors 3: smile`` or ``prompt 'a cat'``."""
        raise NotImplementedError

    def describe(self) -> str:
        """Short label, e.g. ``faces.safetensors 3: smile x4.5 @0-0.6 #auto`` or ``... 15% (x4.5)``."""
        return f"{self.label()} {_amount(self)}{_where(self)}"

    def active_steps(self, steps: int) -> torch.Tensor:
        """[steps] bool: whether the term acts at each denoising step."""
        return window_mask(self.start, self.end, steps)

    def resolve(self, response: float) -> None:
        """Set the scale from the strength and the direction's response (:mod:`noiseclr.strength`)."""
        self.response = float(response)
        self.scale = scale_for(self.strength, response) if self.strength is not None else self.scale

    @property
    def amount(self) -> float:
        """The signed size as given (strength if given, else scale): what "nonzero" and signs read."""
        return float(self.strength if self.strength is not None else self.scale)


_SHARED_FIELDS = tuple(Term.__annotations__)


def edit_term(cls: type) -> type:
    """A dataclass of ``cls``'s own fields followed by :class:`Term`'s shared ones (with their defaults)."""
    annotations = dict(cls.__dict__.get("__annotations__", {}))
    for name in _SHARED_FIELDS:
        annotations[name] = Term.__annotations__[name]
        setattr(cls, name, getattr(Term, name))
    cls.__annotations__ = annotations
    return dataclass(eq=False)(cls)


@edit_term
class DirectionTerm(Term):
    """One direction applied with a scale (or a calibrated strength) over a window of the denoising steps."""

    directions: Directions
    index: int

    def check_identity(self) -> None:
        self.directions.check_index(self.index)

    def label(self) -> str:
        where = self.directions.path.name if self.directions.path else (self.directions.domain or "directions")
        label = (
            self.directions.label(self.index) if 0 <= self.index < self.directions.count else f"direction {self.index}"
        )
        return f"{where} {label}"

    @property
    def key(self) -> tuple[int, int]:
        """Identity of the conditioning this term needs (one row per distinct key)."""
        return (id(self.directions), self.index)


@edit_term
class PromptTerm(Term):
    """A text prompt used exactly like a direction: ``scale * (eps(x_t, c_prompt) - eps(x_t, c_0))``.

    Accepted wherever a :class:`DirectionTerm` is (``regenerate``, ``render_edits``, ``edit``,
    ``generate``); its conditioning is ``model.encode_prompts([prompt])``. The benchmark uses it
    as the supervised reference ("prompt directions").
    """

    prompt: str

    def check_identity(self) -> None:
        self.prompt = str(self.prompt)

    def label(self) -> str:
        return f"prompt {self.prompt!r}"

    @property
    def key(self) -> tuple[str, str]:
        return ("prompt", self.prompt)


EditTerm = DirectionTerm | PromptTerm
"""Anything the editing kernel applies as ``scale * (eps(c) - eps(c_0))`` on a window."""


def _check_scale_and_window(term: Term) -> None:
    """Normalise a term's scale (or strength) and window to floats; a one-line error if they cannot work."""
    if (term.scale is None) == (term.strength is None):
        raise NoiseCLRError(
            f"{term.describe()}: give a scale or a strength (percent), not {'both' if term.scale is not None else 'neither'}."
        )
    for name in ("scale", "strength"):
        value = getattr(term, name)
        if value is not None:
            value = float(value)
            setattr(term, name, value)
            if not math.isfinite(value):
                raise NoiseCLRError(f"{term.describe()}: {name} {value} is not a finite number; pass e.g. 3 or -2.5.")
    term.start, term.end = float(term.start), float(term.end)
    if not 0.0 <= term.start < term.end <= 1.0:
        raise NoiseCLRError(
            f"{term.describe()}: window {term.start}:{term.end} is invalid; need 0 <= START < END <= 1, e.g. @0:0.6."
        )


def _check_region(term: Term) -> None:
    """Normalise ``term.region`` to None or a :class:`~noiseclr.regions.Region` (one-line errors for bad masks)."""
    try:
        term.region = as_region(term.region)
    except NoiseCLRError as exc:
        raise NoiseCLRError(f"{term.describe()}: {exc}") from None


def _where(term: Term) -> str:
    """`` @0-0.6`` for a window that is not the whole schedule, `` #auto`` / `` #mask.png`` for a region."""
    window = "" if (term.start, term.end) == (0.0, 1.0) else f" @{term.start:g}-{term.end:g}"
    region = term.region
    if region is None:
        return window
    if isinstance(region, Region):
        return f"{window} #{region.label()}"
    return f"{window} #{Path(region).name if isinstance(region, (str, Path)) else 'mask'}"


def _amount(term: Term) -> str:
    if term.strength is None:
        return f"x{term.scale:g}" if isinstance(term.scale, (int, float)) else "x?"
    resolved = f" (x{term.scale:.3g})" if term.scale is not None else ""
    return f"{term.strength:g}%{resolved}"


def window_mask(start: float, end: float, steps: int) -> torch.Tensor:
    """[steps] bool: step ``i`` is active when ``start <= i / steps < end``."""
    position = torch.arange(steps, dtype=torch.float64) / steps
    return (position >= start - _WINDOW_TOLERANCE) & (position < end - _WINDOW_TOLERANCE)


# FILE may contain ':' (C:\..., odd names): match the tail ":INDEX[=SCALE][@WINDOW]" leftmost-first,
# with fields that cannot hold path characters.
_SPEC_TAIL = re.compile(r":(?P<index>[^:=@/\\]*)(?:=(?P<scale>[^:=@/\\]*))?(?:@(?P<window>[^=@/\\]*))?$")


def _split_region(text: str) -> tuple[str, str | None]:
    """``FILE:INDEX...#REGION`` -> (the spec before it, REGION): the region starts at the first ``#``
    whose left side ends in a ``:INDEX[=S][@A:B]`` tail, so ``#`` may also appear in FILE or MASK."""
    for position, char in enumerate(text):
        if char == "#" and _SPEC_TAIL.search(text[:position]):
            return text[:position], text[position + 1 :]
    return text, None


def parse_direction_spec(spec: str, loaded: dict[str, Directions] | None = None) -> DirectionTerm:
    """Parse the CLI syntax ``FILE:INDEX[=SCALE|=STRENGTH%][@START:END][#REGION]`` into a :class:`DirectionTerm`.

    ``FILE`` may itself contain ``:``. ``=SCALE`` is the raw lambda; ``=STRENGTH%`` a calibrated
    strength (percent change of the noise prediction, :mod:`noiseclr.strength`); both may be
    negative. Without either, the file's ``edit_defaults`` for that index supply it (and the
    window, unless one is given). ``#REGION`` is ``#auto``, ``#none``, ``#MASK`` (a mask image,
    white = where the direction acts), ``#box=X0,Y0,X1,Y1`` (pixels of the input) or
    ``#auto+box=X0,Y0,X1,Y1`` (an auto region kept inside the box); :mod:`noiseclr.regions`. ``loaded`` caches files by name,
    so a file is read once.
    """

    def fail(problem: str) -> NoiseCLRError:
        return NoiseCLRError(f"--direction {spec}: {problem}; expected {SPEC_FORM}.")

    text, region_text = _split_region(str(spec).strip())
    region: Region | None = None
    if region_text is not None:
        if not region_text.strip():
            raise fail("no region after '#' (use #auto, #MASK.png or #box=X0,Y0,X1,Y1)")
        try:
            region = as_region(region_text.strip())
        except NoiseCLRError as exc:
            raise NoiseCLRError(f"--direction {spec}: {exc}") from None
    match = _SPEC_TAIL.search(text)
    if match is None:
        raise fail("no :INDEX after the file name")
    file_part = text[: match.start()].strip()
    index_text = (match.group("index") or "").strip()
    scale_text = match.group("scale")
    window_text = match.group("window")
    if not file_part:
        raise fail("no FILE before :INDEX")
    if not index_text:
        raise fail("no direction INDEX after ':'")
    try:
        index = int(index_text)
    except ValueError:
        raise fail(f"INDEX {index_text!r} is not a whole number") from None

    scale: float | None = None
    strength: float | None = None
    if scale_text is not None:
        scale_text = scale_text.strip()
        if scale_text.endswith("%"):
            strength = _finite(scale_text[:-1].strip(), "STRENGTH", fail)
        else:
            scale = _finite(scale_text, "SCALE", fail)
    window: tuple[float, float] | None = None
    if window_text is not None:
        parts = window_text.split(":")
        if len(parts) != 2:
            raise fail(f"window {window_text!r} is not START:END")
        window = (_finite(parts[0].strip(), "START", fail), _finite(parts[1].strip(), "END", fail))
        if not 0.0 <= window[0] < window[1] <= 1.0:
            raise fail(f"window {window_text} needs 0 <= START < END <= 1")

    cache = loaded if loaded is not None else {}
    key = str(Path(file_part).expanduser())
    if key not in cache:
        try:
            cache[key] = Directions.load(key)
        except NoiseCLRError as exc:
            raise NoiseCLRError(f"--direction {spec}: {exc}") from None
    directions = cache[key]
    try:
        directions.check_index(index)
    except NoiseCLRError as exc:
        raise NoiseCLRError(f"--direction {spec}: {exc}") from None

    start, end = window if window is not None else (0.0, 1.0)
    if scale is None and strength is None:
        defaults = stored_defaults(directions, index)
        if not isinstance(defaults, dict) or (defaults.get("scale") is None and defaults.get("strength") is None):
            raise fail(f"no =SCALE or =STRENGTH% given and {file_part} has no edit defaults for direction {index}")
        if defaults.get("strength") is not None:
            strength = float(defaults["strength"])
        else:
            scale = float(defaults["scale"])
        if window is None:
            start, end = float(defaults.get("start", 0.0)), float(defaults.get("end", 1.0))
    try:
        return DirectionTerm(directions, index, scale, start, end, strength=strength, region=region)
    except NoiseCLRError as exc:
        raise NoiseCLRError(f"--direction {spec}: {exc}") from None


def _finite(text: str, what: str, fail: Callable[[str], NoiseCLRError]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise fail(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise fail(f"{what} {text!r} is not a finite number")
    return value


EDIT_PROTOCOL_KEYS = ("inversion", "steps")
"""Per-direction ``edit_defaults`` entries that say how the direction was measured (beside its
scale and window): an edit made the same way reproduces what the demo or the bench reported."""


def stored_defaults(directions: Directions, index: int) -> dict[str, Any]:
    """Direction ``index``'s stored ``edit_defaults`` entry: scale or strength, window, and how it was
    measured (``{}`` when the file stores none)."""
    return (directions.edit_defaults[index] if directions.edit_defaults else None) or {}


def edit_protocol(given: Mapping[str, Any], stored: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Inversion and steps: as ``given`` (None: not given), else as ``stored`` with the directions,
    else the ``defaults`` (:class:`~noiseclr.editing.EditSettings`')."""
    return {
        key: given[key] if given.get(key) is not None else stored.get(key, defaults[key]) for key in EDIT_PROTOCOL_KEYS
    }


def stored_edit_protocol(terms: Sequence[EditTerm]) -> dict[str, Any]:
    """The inversion method and step count stored with the terms' directions (``{}`` if none).

    The first term that has them decides; a later term measured differently gets a warning.
    """
    found: dict[str, Any] = {}
    source = ""
    for term in terms:
        if not isinstance(term, DirectionTerm) or not term.directions.edit_defaults:
            continue
        stored = stored_defaults(term.directions, term.index)
        picked = {key: stored[key] for key in EDIT_PROTOCOL_KEYS if stored.get(key) is not None}
        if picked and not found:
            found, source = picked, term.describe()
        elif picked and picked != found:
            log.warning(
                "%s was measured with %s, %s with %s; using the first (pass --inversion/--steps to choose)",
                term.describe(),
                picked,
                source,
                found,
            )
    return found


def check_terms(model: DiffusionModel, terms: Sequence[EditTerm]) -> None:
    """Every term's file belongs to ``model`` and its index exists (NoiseCLRError otherwise)."""
    checked: set[int] = set()
    for term in terms:
        if isinstance(term, PromptTerm):
            continue
        if id(term.directions) not in checked:
            term.directions.check_compatible(model)
            checked.add(id(term.directions))
        term.directions.check_index(term.index)


def resolve_strengths(model: DiffusionModel, terms: Sequence[EditTerm], latents: torch.Tensor) -> None:
    """Give every term specified by strength its scale (in place).

    A directions file's stored calibration is used when it has one; otherwise (imported files,
    prompts) the response is measured now on ``latents`` (the images being edited, or the initial
    noise of a generation), once per distinct file and prompt.
    """
    pending = [term for term in terms if term.strength is not None and term.scale is None]
    if not pending:
        return
    measured: dict[tuple, float] = {}
    for term in pending:
        key = term.key
        if key in measured:
            continue
        if isinstance(term, PromptTerm):
            conditioning = model.encode_prompts([term.prompt])
            measured[key] = float(
                noise_response(model, conditioning, latents[:CALIBRATION_IMAGES], calibration_timesteps(model))[0]
            )
            continue
        stored = (term.directions.calibration or {}).get("response")
        if stored is not None and len(stored) == term.directions.count:
            measured[key] = float(stored[term.index])
            continue
        missing = sorted({t.index for t in pending if isinstance(t, DirectionTerm) and t.directions is term.directions})
        log.info(
            "%s: no stored calibration; measuring the response of %d direction(s) on the images at hand",
            term.directions.path or "directions",
            len(missing),
        )
        values = direction_response(model, term.directions, latents[:CALIBRATION_IMAGES], indices=missing)
        for index, value in zip(missing, values.tolist()):
            measured[(id(term.directions), index)] = value
    for term in pending:
        term.resolve(measured[term.key])
