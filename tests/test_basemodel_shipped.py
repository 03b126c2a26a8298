"""The embedded base model that ships in the package: SD's classes, fp16, size bar, offline load, it samples."""

from __future__ import annotations

import json

import pytest
import torch

from noiseclr.model import DiffusionModel, embedded_model_path
from noiseclr.basemodel.quality import load_readers

ASSET = embedded_model_path()
SIZE_BAR_BYTES = 40_000_000  # "at most 40 MB in all"


def test_shipped_files_are_fp16_safetensors_within_the_size_bar():
    files = sorted(p for p in ASSET.rglob("*") if p.is_file())
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"vae", "text_encoder", "unet"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")], "only safetensors ship"
    assert sum(p.stat().st_size for p in files) <= SIZE_BAR_BYTES
    from safetensors import safe_open

    for path in weights:
        with safe_open(str(path), "pt") as handle:
            dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
        assert dtypes == {"F16"}, (path, dtypes)
    index = json.loads((ASSET / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"


def test_loads_offline_through_diffusers_with_sd_component_classes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(ASSET, safety_checker=None, local_files_only=True)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert pipe.vae.config.latent_channels == 4 and 2 ** (len(pipe.vae.config.block_out_channels) - 1) == 8
    assert pipe.scheduler.config.prediction_type == "epsilon"
    # Every word of the caption grammar is a single token.
    ids = pipe.tokenizer("a cartoon face with glasses").input_ids
    assert len(ids) == 2 + 5


@pytest.mark.slow
def test_samples_faces_and_follows_the_caption():
    from noiseclr.editing import GenerateSettings, generate

    model = DiffusionModel.load("embedded", device="cpu", dtype="float32")
    assert model.name == "noiseclr/embedded-base"
    reader = load_readers()["faces"]
    prompts = {"plain": "a cartoon face with no glasses", "named": "a cartoon face with glasses on a blue background"}
    read = {}
    for key, prompt in prompts.items():
        pixels = generate(model, [prompt] * 8, [], GenerateSettings(steps=20, guidance_scale=5.0, seed=0), progress=False).images
        assert pixels.shape == (8, 3, 128, 128) and torch.isfinite(pixels).all()
        assert pixels.std() > 0.1  # an image, not a flat field
        read[key] = reader.predict_labels(pixels)
    count = lambda key, factor, value: sum(labels[factor] == value for labels in read[key])  # noqa: E731
    # Same seeds, so the only difference is the caption; it must move both factors it names.
    assert count("named", "glasses", "yes") >= count("plain", "glasses", "yes") + 3
    assert count("named", "background", "blue") >= count("plain", "background", "blue") + 3
