"""Settings dataclasses as the one source of defaults, command-line flags and help texts.

A settings field declared with :func:`option` carries its flag and help text in its metadata;
:func:`add_options` turns those fields into argparse options (the default comes from the field,
never restated), :func:`from_args` builds the settings back from the parsed namespace, and
:func:`flag` names a field's flag in error messages. Fields declared with a plain default are
library-only knobs without a flag.

The shared checkers (:func:`check_count`, :func:`check_choice`, :func:`check_max_batch`, ...)
are the one validation idiom: every settings class has a ``validate()`` that calls them, so the
same mistake gets the same one-line :class:`~noiseclr.errors.NoiseCLRError` wherever it is made.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import NoiseCLRError

INVERSION_METHODS = ("ddim", "ddpm")
"""Real-image inversion methods (:func:`noiseclr.inversion.invert`)."""

_OPTION = "noiseclr.option"


# --------------------------------------------------------------------------- declaring options
def option(
    default: Any = dataclasses.MISSING,
    *,
    flag: str,
    help: str,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    default_text: str | None = None,
    aliases: Sequence[str] = (),
    **argparse_kwargs: Any,
) -> Any:
    """A dataclass field that is also a command-line option.

    ``aliases`` are old spellings of the flag: still accepted, with a one-line note naming the new one.

    ``help`` gets ``(default X)`` appended from the field's default (``default_text`` replaces
    X; ``""`` appends nothing). ``argparse_kwargs`` go to ``add_argument`` as they are (``type``,
    ``nargs``, ``metavar``, ``choices``); a ``bool`` field becomes ``store_true``, or
    ``store_false`` when its flag starts with ``--no-``.
    """
    metadata = {
        _OPTION: {
            "flag": flag,
            "help": help,
            "default_text": default_text,
            "kwargs": argparse_kwargs,
            "aliases": tuple(aliases),
        }
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_from(
    cls: type,
    name: str,
    *,
    prefix: str = "",
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    default_text: str | None = None,
    **argparse_kwargs: Any,
) -> Any:
    """An :func:`option` made from option ``name`` of settings class ``cls``: its flag with ``prefix``
    after the dashes (``--negatives`` -> ``--discovery-negatives``), its default, help text, default
    text and argparse keywords, each replaceable here (``metavar=None`` drops a metavar)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = field.metadata[_OPTION]
    kwargs = {**meta["kwargs"], **argparse_kwargs}
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    flag = "--" + prefix + meta["flag"][2:] if prefix else meta["flag"]
    return option(
        _default(field) if default is dataclasses.MISSING else default,
        flag=flag,
        help=meta["help"] if help is None else help,
        default_text=meta["default_text"] if default_text is None else default_text,
        **kwargs,
    )


