"""Directions and their file format.

A set of K directions is a [K, width] tensor of token embeddings plus metadata that says which
model they belong to. On SDXL a direction is a pair of token embeddings, one per text encoder,
stored as one row ``[d_1 | d_2]`` of width ``W1 + W2``. Files are safetensors: tensor
``directions`` and string metadata

=================  ===========================================================================
``format``         ``noiseclr.directions``
``format_version`` ``1``
``model``          identifier of the model they were discovered on (hub id, folder, embedded)
``model_kind``     ``sd`` (Stable Diffusion 1.x/2.x) or ``sdxl``
``fingerprint``    JSON: the (first) text encoder token table's shape, a dtype-stable probe and sha256
``fingerprint_2``  JSON: the same for SDXL's second text encoder (SDXL only)
``token_width``    width of one direction row (the sum of ``token_widths``)
``token_widths``   JSON: each encoder's part of a row, ``[W]`` or ``[W1, W2]`` (e.g. [768, 1280])
``max_length``     the tokenizer's sequence length
``count``          K
``names``          JSON list of K names (optional; e.g. the factor a direction moves)
``domain``         free-text label of the image domain (faces, cats, ...)
``settings``       JSON: the discovery settings that produced them
``edit_defaults``  JSON list of K ``{"scale" or "strength", "start", "end", "inversion", "steps"}``:
                   how to apply each direction, as it was measured (optional; the last two may be absent)
``calibration``    JSON: each direction's response (``{"response": [K], "definition", "timesteps",
                   "images", "seed", "source"}``, :mod:`noiseclr.strength`): a strength of S% is the
                   scale ``S / (100 * response[k])`` (optional; measured at the end of discovery)
=================  ===========================================================================

Files written before SDXL support have no ``model_kind``/``token_widths``; they are SD files
(``token_widths = [token_width]``). Older readers ignore the new keys and refuse SDXL files by
their width, so the version stays 1.

Any safetensors reader can open them (``safetensors.safe_open(path, "pt").metadata()``).
:meth:`Directions.load` also imports what other tools use (imported files carry no fingerprint,
so only their widths are checked against a model):

* ``{token: vector}`` (``pipe.load_textual_inversion``'s layout and the published NoiseCLR
  code's ``learned_embeds.bin``), A1111's ``string_to_param``, kohya's ``emb_params``;
* SDXL pairs: ``{"clip_l": [n, W1], "clip_g": [n, W2]}`` (kohya/A1111/ComfyUI/InvokeAI), and
  the diffusers SDXL layout ``text_encoder/NAME.safetensors`` + ``text_encoder_2/NAME.safetensors``
  (either file names the pair).

:meth:`Directions.export` writes them (formats in :data:`EXPORT_FORMATS`, one README.txt each).
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

EXPORT_FORMATS = ("textual-inversion", "a1111", "diffusers")
"""``textual-inversion``: all tokens in learned_embeds.bin/.safetensors plus diffusers files;
``a1111``: one file per direction for AUTOMATIC1111, ComfyUI, InvokeAI (``emb_params`` or
``clip_l``/``clip_g``); ``diffusers``: one ``{token: vector}`` file per direction and encoder."""

SDXL_KEYS = ("clip_l", "clip_g")
"""kohya's keys for SDXL's two encoders (CLIP ViT-L, OpenCLIP ViT-bigG)."""
DIFFUSERS_SDXL_FOLDERS = ("text_encoder", "text_encoder_2")
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
    fingerprint_2: dict[str, Any] | None = None
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
        """Token string used when exporting to textual inversion, e.g. ``<faces-3>``."""
        prefix = re.sub(r"[^a-z0-9]+", "-", (self.domain or "noiseclr").lower()).strip("-") or "noiseclr"
        return f"<{prefix}-{index}>"

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
            fingerprint_2=model.fingerprint_2(),
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
            if self.calibration else None,
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
        second = model.fingerprint_2()
        if self.fingerprint_2 is not None and second is not None and not fingerprints_match(self.fingerprint_2, second):
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
        if self.fingerprint_2 is not None:
            meta["fingerprint_2"] = json.dumps(self.fingerprint_2)
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
            vectors = tensors[TENSOR_KEY]
            # Files from before SDXL support are SD files: one encoder, the whole row.
            widths = json.loads(meta["token_widths"]) if meta.get("token_widths") else [int(vectors.shape[-1])]
            kind = meta.get("model_kind")
            if kind is not None and KINDS.get(len(widths)) != kind:
                raise ValueError(f"model_kind {kind!r} does not match token_widths {widths}")
            return cls(
                vectors=vectors,
                model_id=meta.get("model", ""),
                fingerprint=json.loads(meta["fingerprint"]) if meta.get("fingerprint") else None,
                token_widths=widths,
                fingerprint_2=json.loads(meta["fingerprint_2"]) if meta.get("fingerprint_2") else None,
                max_length=int(meta["max_length"]) if meta.get("max_length") else None,
                names=json.loads(meta["names"]) if meta.get("names") else None,
                domain=meta.get("domain", ""),
                settings=json.loads(meta.get("settings") or "{}"),
                edit_defaults=json.loads(meta["edit_defaults"]) if meta.get("edit_defaults") else None,
                calibration=json.loads(meta["calibration"]) if meta.get("calibration") else None,
                source=meta.get("source", "noiseclr"),
                path=path,
            )
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise NoiseCLRError(f"{path}: damaged metadata ({exc}); re-export the directions.") from None

    @classmethod
    def _from_textual_inversion(cls, path: Path, state: Any) -> Directions:
        pair = sdxl_pair_vectors(state, path)
        if pair is None:
            pair = _diffusers_sdxl_pair(path, state)
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
        """Write ``format`` (one of :data:`EXPORT_FORMATS`) to ``folder``; returns the files written."""
        writers = {
            "textual-inversion": self.export_textual_inversion,
            "a1111": self.export_a1111,
            "diffusers": self.export_diffusers,
        }
        if format not in writers:
            raise NoiseCLRError(f"--format {format}: unknown export format; use one of {', '.join(EXPORT_FORMATS)}.")
        return writers[format](folder)

    def export_textual_inversion(self, folder: str | Path) -> list[Path]:
        """Write textual-inversion files to ``folder``.

        * ``learned_embeds.bin`` / ``learned_embeds.safetensors``: all tokens in one dict, as
          the published NoiseCLR code writes them (SDXL: whole ``[d_1 | d_2]`` rows, which only
          noiseclr reads back);
        * ``diffusers/<token>.safetensors``: one token per file, the layout
          ``StableDiffusionPipeline.load_textual_inversion`` reads (SDXL: ``diffusers/text_encoder/``
          and ``diffusers/text_encoder_2/``, see :meth:`export_diffusers`).
        """
        folder = Path(folder)
        tokens = self.to_textual_inversion()
        written = [
            atomic_save_safetensors(folder / "learned_embeds.safetensors", tokens),
            atomic_write(folder / "learned_embeds.bin", lambda tmp: torch.save(tokens, tmp)),
        ]
        stems = [token.strip("<>") for token in tokens]
        written += self._write_diffusers(folder / "diffusers", stems, list(tokens))
        listing = "\n".join(f"  {t}  {self.names[i] if self.names else ''}" for i, t in enumerate(tokens))
        first = next(iter(tokens))
        readme = (
            f"Textual-inversion export of {self.count} NoiseCLR directions (model: {self.model_id or 'unknown'}).\n\n"
            "learned_embeds.bin / learned_embeds.safetensors: all tokens in one {token: vector} dict, the\n"
            "published NoiseCLR layout" + (" (SDXL: each vector is [clip_l | clip_g]; noiseclr reads it back)" if self.kind == "sdxl" else "") + ".\n\n"
            "diffusers:\n" + _diffusers_howto("diffusers", first, self.kind == "sdxl") + "\n"
            f"Tokens:\n{listing}\n\n{_TOKEN_NOTE}"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written

    def export_a1111(self, folder: str | Path) -> list[Path]:
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
            f"AUTOMATIC1111 / Forge: copy the files into stable-diffusion-webui/embeddings/ and write the name in a\n"
            f"    prompt: 'a portrait, {stem}'; strength by prompt weighting: '({stem}:1.3)'.\n"
            f"ComfyUI: copy them into ComfyUI/models/embeddings/ and write 'embedding:{stem}' in the prompt.\n"
            f"InvokeAI: install the files (Model Manager, or the autoimport folder) and write '<{stem}>'.\n"
            "diffusers:\n"
            + (
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
        SDXL: one per encoder, in ``text_encoder/`` and ``text_encoder_2/``."""
        folder = Path(folder)
        stems = [self.file_stem(i) for i in range(self.count)]
        written = self._write_diffusers(folder, stems, [f"<{stem}>" for stem in stems])
        readme = (
            f"{self.count} NoiseCLR directions in the diffusers textual-inversion layout "
            f"(model: {self.model_id or 'unknown'}).\n\n"
            + _diffusers_howto(".", f"<{stems[0]}>", self.kind == "sdxl")
            + f"\nFiles:\n{self._listing()}\n\n{_TOKEN_NOTE}"
        )
        written.append(atomic_write_text(folder / "README.txt", readme))
        return written

    def _write_diffusers(self, folder: Path, stems: list[str], tokens: list[str]) -> list[Path]:
        written = []
        for index, (stem, token) in enumerate(zip(stems, tokens)):
            if self.kind == "sdxl":
                for sub, part in zip(DIFFUSERS_SDXL_FOLDERS, self.parts(index)):
                    written.append(atomic_save_safetensors(folder / sub / f"{stem}.safetensors", {token: part.clone()}))
            else:
                written.append(atomic_save_safetensors(folder / f"{stem}.safetensors", {token: self.vectors[index].clone()}))
        return written

    def _listing(self) -> str:
        return "\n".join(
            f"  {self.file_stem(i)}  {self.names[i] if self.names and self.names[i] else ''}".rstrip() for i in range(self.count)
        )


