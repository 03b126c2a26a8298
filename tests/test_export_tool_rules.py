"""Exported files read by the rules the real tools follow (written from their documented
formats, not copied from their code), so a user who drops an export folder into an embeddings
folder gets every direction, each under one name, and never a silently truncated file.

- ComfyUI: ``embedding:NAME`` is looked up as NAME, NAME.safetensors/.pt/.bin in the embeddings
  folder *and all its subfolders*; a file is read as ``string_to_param``'s first tensor, else the
  tensor under the encoder's key (``clip_l`` / ``clip_g``), else the dict's first tensor; a tensor
  whose width is not the encoder's is ignored.
- AUTOMATIC1111: a file is ``string_to_param`` with one term, or SDXL ``clip_g`` + ``clip_l``,
  or a "diffusers concept": a dict of exactly one tensor (more is an error, "multiple terms").
- diffusers ``load_textual_inversion``: a dict with exactly one ``token: tensor`` entry (or A1111's
  ``string_to_param``); SDXL takes one tensor per encoder call.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from noiseclr.directions import EXPORT_FORMATS, Directions

pytest_plugins = ["sdxl_models"]

PICKED_UP = (".safetensors", ".pt", ".bin")
ONE_PER_FILE = tuple(f for f in EXPORT_FORMATS if f != "noiseclr-published")


def _read(path: Path) -> dict:
    return load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


def comfyui_matches(root: Path, name: str) -> list[Path]:
    """Every file ComfyUI could pick for ``embedding:NAME`` (it takes whichever directory it sees first)."""
    found = []
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        for candidate in [folder / name, *(folder / f"{name}{ext}" for ext in PICKED_UP)]:
            if candidate.is_file():
                found.append(candidate)
                break
    return found


def comfyui_vector(state: dict, key: str, width: int) -> torch.Tensor | None:
    if "string_to_param" in state:
        tensor = next(iter(state["string_to_param"].values()))
    elif key in state:
        tensor = state[key]
    else:
        tensor = next(iter(state.values()))
    return tensor.reshape(-1, tensor.shape[-1]) if tensor.shape[-1] == width else None


def a1111_terms(state: dict) -> int:
    """How many embeddings A1111 makes of a file (raises as A1111 does on a multi-term file)."""
    if "string_to_param" in state:
        assert len(state["string_to_param"]) == 1, "embedding file has multiple terms in it"
        return 1
    if "clip_g" in state and "clip_l" in state:
        return 1
    assert len(state) == 1, "embedding file has multiple terms in it"
    return 1


def diffusers_entry(state: dict) -> tuple[str, torch.Tensor]:
    if len(state) == 1:
        return next(iter(state.items()))
    raise ValueError("Loaded state dictionary is incorrect")


def make(model, count: int = 3) -> Directions:
    rows = torch.randn(count, model.token_width, generator=torch.Generator().manual_seed(1))
    return Directions.for_model(
        model, model.scale_to_token_norms(rows), names=["hair_color (+red)", "", "Smile!!"], domain="faces"
    )


@pytest.mark.parametrize("fmt", ONE_PER_FILE)
def test_sd_exports_give_every_direction_once_in_every_tool(fmt, tiny_model, tmp_path):
    directions = make(tiny_model)
    directions.export(tmp_path / fmt, fmt)
    files = sorted(p for p in (tmp_path / fmt).rglob("*") if p.suffix in PICKED_UP)
    assert len(files) == directions.count
    for path in files:
        state = _read(path)
        assert a1111_terms(state) == 1
        token, vector = diffusers_entry(state)
        assert vector.numel() == directions.width
    for index in range(directions.count):
        stem = directions.file_stem(index)
        matches = comfyui_matches(tmp_path / fmt, stem)
        assert len(matches) == 1, f"{stem}: {matches}"
        vector = comfyui_vector(_read(matches[0]), "clip_l", directions.width)
        assert torch.equal(vector, directions.vectors[index : index + 1])


@pytest.mark.parametrize("fmt", ONE_PER_FILE)
def test_sdxl_exports_hold_one_direction_per_file_under_distinct_names(fmt, sdxl_model, tmp_path):
    directions = make(sdxl_model)
    width_l, width_g = directions.token_widths
    directions.export(tmp_path / fmt, fmt)
    files = sorted(p for p in (tmp_path / fmt).rglob("*") if p.suffix in PICKED_UP)
    names = [p.stem for p in files]
    assert len(set(names)) == len(names), names  # ComfyUI's pick never depends on directory order
    for path in files:
        state = _read(path)
        assert a1111_terms(state) == 1
        if set(state) != {"clip_l", "clip_g"}:  # diffusers per-encoder files: one tensor each
            assert diffusers_entry(state)[1].ndim == 1
    if fmt != "diffusers":  # the embeddings-folder formats: ComfyUI gets both encoders' parts
        for index in range(directions.count):
            (match,) = comfyui_matches(tmp_path / fmt, directions.file_stem(index))
            state = _read(match)
            assert torch.equal(comfyui_vector(state, "clip_l", width_l)[0], directions.parts(index)[0])
            assert torch.equal(comfyui_vector(state, "clip_g", width_g)[0], directions.parts(index)[1])


def test_the_published_layout_is_the_only_multi_direction_file(tiny_model, tmp_path):
    directions = make(tiny_model)
    directions.export(tmp_path / "pub", "noiseclr-published")
    state = _read(tmp_path / "pub" / "learned_embeds.safetensors")
    with pytest.raises(AssertionError, match="multiple terms"):
        a1111_terms(state)
    with pytest.raises(ValueError):
        diffusers_entry(state)
    assert len(state) == directions.count