def _options(cls: type) -> list[tuple[dataclasses.Field, dict[str, Any]]]:
    return [(f, f.metadata[_OPTION]) for f in dataclasses.fields(cls) if _OPTION in f.metadata]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def format_default(value: Any) -> str:
    """How a default reads in help text: ``1e-3`` as ``0.001``, tuples as ``-6 -3 0``, windows as ``0:1``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return " ".join(
            format_default(v) if not isinstance(v, (tuple, list)) else ":".join(format_default(x) for x in v)
            for v in value
        )
    return str(value)


def field_default(cls: type, name: str) -> Any:
    """The default of settings field ``name``."""
    return _default(next(f for f in dataclasses.fields(cls) if f.name == name))


def flag(cls: type, name: str) -> str:
    """The command-line flag of settings field ``name`` (for error messages)."""
    for field, meta in _options(cls):
        if field.name == name:
            return meta["flag"]
    raise KeyError(f"{cls.__name__}.{name} has no command-line flag")


def flags(cls: type) -> dict[str, str]:
    """Field name -> flag, for every option of ``cls``."""
    return {field.name: meta["flag"] for field, meta in _options(cls)}


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    default_texts: dict[str, str] | None = None,
) -> None:
    """Add an option per flagged field of ``cls`` (``only``/``exclude`` pick fields by name).

    ``defaults`` overrides a field's default for this command (``None`` for "decided later", with
    ``default_texts`` saying how in the help).
    """
    wanted = None if only is None else set(only)
    skipped = set(exclude)
    overrides = defaults or {}
    texts = default_texts or {}
    for field, meta in _options(cls):
        if (wanted is not None and field.name not in wanted) or field.name in skipped:
            continue
        default = overrides.get(field.name, _default(field))
        kwargs = dict(meta["kwargs"])
        text = meta["help"]
        if isinstance(default, bool) and "action" not in kwargs:
            negative = meta["flag"].startswith("--no-")
            kwargs["action"] = "store_false" if negative else "store_true"
        else:
            kwargs.setdefault(
                "type",
                type(default) if isinstance(default, (int, float, str)) and not isinstance(default, bool) else None,
            )
            if kwargs["type"] is None:
                del kwargs["type"]
            shown = texts.get(field.name, meta["default_text"])
            if shown is None:
                shown = format_default(default) if default is not None else ""
            if shown:
                text = f"{text} (default {shown})"
        aliases = meta.get("aliases", ())
        if aliases and "action" not in kwargs:
            kwargs["action"] = _renamed(meta["flag"], aliases)
        parser.add_argument(meta["flag"], *aliases, dest=field.name, default=default, help=text, **kwargs)


def _renamed(flag: str, aliases: Sequence[str]) -> type[argparse.Action]:
    """A store action that notes, once per use, that an old spelling of ``flag`` was used."""

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in aliases:
                import sys

                print(f"noiseclr: note: {option_string} is now {flag} (the old spelling still works)", file=sys.stderr)
            setattr(namespace, self.dest, values)

    return Renamed


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Settings ``cls`` from the parsed options (fields the parser did not add keep their defaults)."""
    values: dict[str, Any] = {}
    for field, _ in _options(cls):
        if hasattr(args, field.name):
            value = getattr(args, field.name)
            if isinstance(value, list) and isinstance(_default(field), tuple):
                value = tuple(value)
            values[field.name] = value
    values.update(overrides)
    return cls(**values)


# ------------------------------------------------------------------------------- argparse types
def window(text: str) -> tuple[float, float]:
    """``START:END`` fractions of the denoising steps, e.g. ``0:0.6`` (argparse type)."""
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START:END fractions, e.g. 0:0.6") from None
    if not 0.0 <= start < end <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= START < END <= 1")
    return start, end


def positive_int(text: str) -> int:
    """A whole number of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


# ------------------------------------------------------------------------------------- checkers
def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(value: Any, name: str, minimum: int = 1, why: str = "") -> None:
    """A whole number of at least ``minimum``; ``name`` is the flag (or what it is)."""
    if not is_whole(value) or value < minimum:
        reason = why or f"must be a whole number of at least {minimum}."
        raise NoiseCLRError(f"{name} {value}: {reason}")


def check_positive(value: Any, name: str, hint: str = "") -> None:
    """A positive finite number."""
    try:
        ok = float(value) > 0 and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NoiseCLRError(f"{name} {value}: must be a positive number{'; ' + hint if hint else '.'}")


def check_fraction(value: Any, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
        raise NoiseCLRError(f"{name} {value}: must be between 0 and 1.")


def check_choice(value: Any, choices: Sequence[str], name: str, what: str = "unknown") -> None:
    if value not in choices:
        raise NoiseCLRError(f"{name} {value}: {what}; use one of {', '.join(choices)}.")


def check_inversion(value: Any, name: str = "--inversion") -> None:
    check_choice(value, INVERSION_METHODS, name, "unknown method")


def check_max_batch(value: Any, name: str = "--max-batch") -> None:
    """None (no cap) or a whole number of at least 1."""
    if value is not None:
        check_count(value, name, why="must be at least 1.")


def check_window(start: float, end: float, name: str, of: str = "the denoising steps") -> None:
    """``0 <= start < end <= 1``: a part of a schedule, as fractions ``of`` it."""
    if not 0.0 <= float(start) < float(end) <= 1.0:
        raise NoiseCLRError(f"{name} {start:g}:{end:g}: need 0 <= START < END <= 1 (fractions of {of}).")
