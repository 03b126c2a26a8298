"""Directions and their file format.

A set of K directions is a [K, width] tensor of token embeddings plus metadata that says which
model they belong to. Files are safetensors: tensor ``directions`` and string metadata

=================  ===========================================================================
``format``         ``noiseclr.directions``
``format_version`` ``1``
``model``          identifier of the model they were discovered on (hub id, folder, embedded)
``fingerprint``    JSON: the text encoder token table's shape, a dtype-stable probe and sha256
``token_width``    width of one direction (the text encoder's input-embedding width)
``max_length``     the tokenizer's sequence length
``count``          K
``names``          JSON list of K names (optional; e.g. the factor a direction moves)
``domain``         free-text label of the image domain (faces, cats, ...)
``settings``       JSON: the discovery settings that produced them
``edit_defaults``  JSON list of K ``{"scale", "start", "end"}`` suggestions (optional)
=================  ===========================================================================

Any safetensors reader can open them (``safetensors.safe_open(path, "pt").metadata()``).
Textual-inversion layouts (``{token: vector}`` as ``pipe.load_textual_inversion`` reads and as the
published NoiseCLR code writes to ``learned_embeds.bin``; A1111's ``string_to_param``) are
imported by :meth:`Directions.load` and written by :meth:`Directions.export_textual_inversion`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import NoiseCLRError
from .fileio import atomic_save_safetensors, atomic_write, atomic_write_text, read_safetensors

if TYPE_CHECKING:
    from .model import DiffusionModel

FORMAT = "noiseclr.directions"
FORMAT_VERSION = 1
TENSOR_KEY = "directions"


@dataclass
class Directions:
    """K learned token embeddings and what they belong to."""

    vectors: torch.Tensor
    """[K, width] float32 token embeddings."""
    model_id: str = ""
    fingerprint: dict[str, Any] | None = None
    """Token-table fingerprint of the model (see :meth:`DiffusionModel.fingerprint`); None if unknown."""
    max_length: int | None = None
    names: list[str] | None = None
    domain: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    edit_defaults: list[dict[str, float]] | None = None
    source: str = "noiseclr"
    """``noiseclr`` for our files, ``textual-inversion`` for imported ones."""
    path: Path | None = None
    """Where the directions were loaded from (not saved)."""

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.ndim != 2:
            raise ValueError("Directions.vectors must be a [K, width] tensor")
        self.vectors = self.vectors.detach().float().cpu()
        if self.names is not None and len(self.names) != self.count:
            raise ValueError(f"{len(self.names)} names for {self.count} directions")
        if self.edit_defaults is not None and len(self.edit_defaults) != self.count:
            raise ValueError(f"{len(self.edit_defaults)} edit defaults for {self.count} directions")

    # ----------------------------------------------------------------- basics
    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return self.count

    def label(self, index: int) -> str:
        """Human-readable name of direction ``index``."""
        if self.names and self.names[index]:
            return f"{index}: {self.names[index]}"
        return f"direction {index}"

    def token(self, index: int) -> str:
        """Token string used when exporting to textual inversion, e.g. ``<faces-3>``."""
        prefix = re.sub(r"[^a-z0-9]+", "-", (self.domain or "noiseclr").lower()).strip("-") or "noiseclr"
        return f"<{prefix}-{index}>"

    @classmethod
    def for_model(cls, model: DiffusionModel, vectors: torch.Tensor, **metadata: Any) -> Directions:
        """Directions tied to ``model`` (its id, fingerprint and sequence length filled in)."""
        return cls(
            vectors=vectors,
            model_id=model.name,
            fingerprint=model.fingerprint(),
            max_length=model.max_length,
            **metadata,
        )

    def select(self, indices: list[int]) -> Directions:
        """A new set holding only ``indices`` (in that order)."""
        return replace(
            self,
            vectors=self.vectors[indices],
            names=[self.names[i] for i in indices] if self.names else None,
            edit_defaults=[self.edit_defaults[i] for i in indices] if self.edit_defaults else None,
        )

    def check_index(self, index: int, what: str = "direction") -> None:
        if not 0 <= index < self.count:
            where = self.path or "directions"
            raise NoiseCLRError(
                f"{what} {index} of {where}: out of range; this file holds {self.count} directions (0..{self.count - 1})."
            )

    # ---------------------------------------------------------- compatibility
    def check_compatible(self, model: DiffusionModel) -> None:
        """Refuse directions made for another model, with a clear one-line error."""
        from .model import fingerprints_match

        where = self.path or "directions"
        if self.width != model.token_width:
            raise NoiseCLRError(
                f"{where}: directions have width {self.width} but model {model.name} has token width "
                f"{model.token_width}; they were made for another model -- use that model or discover new directions."
            )
        if self.fingerprint is not None and not fingerprints_match(self.fingerprint, model.fingerprint()):
            made_for = self.model_id or "another model"
            raise NoiseCLRError(
                f"{where}: made for model {made_for}, whose text encoder differs from {model.name}'s; "
                f"pass --model {made_for} or discover directions for this model."
            )

    # ------------------------------------------------------------------ save
    def metadata(self) -> dict[str, str]:
        from .version import __version__

        meta = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "model": self.model_id,
            "token_width": str(self.width),
            "count": str(self.count),
            "domain": self.domain,
            "source": self.source,
            "settings": json.dumps(self.settings, sort_keys=True),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "noiseclr_version": __version__,
        }
        if self.fingerprint is not None:
            meta["fingerprint"] = json.dumps(self.fingerprint)
        if self.max_length is not None:
            meta["max_length"] = str(self.max_length)
        if self.names is not None:
            meta["names"] = json.dumps(self.names)
        if self.edit_defaults is not None:
            meta["edit_defaults"] = json.dumps(self.edit_defaults)
        return meta

    def save(self, path: str | Path) -> Path:
        """Write a safetensors directions file atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise NoiseCLRError(f"{path}: directions files end in .safetensors; choose such a name.")
        try:
            return atomic_save_safetensors(path, {TENSOR_KEY: self.vectors}, self.metadata())
        except OSError as exc:
            raise NoiseCLRError(f"{path}: cannot write ({exc.strerror or exc}); choose a writable location.") from None

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | Path) -> Directions:
        """Read a noiseclr directions file or a textual-inversion file (.safetensors/.bin/.pt)."""
        path = Path(path)
        if not path.is_file():
            raise NoiseCLRError(f"{path}: no such directions file; check the path.")
        if path.suffix == ".safetensors":
            tensors, meta = read_safetensors(path, "the file is damaged or of another type.")
            if meta.get("format") == FORMAT:
                return cls._from_noiseclr(path, tensors, meta)
            return cls._from_textual_inversion(path, tensors)
        if path.suffix in (".bin", ".pt", ".pth"):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user error
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
                raise NoiseCLRError(
                    f"{path}: not a readable textual-inversion file ({first}); only plain tensor dicts load safely."
                ) from None
            return cls._from_textual_inversion(path, state)
        raise NoiseCLRError(f"{path}: unknown directions file type; expected .safetensors, .bin or .pt.")

    @classmethod
    def _from_noiseclr(cls, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Directions:
        version = int(meta.get("format_version", "0") or 0)
        if version > FORMAT_VERSION:
            raise NoiseCLRError(
                f"{path}: format version {version} is newer than this noiseclr understands ({FORMAT_VERSION}); upgrade noiseclr."
            )
        if TENSOR_KEY not in tensors:
            raise NoiseCLRError(f"{path}: has noiseclr metadata but no '{TENSOR_KEY}' tensor; the file is damaged.")
        try:
            return cls(
                vectors=tensors[TENSOR_KEY],
                model_id=meta.get("model", ""),
                fingerprint=json.loads(meta["fingerprint"]) if meta.get("fingerprint") else None,
                max_length=int(meta["max_length"]) if meta.get("max_length") else None,
                names=json.loads(meta["names"]) if meta.get("names") else None,
                domain=meta.get("domain", ""),
                settings=json.loads(meta.get("settings") or "{}"),
                edit_defaults=json.loads(meta["edit_defaults"]) if meta.get("edit_defaults") else None,
                source=meta.get("source", "noiseclr"),
                path=path,
            )
        except (ValueError, json.JSONDecodeError) as exc:
            raise NoiseCLRError(f"{path}: damaged metadata ({exc}); re-export the directions.") from None

    @classmethod
    def _from_textual_inversion(cls, path: Path, state: Any) -> Directions:
        names, vectors = textual_inversion_vectors(state, path)
        return cls(vectors=torch.stack(vectors), names=names, source="textual-inversion", path=path)

    # --------------------------------------------------------- interchange
    def to_textual_inversion(self) -> dict[str, torch.Tensor]:
        """``{token: vector}`` for all K directions (the published NoiseCLR layout)."""
        return {self.token(i): self.vectors[i].clone() for i in range(self.count)}

    def export_textual_inversion(self, folder: str | Path) -> list[Path]:
        """Write textual-inversion files to ``folder``.

        * ``learned_embeds.bin`` / ``learned_embeds.safetensors``: all tokens in one dict, as
          the published NoiseCLR code writes them;
        * ``diffusers/<token>.safetensors``: one token per file, the layout
          ``StableDiffusionPipeline.load_textual_inversion`` reads.
        """
        folder = Path(folder)
        tokens = self.to_textual_inversion()
        written = [
            atomic_save_safetensors(folder / "learned_embeds.safetensors", tokens),
            atomic_write(folder / "learned_embeds.bin", lambda tmp: torch.save(tokens, tmp)),
        ]
        for token, vector in tokens.items():
            stem = token.strip("<>")
            written.append(atomic_save_safetensors(folder / "diffusers" / f"{stem}.safetensors", {token: vector}))
        listing = "\n".join(f"  {t}  {self.names[i] if self.names else ''}" for i, t in enumerate(tokens))
        readme = (
            f"Textual-inversion export of {self.count} NoiseCLR directions (model: {self.model_id or 'unknown'}).\n\n"
            "diffusers:\n"
            "    import glob\n"
            "    pipe.load_textual_inversion(sorted(glob.glob('diffusers/*.safetensors')))\n"
            f"    image = pipe('{next(iter(tokens))}').images[0]\n\n"
            f"Tokens:\n{listing}\n"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written


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
        found = rows(state["emb_params"], "embedding")
    elif isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        for name, tensor in state.items():
            found.extend(rows(tensor, str(name)))
    if not found:
        raise NoiseCLRError(
            f"{path}: not a directions file: expected noiseclr metadata or a textual-inversion {{token: vector}} dict."
        )
    widths = {vector.shape[0] for _, vector in found}
    if len(widths) != 1:
        raise NoiseCLRError(f"{path}: vectors of different widths {sorted(widths)}; a file must hold one model's tokens.")
    return [name for name, _ in found], [vector for _, vector in found]


