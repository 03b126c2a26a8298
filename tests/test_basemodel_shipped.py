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
    from noiseclr.generation import GenerateSettings, generate

    model = DiffusionModel.load("embedded", device="cpu", dtype="float32")
    assert model.name == "noiseclr/embedded-base"
    reader = load_readers()["faces"]
    prompts = {"plain": "a cartoon face with no glasses", "named": "a cartoon face with glasses on a blue background"}
    read = {}
    for key, prompt in prompts.items():
        pixels = generate(
            model, [prompt] * 8, [], GenerateSettings(steps=20, guidance_scale=5.0, seed=0), progress=False
        ).images
        assert pixels.shape == (8, 3, 128, 128) and torch.isfinite(pixels).all()
        assert pixels.std() > 0.1  # an image, not a flat field
        read[key] = reader.predict_labels(pixels)
    count = lambda key, factor, value: sum(labels[factor] == value for labels in read[key])  # noqa: E731
    # Same seeds, so the only difference is the caption; it must move both factors it names.
    assert count("named", "glasses", "yes") >= count("plain", "glasses", "yes") + 3
    assert count("named", "background", "blue") >= count("plain", "background", "blue") + 3


def test_plain_diffusers_generates_with_default_arguments():
    # No torch_dtype, no scheduler swap, no arguments: what a user of diffusers types first.
    # CI also runs this under the oldest transformers/diffusers pyproject.toml allows (.ci/run).
    import numpy as np
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    pipe = StableDiffusionPipeline.from_pretrained(ASSET)
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)} == {torch.float32}
    # The text encoder holds the shipped weights: transformers 4 initialises a random encoder,
    # with only a log line, from weight names it does not recognise.
    # (transformers 5 names the module's weights without the file's "text_model." prefix.)
    bare = lambda name: name.removeprefix("text_model.")  # noqa: E731
    shipped = {bare(name): tensor for name, tensor in load_file(ASSET / "text_encoder" / "model.safetensors").items()}
    loaded = {bare(name): tensor for name, tensor in pipe.text_encoder.state_dict().items()}
    assert len(shipped) > 10 and shipped.keys() <= loaded.keys()
    for name, tensor in shipped.items():
        assert torch.equal(loaded[name], tensor.float()), name
    pipe.set_progress_bar_config(disable=True)
    image = np.asarray(pipe("a cartoon face with glasses").images[0])
    assert image.shape == (128, 128, 3) and image.std() > 10  # an image, not a flat field


# Names as Stable Diffusion 1.5's diffusers checkpoint has them (a few per component).
SD15_NAMES = {
    "text_encoder": [
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.final_layer_norm.weight",
    ],
    "unet": [
        "conv_in.weight",
        "time_embedding.linear_1.weight",
        "down_blocks.1.attentions.0.proj_in.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "mid_block.resnets.0.conv1.weight",
        "up_blocks.0.resnets.0.conv_shortcut.weight",
        "conv_norm_out.weight",
        "conv_out.weight",
    ],
    "vae": [
        "encoder.conv_in.weight",
        "encoder.down_blocks.0.resnets.0.conv1.weight",
        "encoder.mid_block.attentions.0.to_q.weight",
        "quant_conv.weight",
        "post_quant_conv.weight",
        "decoder.up_blocks.0.resnets.0.conv1.weight",
        "decoder.conv_out.weight",
    ],
}


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae"])
def test_weight_names_are_stable_diffusions(component):
    from safetensors import safe_open

    path = next((ASSET / component).glob("*.safetensors"))
    with safe_open(str(path), "pt") as handle:
        names = set(handle.keys())
    for name in SD15_NAMES[component]:
        assert name in names, name
    config = json.loads((ASSET / component / "config.json").read_text())
    if component == "text_encoder":
        # transformers 4 loads a random encoder, with only a warning, from unprefixed names.
        assert all(name.startswith("text_model.") for name in names)
        assert config.get("torch_dtype", "float32") == "float32" and "dtype" not in config
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        cls = UNet2DConditionModel if component == "unet" else AutoencoderKL
        with torch.device("meta"):
            expected = set(cls.from_config(config).state_dict())
        assert names == expected


@pytest.mark.parametrize("domain", ["faces", "cats"])
def test_the_shipped_random_reference_is_the_one_the_demo_asks_for(domain):
    # The demo's first run reads it instead of spending minutes on it; a change of the weights or
    # of the demo's defaults changes the key: then `python scripts/ship_random_reference.py` again.
    from types import SimpleNamespace

    from noiseclr.chance import SHIPPED_DIR, ReferenceCache, reference_key, reference_payload
    from noiseclr.demo import DemoSettings
    from noiseclr.measure import load_reader, reader_factor_names, seeds_for

    settings = DemoSettings(domain=domain).validate()
    protocol = settings.protocol()
    test = SimpleNamespace(
        domain=domain, role="demo-test", seeds=seeds_for("demo-test", settings.naming_images, protocol.seed)
    )
    names = reader_factor_names(load_reader(domain), domain)
    model = DiffusionModel.load("embedded", device="cpu")
    payload = reference_payload(
        model, test, names, settings.strength, (0.0, 1.0), protocol, settings.random_reference, settings.seed
    )
    key = reference_key(payload)
    shipped = ReferenceCache(SHIPPED_DIR).get(key)
    assert shipped is not None, f"no shipped random reference {key}: run scripts/ship_random_reference.py"
    assert shipped.count == settings.random_reference and list(shipped.factor_names) == names
    assert shipped.images == settings.naming_images