_TOKEN_NOTE = (
    "Note: in these tools a direction becomes a prompt TOKEN. The text encoder mixes it with the other\n"
    "words of the prompt, and its strength is set by prompt weighting; NoiseCLR itself applies it as a\n"
    "guidance term eps(c_0) + scale * (eps(c_k) - eps(c_0)) with a scale and a window of steps. Expect\n"
    "related but different (often weaker or mixed) effects; noiseclr edit/generate give the paper's edits.\n"
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
        raise NoiseCLRError(f"{path}: vectors of different widths {sorted(widths)}; a file must hold one model's tokens.")
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
        raise NoiseCLRError(f"{path}: SDXL embedding with mismatched tensors ({shapes}); expected [n, W] each with the same n.")
    stem = Path(path).stem
    count = parts[0].shape[0]
    names = [stem] if count == 1 else [f"{stem}[{i}]" for i in range(count)]
    return names, torch.cat(parts, dim=1), [int(parts[0].shape[1]), int(parts[1].shape[1])]


def _diffusers_sdxl_pair(path: Path, state: Any) -> tuple[list[str], torch.Tensor, list[int]] | None:
    """The diffusers SDXL layout: ``text_encoder/NAME`` + ``text_encoder_2/NAME``, named by either file."""
    if path.parent.name not in DIFFUSERS_SDXL_FOLDERS:
        return None
    first, second = (path.parent.parent / sub / path.name for sub in DIFFUSERS_SDXL_FOLDERS)
    other = second if path.parent.name == DIFFUSERS_SDXL_FOLDERS[0] else first
    if not other.is_file():
        return None  # a lone file: imported as plain vectors, checked by width
    if path.suffix == ".safetensors":
        other_state, _ = read_safetensors(other, "the file is damaged or of another type.")
    else:
        try:
            other_state = torch.load(other, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            raise NoiseCLRError(f"{other}: not a readable textual-inversion file; re-export the directions.") from None
    states = (state, other_state) if other == second else (other_state, state)
    (names, part_1), (_, part_2) = (textual_inversion_vectors(st, p) for st, p in zip(states, (first, second)))
    if len(part_1) != len(part_2):
        raise NoiseCLRError(f"{path}: {first} and {second} hold {len(part_1)} and {len(part_2)} vectors; an SDXL pair needs the same number.")
    vectors = torch.cat([torch.stack(part_1), torch.stack(part_2)], dim=1)
    return names, vectors, [int(part_1[0].shape[0]), int(part_2[0].shape[0])]
