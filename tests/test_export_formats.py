"""Files other tools load: every export layout round-trips through Directions.load, the diffusers
layouts load with pipe.load_textual_inversion (SD and SDXL), imported files are width-checked,
old files still load, and non-finite values are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from noiseclr.cli import build_parser, main
from noiseclr.directions import EXPORT_FORMATS, Directions
from noiseclr.errors import NoiseCLRError
from noiseclr.model import DiffusionModel

pytest_plugins = ["sdxl_models"]  # tiny SDXL fixtures: tiny_sdxl_dir, sdxl_model, sdxl64

NAMES = ["glasses: yes/no", "", "Smile!!"]


def make_directions(model: DiffusionModel, count: int = 3, seed: int = 0, **metadata) -> Directions:
    rows = torch.randn(count, model.token_width, generator=torch.Generator().manual_seed(seed))
    return Directions.for_model(model, model.scale_to_token_norms(rows), **metadata)


def load_all(paths) -> Directions:
    loaded = [Directions.load(p) for p in sorted(paths)]
    return loaded


def stacked(paths) -> torch.Tensor:
    return torch.cat([d.vectors for d in load_all(paths)])


@pytest.fixture()
def sd_directions(tiny_model) -> Directions:
    return make_directions(tiny_model, names=NAMES, domain="Faces")


@pytest.fixture()
def sdxl_directions(sdxl_model) -> Directions:
    return make_directions(sdxl_model, names=NAMES, domain="Faces")


def test_file_names_carry_sanitised_direction_names(sd_directions):
    assert [sd_directions.file_stem(i) for i in range(3)] == ["000-glasses-yes-no", "001-faces", "002-smile"]
    assert build_parser().parse_args(["export", "x"]).format == "textual-inversion"
    parser_choices = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["export"]._actions if a.dest == "format"
    )
    assert tuple(parser_choices.choices) == EXPORT_FORMATS


# ------------------------------------------------------------------------------------ SD
def test_sd_a1111_layout_round_trips(sd_directions, tiny_model, tmp_path):
    written = sd_directions.export(tmp_path / "a1111", "a1111")
    files = sorted((tmp_path / "a1111").glob("*.safetensors"))
    assert [f.name for f in files] == [
        "000-glasses-yes-no.safetensors",
        "001-faces.safetensors",
        "002-smile.safetensors",
    ]
    assert (tmp_path / "a1111" / "README.txt") in written
    state = load_file(str(files[0]))
    assert list(state) == ["emb_params"] and state["emb_params"].shape == (1, 32)
    loaded = load_all(files)
    assert torch.equal(torch.cat([d.vectors for d in loaded]), sd_directions.vectors)
    assert loaded[0].names == ["000-glasses-yes-no"] and loaded[0].fingerprint is None
    for directions in loaded:
        directions.check_compatible(tiny_model)
    readme = (tmp_path / "a1111" / "README.txt").read_text()
    assert "embedding:000-glasses-yes-no" in readme and "TOKEN" in readme


@pytest.mark.float64
def test_sd_diffusers_layout_round_trips_and_loads_into_the_pipeline(sd_directions, tiny_model_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    sd_directions.export(tmp_path / "d", "diffusers")
    files = sorted((tmp_path / "d").glob("*.safetensors"))
    assert list(load_file(str(files[0]))) == ["<000-glasses-yes-no>"]
    assert torch.equal(stacked(files), sd_directions.vectors)

    pipe = StableDiffusionPipeline.from_pretrained(
        str(tiny_model_dir), torch_dtype=torch.float64, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion([str(f) for f in files])
    # A prompt holding the token encodes exactly as noiseclr encodes the direction...
    model = DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float64")
    hidden, _ = pipe.encode_prompt(["<000-glasses-yes-no>"], "cpu", 1, False)
    ours = model.encode_directions(sd_directions.vectors[:1].double())
    assert float((hidden.detach() - ours).abs().max()) < 1e-12 * float(ours.abs().max())
    # ...and generates.
    out = pipe("a photo, <002-smile>", num_inference_steps=2, output_type="latent").images
    assert out.shape == (1, 4, 8, 8) and bool(torch.isfinite(out).all())


def test_sd_textual_inversion_export_is_one_token_file_per_direction(sd_directions, tmp_path):
    sd_directions.export(tmp_path / "ti")  # the default format
    files = sorted((tmp_path / "ti").glob("*.safetensors"))
    assert [list(load_file(str(f))) for f in files] == [["<000-glasses-yes-no>"], ["<001-faces>"], ["<002-smile>"]]
    assert torch.equal(stacked(files), sd_directions.vectors)
    assert not list((tmp_path / "ti").rglob("*.bin")) and not list((tmp_path / "ti").rglob("*/*.safetensors"))


def test_published_layout_holds_all_tokens_under_one_name_per_direction(sd_directions, tmp_path):
    sd_directions.export(tmp_path / "pub", "noiseclr-published")
    tokens = load_file(str(tmp_path / "pub" / "learned_embeds.safetensors"))
    # The same names as every other format's files: one direction, one name.
    assert list(tokens) == [f"<{sd_directions.file_stem(i)}>" for i in range(3)]
    assert torch.equal(Directions.load(tmp_path / "pub" / "learned_embeds.bin").vectors, sd_directions.vectors)
    assert "Do not copy these files" in (tmp_path / "pub" / "README.txt").read_text()


# ---------------------------------------------------------------------------------- SDXL
def test_sdxl_a1111_layout_is_a_clip_l_clip_g_pair_and_round_trips(sdxl_directions, sdxl_model, tiny_model, tmp_path):
    sdxl_directions.export(tmp_path / "a1111", "a1111")
    files = sorted((tmp_path / "a1111").glob("*.safetensors"))
    assert len(files) == 3 and files[2].name == "002-smile.safetensors"
    state = load_file(str(files[0]))
    assert set(state) == {"clip_l", "clip_g"} and state["clip_l"].shape == (1, 32) and state["clip_g"].shape == (1, 48)
    loaded = load_all(files)
    assert torch.equal(torch.cat([d.vectors for d in loaded]), sdxl_directions.vectors)
    assert loaded[0].kind == "sdxl" and loaded[0].token_widths == [32, 48] and loaded[0].fingerprint is None
    loaded[0].check_compatible(sdxl_model)
    # Unverified (no fingerprint), but the widths still tell an SD model apart.
    with pytest.raises(NoiseCLRError, match="000-glasses-yes-no.safetensors: directions for an SDXL model"):
        loaded[0].check_compatible(tiny_model)
    readme = (tmp_path / "a1111" / "README.txt").read_text()
    assert "state['clip_g']" in readme and "text_encoder=pipe.text_encoder_2" in readme


def test_sdxl_diffusers_layout_round_trips_and_loads_into_the_pipeline(
    sdxl_directions, sdxl_model, tiny_sdxl_dir, tmp_path
):
    from diffusers import StableDiffusionXLPipeline

    sdxl_directions.export(tmp_path / "d", "diffusers")
    first = sorted((tmp_path / "d" / "text_encoder").glob("*.safetensors"))
    second = sorted((tmp_path / "d" / "text_encoder_2").glob("*.safetensors"))
    # Names differ per encoder (ComfyUI finds embeddings by file name across subfolders).
    assert [f.name for f in first] == [
        "000-glasses-yes-no-clip_l.safetensors",
        "001-faces-clip_l.safetensors",
        "002-smile-clip_l.safetensors",
    ]
    assert [f.name for f in second] == [f.name.replace("clip_l", "clip_g") for f in first]
    assert load_file(str(second[0]))["<000-glasses-yes-no>"].shape == (48,)
    # Either file of a pair names the whole direction.
    for files in (first, second):
        loaded = load_all(files)
        assert torch.equal(torch.cat([d.vectors for d in loaded]), sdxl_directions.vectors)
        assert loaded[0].token_widths == [32, 48]
        loaded[0].check_compatible(sdxl_model)

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_dir), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion([str(f) for f in first], text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion([str(f) for f in second], text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    out = pipe("a photo, <002-smile>", num_inference_steps=2, output_type="latent").images
    assert out.shape == (1, 4, 12, 12) and bool(torch.isfinite(out).all())


def test_sdxl_a1111_file_loads_into_diffusers_as_the_readme_says(sdxl_directions, tiny_sdxl_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    sdxl_directions.export(tmp_path / "a1111", "a1111")
    state = load_file(str(tmp_path / "a1111" / "001-faces.safetensors"))
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_dir), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(
        state["clip_l"], token="<001-faces>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        state["clip_g"], token="<001-faces>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    out = pipe("<001-faces>", num_inference_steps=2, output_type="latent").images
    assert bool(torch.isfinite(out).all())


def test_sdxl_textual_inversion_export_round_trips(sdxl_directions, sdxl_model, tmp_path):
    sdxl_directions.export(tmp_path / "ti", "textual-inversion")
    files = sorted((tmp_path / "ti").glob("*.safetensors"))
    assert len(files) == 3 and all(set(load_file(str(f))) == {"clip_l", "clip_g"} for f in files)
    assert torch.equal(stacked(files), sdxl_directions.vectors)
    Directions.load(files[0]).check_compatible(sdxl_model)
    whole = sdxl_directions.export(tmp_path / "pub", "noiseclr-published")
    whole = Directions.load(tmp_path / "pub" / "learned_embeds.bin")
    assert torch.equal(whole.vectors, sdxl_directions.vectors)
    whole.check_compatible(sdxl_model)  # whole rows: only the total width is known, and it fits
    assert "state['clip_g']" in (tmp_path / "ti" / "README.txt").read_text()


def test_export_cli_writes_each_format(capsys, sdxl_directions, tmp_path):
    source = sdxl_directions.save(tmp_path / "faces.safetensors")
    for fmt in EXPORT_FORMATS:
        assert main(["export", str(source), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert f"format {fmt}" in out and "sdxl directions" in out
        assert (tmp_path / f"faces-{fmt}" / "README.txt").is_file()
    assert len(list((tmp_path / "faces-a1111").glob("*.safetensors"))) == 3


# ------------------------------------------------------------------------- file format
def test_files_record_kind_widths_and_fingerprints(sd_directions, tmp_path):
    from safetensors import safe_open

    path = sd_directions.save(tmp_path / "sd.safetensors")
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["format_version"] == "1" and meta["model_kind"] == "sd" and json.loads(meta["token_widths"]) == [32]
    assert "fingerprint_2" not in meta


def test_old_files_without_widths_still_load_for_sd(sd_directions, tiny_model, tmp_path):
    meta = sd_directions.metadata()
    for key in ("model_kind", "token_widths"):
        del meta[key]
    old = tmp_path / "old.safetensors"
    save_file({"directions": sd_directions.vectors}, str(old), metadata=meta)
    loaded = Directions.load(old)
    assert loaded.kind == "sd" and loaded.token_widths == [32]
    loaded.check_compatible(tiny_model)


def test_an_sd_embedding_is_refused_by_an_sdxl_model(tiny_model, sdxl_model, tmp_path):
    path = tmp_path / "emb.safetensors"
    save_file({"emb_params": torch.randn(1, 32)}, str(path))
    with pytest.raises(
        NoiseCLRError, match="emb.safetensors: directions have width 32 but model .* token width 32\\+48"
    ):
        Directions.load(path).check_compatible(sdxl_model)


@pytest.mark.parametrize("layout", ["noiseclr", "token", "pair"])
def test_non_finite_values_are_refused_naming_the_file(sd_directions, tmp_path, layout):
    bad = sd_directions.vectors.clone()
    bad[1, 3] = float("nan")
    path = tmp_path / f"{layout}.safetensors"
    if layout == "noiseclr":
        save_file({"directions": bad}, str(path), metadata=sd_directions.metadata())
    elif layout == "token":
        save_file({"<x>": bad[1]}, str(path))
    else:
        save_file({"clip_l": bad[1:2, :16].contiguous(), "clip_g": torch.full((1, 16), float("inf"))}, str(path))
    with pytest.raises(NoiseCLRError, match=f"{layout}.safetensors: direction\\(s\\) .* NaN or infinite") as caught:
        Directions.load(path)
    assert "\n" not in str(caught.value)


def test_damaged_width_metadata_is_a_one_line_error(sd_directions, tmp_path):
    meta = dict(sd_directions.metadata(), token_widths="[16, 8]", model_kind="sdxl")
    path = tmp_path / "bad.safetensors"
    save_file({"directions": sd_directions.vectors}, str(path), metadata=meta)
    with pytest.raises(NoiseCLRError, match="bad.safetensors: metadata field 'token_widths'"):
        Directions.load(path)
