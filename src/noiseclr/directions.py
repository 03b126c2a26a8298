"""Directions and their file format.

A set of K directions is a [K, width] tensor of token embeddings plus metadata that says which
model they belong to (on SDXL a row is the pair ``[d_1 | d_2]``, one part per text encoder). The
file format, its metadata keys and the other tools' files :meth:`Directions.load` imports are
specified in docs/directions_format.md; reading them field by field is :mod:`noiseclr.direction_files`.
:meth:`Directions.export` writes the files other tools read (formats in :data:`EXPORT_FORMATS`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .direction_files import (
    DIFFUSERS_SDXL_FOLDERS,
    SDXL_KEYS,
    MetadataReader,
    diffusers_sdxl_pair,
    is_int,
    sdxl_pair_vectors,
    textual_inversion_vectors,
)
from .errors import NoiseCLRError
from .fileio import atomic_save_safetensors, atomic_write, atomic_write_text, read_safetensors, read_tensor_file

if TYPE_CHECKING:
    from .model import DiffusionModel

FORMAT = "noiseclr.directions"
FORMAT_VERSION = 1
TENSOR_KEY = "directions"

EXPORT_FORMATS = ("textual-inversion", "a1111", "diffusers", "noiseclr-published")
"""``textual-inversion``: one file per direction that A1111, ComfyUI and diffusers all read;
``a1111``: one file per direction in kohya's layout (``emb_params`` or ``clip_l``/``clip_g``) for
AUTOMATIC1111, ComfyUI, InvokeAI; ``diffusers``: one ``{token: vector}`` file per direction and
encoder; ``noiseclr-published``: all K in one learned_embeds.bin/.safetensors (the published code's
layout, for that code only)."""

KINDS = {1: "sd", 2: "sdxl"}


@dataclass
class Directions:
    """K learned token embeddings and what they belong to."""

    vectors: torch.Tensor
    """[K, width] float32 token embeddings (SDXL: each row is ``[d_1 | d_2]``)."""
    model_id: str = ""
    fingerprint: dict[str, Any] | None = None
    """Token-table fingerprint of the model (see :meth:`DiffusionModel.fingerprint`); None if unknown."""
    max_length: int | None = None
    names: list[str] | None = None
    domain: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    edit_defaults: list[dict[str, Any]] | None = None
    source: str = "noiseclr"
    """``noiseclr`` for our files, ``textual-inversion`` for imported ones."""
    path: Path | None = None
    """Where the directions were loaded from (not saved)."""
    # New fields go last, so positional construction keeps working.
    token_widths: list[int] | None = None
    """Each encoder's part of a row: [W] (SD), [W1, W2] (SDXL); None if unknown (imported vectors)."""
    second_fingerprint: dict[str, Any] | None = None
    """SDXL: the second text encoder's fingerprint."""
    calibration: dict[str, Any] | None = None
    """Each direction's response (:mod:`noiseclr.strength`): ``{"response": [K floats], "definition",
    "timesteps", "images", ...}``; what turns a strength (percent) into a scale. None if unmeasured."""

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.ndim != 2:
            raise ValueError("Directions.vectors must be a [K, width] tensor")
        self.vectors = self.vectors.detach().float().cpu()
        finite = torch.isfinite(self.vectors).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            raise NoiseCLRError(
                f"{self.path or 'directions'}: direction(s) {shown} hold NaN or infinite values; the file is damaged "
                "or came from a diverged run -- re-export it or use an earlier checkpoint."
            )
        if self.token_widths is not None:
            self.token_widths = [int(w) for w in self.token_widths]
            if len(self.token_widths) not in KINDS or sum(self.token_widths) != self.width:
                raise ValueError(f"token_widths {self.token_widths} do not split rows of width {self.width}")
        if self.names is not None and len(self.names) != self.count:
            raise ValueError(f"{len(self.names)} names for {self.count} directions")
        if self.edit_defaults is not None and len(self.edit_defaults) != self.count:
            raise ValueError(f"{len(self.edit_defaults)} edit defaults for {self.count} directions")
        if self.calibration is not None and len(self.calibration.get("response", ())) != self.count:
            raise ValueError(f"calibration of {len(self.calibration.get('response', ()))} directions for {self.count}")

    # ----------------------------------------------------------------- basics
    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def kind(self) -> str | None:
        """``sd``, ``sdxl``, or None when unknown (imported single vectors)."""
        return KINDS.get(len(self.token_widths)) if self.token_widths else None

    def parts(self, index: int) -> list[torch.Tensor]:
        """Direction ``index`` split per encoder (one part when the split is unknown)."""
        return list(self.vectors[index].split(self.token_widths or [self.width]))

    def __len__(self) -> int:
        return self.count

    def label(self, index: int) -> str:
        """Human-readable name of direction ``index``."""
        if self.names and self.names[index]:
            return f"{index}: {self.names[index]}"
        return f"direction {index}"

    def token(self, index: int) -> str:
        """Direction ``index``'s prompt token in every export, e.g. ``<003-glasses-yes-no>``: its file stem
        in angle brackets, so one direction has one name whichever format a user picked."""
        return f"<{self.file_stem(index)}>"

    def file_stem(self, index: int) -> str:
        """File name (without suffix) of direction ``index`` in per-direction exports, e.g.
        ``003-glasses-yes-no``; other tools use it as the trigger word."""
        digits = max(3, len(str(self.count - 1)))
        name = self.names[index] if self.names and self.names[index] else ""
        slug = _slug(name) or _slug(self.domain) or "noiseclr"
        return f"{index:0{digits}d}-{slug}"

    @classmethod
    def for_model(cls, model: DiffusionModel, vectors: torch.Tensor, **metadata: Any) -> Directions:
        """Directions tied to ``model`` (its id, fingerprint and sequence length filled in)."""
        return cls(
            vectors=vectors,
            model_id=model.name,
            fingerprint=model.fingerprint(),
            token_widths=list(model.token_widths),
            second_fingerprint=model.second_encoder_fingerprint(),
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
            calibration={**self.calibration, "response": [self.calibration["response"][i] for i in indices]}
            if self.calibration
            else None,
        )

    def response(self, index: int) -> float | None:
        """Direction ``index``'s stored response (None when uncalibrated)."""
        return float(self.calibration["response"][index]) if self.calibration else None

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
        made_for = self.model_id or "another model"
        kind, model_kind = self.kind, model.kind
        if kind is not None and kind != model_kind:
            names = {"sd": "a Stable Diffusion 1.x/2.x", "sdxl": "an SDXL"}
            raise NoiseCLRError(
                f"{where}: directions for {names[kind]} model (token widths {_plus(self.token_widths)}) cannot edit "
                f"model {model.name}, {names[model_kind]} model (token widths {_plus(model.token_widths)}); "
                f"pass --model {made_for} or discover directions for this model."
            )
        if self.width != model.token_width or (kind is not None and self.token_widths != list(model.token_widths)):
            mine = _plus(self.token_widths) if kind == "sdxl" else str(self.width)
            raise NoiseCLRError(
                f"{where}: directions have width {mine} but model {model.name} has token width "
                f"{_plus(model.token_widths)}; they were made for another model -- use that model or discover new directions."
            )
        if self.fingerprint is not None and not fingerprints_match(self.fingerprint, model.fingerprint()):
            raise NoiseCLRError(
                f"{where}: made for model {made_for}, whose text encoder differs from {model.name}'s; "
                f"pass --model {made_for} or discover directions for this model."
            )
        second = model.second_encoder_fingerprint()
        if (
            self.second_fingerprint is not None
            and second is not None
            and not fingerprints_match(self.second_fingerprint, second)
        ):
            raise NoiseCLRError(
                f"{where}: made for model {made_for}, whose second text encoder differs from {model.name}'s; "
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
        if self.kind is not None:
            meta["model_kind"] = self.kind
            meta["token_widths"] = json.dumps(self.token_widths)
        if self.fingerprint is not None:
            meta["fingerprint"] = json.dumps(self.fingerprint)
        if self.second_fingerprint is not None:
            meta["fingerprint_2"] = json.dumps(self.second_fingerprint)
        if self.max_length is not None:
            meta["max_length"] = str(self.max_length)
        if self.names is not None:
            meta["names"] = json.dumps(self.names)
        if self.edit_defaults is not None:
            meta["edit_defaults"] = json.dumps(self.edit_defaults)
        if self.calibration is not None:
            meta["calibration"] = json.dumps(self.calibration)
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
        if path.is_dir():
            inside = sorted(p.name for p in path.glob("*.safetensors"))[:3]
            hint = f" such as {path / inside[0]}" if inside else ""
            raise NoiseCLRError(f"{path}: is a folder; pass a directions file inside it{hint}.")
        if not path.is_file():
            raise NoiseCLRError(f"{path}: no such directions file; check the path.")
        if path.suffix == ".safetensors":
            tensors, meta = read_safetensors(path, "the file is damaged or of another type.")
            if meta.get("format") == FORMAT:
                return cls._from_noiseclr(path, tensors, meta)
            return cls._from_textual_inversion(path, tensors)
        if path.suffix in (".bin", ".pt", ".pth"):
            return cls._from_textual_inversion(path, read_tensor_file(path))
        raise NoiseCLRError(f"{path}: unknown directions file type; expected .safetensors, .bin or .pt.")

    @classmethod
    def _from_noiseclr(cls, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Directions:
        field = MetadataReader(path, meta)
        version = field.integer("format_version", default=0, least=0)
        if version > FORMAT_VERSION:
            raise NoiseCLRError(
                f"{path}: format version {version} is newer than this noiseclr understands ({FORMAT_VERSION}); upgrade noiseclr."
            )
        vectors = tensors.get(TENSOR_KEY)
        if vectors is None:
            raise NoiseCLRError(f"{path}: has noiseclr metadata but no '{TENSOR_KEY}' tensor; the file is damaged.")
        if vectors.ndim != 2 or not vectors.is_floating_point():
            raise NoiseCLRError(
                f"{path}: tensor '{TENSOR_KEY}' is {vectors.dtype} of shape {list(vectors.shape)}; expected a float "
                "[K, width] matrix -- the file is damaged, re-export the directions."
            )
        count, width = int(vectors.shape[0]), int(vectors.shape[1])
        if count == 0:
            raise NoiseCLRError(f"{path}: holds no directions (0 rows); discover or export directions into it first.")
        # Files from before SDXL support are SD files: one encoder, the whole row.
        widths = field.json("token_widths", list, default=[width])
        if not (len(widths) in KINDS and all(is_int(w) and w > 0 for w in widths) and sum(widths) == width):
            raise field.bad("token_widths", widths, f"1 or 2 positive widths that add up to the row width {width}")
        kind = field.choice("model_kind", tuple(KINDS.values()), default=None)
        if kind is not None and KINDS[len(widths)] != kind:
            raise field.bad("model_kind", kind, f"{KINDS[len(widths)]!r}, as token_widths {widths} say")
        return cls(
            vectors=vectors,
            model_id=meta.get("model", ""),
            fingerprint=field.json("fingerprint", dict, default=None),
            token_widths=widths,
            second_fingerprint=field.json("fingerprint_2", dict, default=None),
            max_length=field.integer("max_length", default=None, least=1),
            names=field.names(count),
            domain=meta.get("domain", ""),
            settings=field.json("settings", dict, default={}),
            edit_defaults=field.edit_defaults(count),
            calibration=field.calibration(count),
            source=meta.get("source", "noiseclr"),
            path=path,
        )

    @classmethod
    def _from_textual_inversion(cls, path: Path, state: Any) -> Directions:
        pair = sdxl_pair_vectors(state, path)
        if pair is None:
            pair = diffusers_sdxl_pair(path, state)
        if pair is not None:
            names, vectors, widths = pair
            return cls(vectors=vectors, names=names, token_widths=widths, source="textual-inversion", path=path)
        names, vectors = textual_inversion_vectors(state, path)
        return cls(vectors=torch.stack(vectors), names=names, source="textual-inversion", path=path)

    # --------------------------------------------------------- interchange
    def to_textual_inversion(self) -> dict[str, torch.Tensor]:
        """``{token: vector}`` for all K directions (the published NoiseCLR layout; SDXL rows whole)."""
        return {self.token(i): self.vectors[i].clone() for i in range(self.count)}

    def export(self, folder: str | Path, format: str = "textual-inversion") -> list[Path]:
        """Write ``format`` (one of :data:`EXPORT_FORMATS`) to ``folder``; returns the files written.

        Every format but ``noiseclr-published`` writes one direction per file: embeddings folders
        (ComfyUI searches their subfolders too) must never hold a file whose first term a tool
        takes silently while it drops the rest."""
        writers = {
            "textual-inversion": self.export_textual_inversion,
            "a1111": self.export_a1111,
            "diffusers": self.export_diffusers,
            "noiseclr-published": self.export_published,
        }
        if format not in writers:
            raise NoiseCLRError(f"--format {format}: unknown export format; use one of {', '.join(EXPORT_FORMATS)}.")
        if self.count == 0:
            raise NoiseCLRError(f"{self.path or 'directions'}: holds no directions; there is nothing to export.")
        return writers[format](folder)

    def export_textual_inversion(self, folder: str | Path) -> list[Path]:
        """One embedding file per direction, ``<file_stem>.safetensors``, in the layout that
        AUTOMATIC1111, ComfyUI and diffusers all read: ``{"<file_stem>": [W]}`` (SD) or
        ``{"clip_l": [1, W1], "clip_g": [1, W2]}`` (SDXL)."""
        if self.kind == "sdxl":
            return self.export_a1111(folder, title="textual-inversion")
        folder = Path(folder)
        stems = [self.file_stem(i) for i in range(self.count)]
        written = self._write_diffusers(folder, stems)
        stem = stems[0]
        readme = (
            f"{self.count} NoiseCLR directions as textual-inversion embeddings (model: {self.model_id or 'unknown'}),\n"
            f'one file per direction, layout {{"<{stem}>": [{self.width}]}}. The trigger word is the file name.\n\n'
            + _a1111_comfy_howto(stem)
            + "diffusers:\n"
            + _diffusers_howto(".", f"<{stem}>", sdxl=False)
            + f"\nFiles:\n{self._listing()}\n\n{_TOKEN_NOTE}"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written

    def export_published(self, folder: str | Path) -> list[Path]:
        """``learned_embeds.bin`` / ``learned_embeds.safetensors``: all K tokens in one dict, as the
        published NoiseCLR code writes them (SDXL: whole ``[d_1 | d_2]`` rows, which only noiseclr
        reads back). Not for an embeddings folder: A1111 refuses such a file and ComfyUI quietly
        uses its first token only."""
        folder = Path(folder)
        tokens = self.to_textual_inversion()
        written = [
            atomic_save_safetensors(folder / "learned_embeds.safetensors", tokens),
            atomic_write(folder / "learned_embeds.bin", lambda tmp: torch.save(tokens, tmp)),
        ]
        sdxl_note = " (SDXL: each vector is [clip_l | clip_g]; noiseclr reads it back)" if self.kind == "sdxl" else ""
        readme = (
            f"The published NoiseCLR code's layout: {self.count} directions (model: {self.model_id or 'unknown'}) as\n"
            f"one {{token: vector}} dict in learned_embeds.bin / learned_embeds.safetensors{sdxl_note}.\n\n"
            "Do not copy these files into an AUTOMATIC1111 or ComfyUI embeddings folder: A1111 refuses a file\n"
            "with several terms and ComfyUI uses only the first. For those tools export with\n"
            "--format textual-inversion (one file per direction).\n\n"
            f"Tokens:\n{self._listing(tokens=True)}\n"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written

    def export_a1111(self, folder: str | Path, title: str = "a1111") -> list[Path]:
        """One embedding file per direction, ``<file_stem>.safetensors``, for AUTOMATIC1111, ComfyUI
        and InvokeAI: ``{"emb_params": [1, W]}`` (SD) or ``{"clip_l": [1, W1], "clip_g": [1, W2]}`` (SDXL)."""
        folder = Path(folder)
        written = []
        for index in range(self.count):
            parts = self.parts(index)
            if self.kind == "sdxl":
                tensors = {key: part.unsqueeze(0).clone() for key, part in zip(SDXL_KEYS, parts)}
            else:
                tensors = {"emb_params": self.vectors[index].unsqueeze(0).clone()}
            written.append(atomic_save_safetensors(folder / f"{self.file_stem(index)}.safetensors", tensors))
        stem = self.file_stem(0)
        if self.kind == "sdxl":
            layout = f'{{"clip_l": [1, {self.token_widths[0]}], "clip_g": [1, {self.token_widths[1]}]}}'
        else:
            layout = f'{{"emb_params": [1, {self.width}]}}'
        readme = (
            f"{self.count} NoiseCLR directions as textual-inversion embeddings (model: {self.model_id or 'unknown'}),\n"
            f"one file per direction, layout {layout}. The trigger word is the file name.\n\n"
            + _a1111_comfy_howto(stem)
            + f"InvokeAI: install the files (Model Manager, or the autoimport folder) and write '<{stem}>'.\n"
            + "diffusers:\n"
            + (
                "    # An SDXL file holds one tensor per text encoder: pass each to its encoder (passing the\n"
                "    # file path itself fails, as diffusers expects one tensor per file).\n"
                "    from safetensors.torch import load_file\n"
                f"    state = load_file('{stem}.safetensors')\n"
                f"    pipe.load_textual_inversion(state['clip_l'], token='<{stem}>', text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)\n"
                f"    pipe.load_textual_inversion(state['clip_g'], token='<{stem}>', text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)\n"
                if self.kind == "sdxl"
                else f"    pipe.load_textual_inversion('{stem}.safetensors', token='<{stem}>')\n"
            )
            + f"\nFiles:\n{self._listing()}\n\n{_TOKEN_NOTE}"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written

    def export_diffusers(self, folder: str | Path) -> list[Path]:
        """One ``{"<file_stem>": vector}`` file per direction, as ``pipe.load_textual_inversion`` reads;
        SDXL: one per encoder, ``text_encoder/<stem>-clip_l`` and ``text_encoder_2/<stem>-clip_g``."""
        folder = Path(folder)
        stems = [self.file_stem(i) for i in range(self.count)]
        written = self._write_diffusers(folder, stems)
        readme = (
            f"{self.count} NoiseCLR directions in the diffusers textual-inversion layout "
            f"(model: {self.model_id or 'unknown'}).\n\n"
            + _diffusers_howto(".", f"<{stems[0]}>", self.kind == "sdxl")
            + f"\nFiles:\n{self._listing()}\n\n{_TOKEN_NOTE}"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written

    def _write_diffusers(self, folder: Path, stems: list[str]) -> list[Path]:
        written = []
        for index, stem in enumerate(stems):
            token = f"<{stem}>"
            if self.kind == "sdxl":
                # Distinct file names per encoder: ComfyUI looks embeddings up by file name across
                # subfolders, so two equal names would make its pick depend on directory order.
                for sub, key, part in zip(DIFFUSERS_SDXL_FOLDERS, SDXL_KEYS, self.parts(index)):
                    path = folder / sub / f"{stem}-{key}.safetensors"
                    written.append(atomic_save_safetensors(path, {token: part.clone()}))
            else:
                written.append(
                    atomic_save_safetensors(folder / f"{stem}.safetensors", {token: self.vectors[index].clone()})
                )
        return written

    def _listing(self, tokens: bool = False) -> str:
        def name(i: int) -> str:
            return self.token(i) if tokens else self.file_stem(i)

        return "\n".join(
            f"  {name(i)}  {self.names[i] if self.names and self.names[i] else ''}".rstrip() for i in range(self.count)
        )


_TOKEN_NOTE = (
    "Note: in these tools a direction becomes a prompt TOKEN. The text encoder mixes it with the other\n"
    "words of the prompt, and its strength is set by prompt weighting; NoiseCLR itself applies it as a\n"
    "guidance term eps(c_0) + scale * (eps(c_k) - eps(c_0)) with a scale and a window of steps. Expect\n"
    "related but different (often weaker or mixed) effects; noiseclr edit/generate give the paper's edits.\n"
)


def _a1111_comfy_howto(stem: str) -> str:
    return (
        "AUTOMATIC1111 / Forge: copy the files into stable-diffusion-webui/embeddings/ and write the name in a\n"
        f"    prompt: 'a portrait, {stem}'; strength by prompt weighting: '({stem}:1.3)'.\n"
        f"ComfyUI: copy them into ComfyUI/models/embeddings/ and write 'embedding:{stem}' in the prompt.\n"
    )


def _diffusers_howto(where: str, token: str, sdxl: bool) -> str:
    if sdxl:
        return (
            "    import glob\n"
            f"    pipe.load_textual_inversion(sorted(glob.glob('{where}/text_encoder/*.safetensors')),\n"
            "                                text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)\n"
            f"    pipe.load_textual_inversion(sorted(glob.glob('{where}/text_encoder_2/*.safetensors')),\n"
            "                                text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)\n"
            f"    image = pipe('a photo, {token}').images[0]\n"
        )
    return (
        "    import glob\n"
        f"    pipe.load_textual_inversion(sorted(glob.glob('{where}/*.safetensors')))\n"
        f"    image = pipe('a photo, {token}').images[0]\n"
    )


def _slug(text: str) -> str:
    # File names double as trigger words in A1111/ComfyUI: keep them plain.
    return re.sub(r"[^a-z0-9_]+", "-", str(text).lower()).strip("-")[:48].strip("-")


def _plus(widths: list[int] | None) -> str:
    return "+".join(map(str, widths or []))
