"""Reading direction files: noiseclr's metadata checked field by field, and other tools' embedding files.

Files can come from anywhere, edited by hand or hostile: every bad value becomes one line that names
the file, the field and what was expected. Other tools' layouts (textual inversion, A1111, kohya,
diffusers and SDXL pairs) are read into names and rows; docs/directions_format.md lists them all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import NoiseCLRError
from .fileio import read_safetensors, read_tensor_file

SDXL_KEYS = ("clip_l", "clip_g")
"""kohya's keys for SDXL's two encoders (CLIP ViT-L, OpenCLIP ViT-bigG)."""
DIFFUSERS_SDXL_FOLDERS = ("text_encoder", "text_encoder_2")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


EDIT_DEFAULT_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "scale": (lambda v: v is None or is_number(v), "a number"),
    "strength": (lambda v: v is None or is_number(v), "a number (percent)"),
    "start": (lambda v: is_number(v) and 0.0 <= v <= 1.0, "a fraction in [0, 1]"),
    "end": (lambda v: is_number(v) and 0.0 <= v <= 1.0, "a fraction in [0, 1]"),
    "inversion": (lambda v: v is None or v in ("ddim", "ddpm"), "'ddim' or 'ddpm'"),
    "steps": (lambda v: v is None or (is_int(v) and v >= 1), "a whole number of at least 1"),
}
"""What each known key of an ``edit_defaults`` entry must hold (other keys are kept, unread)."""


class MetadataReader:
    """Reads a directions file's string metadata field by field; a bad value is one line naming the
    file, the field and what was expected (files can come from anywhere, edited by hand or hostile)."""

    def __init__(self, path: Path, meta: dict[str, str]):
        self.path, self.meta = path, meta

    def bad(self, name: str, value: Any, expected: str) -> NoiseCLRError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return NoiseCLRError(
            f"{self.path}: metadata field '{name}' is {shown}; expected {expected} -- the file is damaged or was "
            "edited by hand: re-export the directions."
        )

    def integer(self, name: str, default: Any, least: int) -> Any:
        text = self.meta.get(name)
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise self.bad(name, text, f"a whole number of at least {least}") from None
        if value < least:
            raise self.bad(name, text, f"a whole number of at least {least}")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: Any) -> Any:
        text = self.meta.get(name)
        if text is None:
            return default
        if text not in options:
            raise self.bad(name, text, " or ".join(repr(o) for o in options))
        return text

    def json(self, name: str, kind: type, default: Any) -> Any:
        text = self.meta.get(name)
        if not text:
            return default
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise self.bad(name, text, f"JSON (a {kind.__name__})") from None
        if not isinstance(value, kind):
            raise self.bad(name, value, f"a JSON {'object' if kind is dict else kind.__name__}")
        return value

    def names(self, count: int) -> list[str] | None:
        names = self.json("names", list, default=None)
        if names is not None and (len(names) != count or not all(n is None or isinstance(n, str) for n in names)):
            raise self.bad("names", names, f"a list of {count} names (strings)")
        return None if names is None else [n or "" for n in names]

    def edit_defaults(self, count: int) -> list[dict[str, Any] | None] | None:
        entries = self.json("edit_defaults", list, default=None)
        if entries is None:
            return None
        if len(entries) != count:
            raise self.bad("edit_defaults", f"{len(entries)} entries", f"one entry per direction ({count})")
        for index, entry in enumerate(entries):
            if entry is None:
                continue
            where = f"edit_defaults[{index}]"
            if not isinstance(entry, dict):
                raise self.bad(where, entry, 'a JSON object such as {"strength": 3, "start": 0, "end": 1}')
            for key, (ok, expected) in EDIT_DEFAULT_FIELDS.items():
                if key in entry and not ok(entry[key]):
                    raise self.bad(f"{where}.{key}", entry[key], expected)
            if entry.get("start", 0.0) > entry.get("end", 1.0):
                raise self.bad(f"{where}.start", entry["start"], f"at most its end ({entry.get('end', 1.0)})")
        return entries

    def calibration(self, count: int) -> dict[str, Any] | None:
        record = self.json("calibration", dict, default=None)
        if record is None:
            return None
        response = record.get("response")
        if not (
            isinstance(response, list) and len(response) == count and all(is_number(r) and r >= 0 for r in response)
        ):
            raise self.bad(
                "calibration.response", response, f"a list of {count} non-negative numbers (one per direction)"
            )
        pairs = record.get("duplicates", [])
        if not (
            isinstance(pairs, list)
            and all(
                isinstance(p, list)
                and len(p) == 3
                and is_int(p[0])
                and is_int(p[1])
                and is_number(p[2])
                and 0 <= p[0] < count
                and 0 <= p[1] < count
                for p in pairs
            )
        ):
            raise self.bad(
                "calibration.duplicates", pairs, f"a list of [i, j, cos] with direction indices below {count}"
            )
        return record


def textual_inversion_vectors(state: Any, path: Path | str = "file") -> tuple[list[str], list[torch.Tensor]]:
    """Token names and [width] vectors from any common textual-inversion layout."""

    def rows(tensor: torch.Tensor, name: str) -> list[tuple[str, torch.Tensor]]:
        tensor = tensor.detach().float()
        if tensor.ndim == 1:
            return [(name, tensor)]
        if tensor.ndim == 2:
            if tensor.shape[0] == 1:
                return [(name, tensor[0])]
            return [(f"{name}[{i}]", tensor[i]) for i in range(tensor.shape[0])]
        raise NoiseCLRError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}; expected [width] or [n, width].")

    found: list[tuple[str, torch.Tensor]] = []
    if isinstance(state, torch.Tensor):
        found = rows(state, "direction")
    elif isinstance(state, dict) and "string_to_param" in state:  # A1111
        params = state["string_to_param"]
        tensor = params.get("*", next(iter(params.values()), None)) if isinstance(params, dict) else None
        if not isinstance(tensor, torch.Tensor):
            raise NoiseCLRError(f"{path}: A1111 embedding without a tensor under string_to_param; the file is damaged.")
        found = rows(tensor, str(state.get("name", "embedding")))
    elif isinstance(state, dict) and "emb_params" in state and isinstance(state["emb_params"], torch.Tensor):
        found = rows(state["emb_params"], Path(path).stem)  # kohya/A1111: the file name is the token
    elif isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        for name, tensor in state.items():
            found.extend(rows(tensor, str(name)))
    if not found:
        raise NoiseCLRError(
            f"{path}: not a directions file: expected noiseclr metadata or a textual-inversion {{token: vector}} dict."
        )
    widths = {vector.shape[0] for _, vector in found}
    if len(widths) != 1:
        raise NoiseCLRError(
            f"{path}: vectors of different widths {sorted(widths)}; a file must hold one model's tokens."
        )
    return [name for name, _ in found], [vector for _, vector in found]


def sdxl_pair_vectors(state: Any, path: Path | str = "file") -> tuple[list[str], torch.Tensor, list[int]] | None:
    """kohya's SDXL layout ``{"clip_l": [n, W1], "clip_g": [n, W2]}`` -> names, [n, W1 + W2] rows
    and the widths; None for any other layout."""
    if not (isinstance(state, dict) and all(isinstance(state.get(key), torch.Tensor) for key in SDXL_KEYS)):
        return None
    parts = [state[key].detach().float() for key in SDXL_KEYS]
    parts = [part.unsqueeze(0) if part.ndim == 1 else part for part in parts]
    if any(part.ndim != 2 for part in parts) or parts[0].shape[0] != parts[1].shape[0]:
        shapes = ", ".join(f"{key} {tuple(state[key].shape)}" for key in SDXL_KEYS)
        raise NoiseCLRError(
            f"{path}: SDXL embedding with mismatched tensors ({shapes}); expected [n, W] each with the same n."
        )
    stem = Path(path).stem
    count = parts[0].shape[0]
    names = [stem] if count == 1 else [f"{stem}[{i}]" for i in range(count)]
    return names, torch.cat(parts, dim=1), [int(parts[0].shape[1]), int(parts[1].shape[1])]


def sdxl_partner_paths(path: Path) -> tuple[Path, Path]:
    """Both files of the diffusers SDXL pair that ``path`` belongs to (they may not exist)."""
    root, suffix = path.parent.parent, path.suffix
    own_key = SDXL_KEYS[DIFFUSERS_SDXL_FOLDERS.index(path.parent.name)]
    if path.stem.endswith(f"-{own_key}"):
        stem = path.stem[: -len(own_key) - 1]
        return tuple(root / sub / f"{stem}-{key}{suffix}" for sub, key in zip(DIFFUSERS_SDXL_FOLDERS, SDXL_KEYS))
    return tuple(root / sub / path.name for sub in DIFFUSERS_SDXL_FOLDERS)


def diffusers_sdxl_pair(path: Path, state: Any) -> tuple[list[str], torch.Tensor, list[int]] | None:
    """The diffusers SDXL layout: ``text_encoder/STEM-clip_l`` + ``text_encoder_2/STEM-clip_g`` (or,
    as noiseclr 0.1.0 wrote them, the same NAME in both folders), named by either file."""
    if path.parent.name not in DIFFUSERS_SDXL_FOLDERS:
        return None
    first, second = sdxl_partner_paths(path)
    other = second if path.parent.name == DIFFUSERS_SDXL_FOLDERS[0] else first
    if not other.is_file():
        return None  # a lone file: imported as plain vectors, checked by width
    if path.suffix == ".safetensors":
        other_state, _ = read_safetensors(other, "the file is damaged or of another type.")
    else:
        other_state = read_tensor_file(other)
    states = (state, other_state) if other == second else (other_state, state)
    (names, part_1), (_, part_2) = (textual_inversion_vectors(st, p) for st, p in zip(states, (first, second)))
    if len(part_1) != len(part_2):
        raise NoiseCLRError(
            f"{path}: {first} and {second} hold {len(part_1)} and {len(part_2)} vectors; an SDXL pair needs the same number."
        )
    vectors = torch.cat([torch.stack(part_1), torch.stack(part_2)], dim=1)
    return names, vectors, [int(part_1[0].shape[0]), int(part_2[0].shape[0])]
