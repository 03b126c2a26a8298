"""SDXL through the same adapter: loading, conditionings as StableDiffusionXLPipeline builds them,
directions as token pairs, discovery, editing and text-to-image -- on a tiny random SDXL model."""

from __future__ import annotations

import json

import pytest
import torch

from noiseclr import discovery
from noiseclr.directions import Directions
from noiseclr.discovery import DiscoverySettings, discover, micro_batch_loss
from noiseclr.editing import EditSettings, edit, regenerate
from noiseclr.errors import NoiseCLRError
from noiseclr.generation import generate_latents
from noiseclr.inversion import invert
from noiseclr.model import DiffusionModel, pack_conditioning, unpack_conditioning
from noiseclr.objective import reference_loss
from noiseclr.terms import DirectionTerm

pytest_plugins = ["sdxl_models"]  # tiny SDXL fixtures: tiny_sdxl_dir, sdxl_model, sdxl64

WIDTHS = [32, 48]


def random_pixels(batch: int, seed: int = 0, size: int = 96) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def random_latents(model: DiffusionModel, batch: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    shape = (batch, model.latent_channels, model.latent_size, model.latent_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def make_directions(model: DiffusionModel, count: int = 3, seed: int = 0, **metadata) -> Directions:
    rows = torch.randn(count, model.token_width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Directions.for_model(model, model.scale_to_token_norms(rows).float(), **metadata)


def fresh_pipeline(folder, dtype=torch.float64):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), torch_dtype=dtype, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------ loading
def test_loads_the_sdxl_layout_and_reads_every_size(sdxl_model, tiny_sdxl_dir):
    index = json.loads((tiny_sdxl_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    info = sdxl_model.describe()
    assert info["kind"] == "sdxl" and info["token_widths"] == WIDTHS and info["token_width"] == 80
    assert info["resolution"] == 96 and info["latent_shape"] == [4, 12, 12] and info["max_length"] == 16
    assert info["pooled_width"] == 40 and info["conditioning_shape"] == [17, 80]
    assert sdxl_model.scaling_factor == pytest.approx(0.13025)
    # from_pipeline accepts an SDXL pipeline; to_pipeline gives one back.
    again = DiffusionModel.from_pipeline(sdxl_model.to_pipeline(), name="again", device="cpu", dtype="float32")
    assert (
        again.kind == "sdxl"
        and again.token_widths == WIDTHS
        and again.second_encoder_fingerprint() == sdxl_model.second_encoder_fingerprint()
    )


def test_pack_and_unpack_are_inverse():
    hidden = torch.randn(3, 5, 8, dtype=torch.float64)
    pooled = torch.randn(3, 6, dtype=torch.float64)
    packed = pack_conditioning(hidden, pooled)
    assert packed.shape == (3, 6, 8) and torch.equal(packed[:, -1, 6:], torch.zeros(3, 2, dtype=torch.float64))
    back_hidden, back_pooled = unpack_conditioning(packed, 6)
    assert torch.equal(back_hidden, hidden) and torch.equal(back_pooled, pooled)


def test_tokenizers_of_different_lengths_are_refused(tiny_sdxl_dir):
    pipe = fresh_pipeline(tiny_sdxl_dir, torch.float32)
    pipe.tokenizer_2.model_max_length = 12
    with pytest.raises(NoiseCLRError, match="sequence lengths 16 and 12 differ") as caught:
        DiffusionModel.from_pipeline(pipe, device="cpu", dtype="float32")
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------- conditionings
def test_prompt_and_null_conditionings_equal_the_pipelines_encode_prompt(sdxl64, tiny_sdxl_dir):
    pipe = sdxl64.to_pipeline()
    prompts = ["a red cat", "two dogs on a long sofa in the sun"]
    hidden, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompts, device="cpu", do_classifier_free_guidance=True
    )
    ours = sdxl64.encode_prompts(prompts)
    assert ours.shape == (2, 17, 80)
    ours_hidden, ours_pooled = unpack_conditioning(ours, sdxl64.pooled_width)
    assert torch.equal(ours_hidden, hidden) and torch.equal(ours_pooled, pooled)
    # force_zeros_for_empty_prompt: the pipeline's negative is zeros, and so is our null conditioning.
    null = sdxl64.null_conditioning()
    assert null.shape == (1, 17, 80) and not bool(null.any())
    assert not bool(negative.any()) and not bool(negative_pooled.any())

    # Without it, both use the empty prompt's encoding.
    plain = fresh_pipeline(tiny_sdxl_dir)
    plain.register_to_config(force_zeros_for_empty_prompt=False)
    model = DiffusionModel.from_pipeline(plain, device="cpu", dtype="float64")
    assert not model.force_zeros_for_empty_prompt
    _, negative, _, negative_pooled = plain.encode_prompt(["a red cat"], device="cpu", do_classifier_free_guidance=True)
    null_hidden, null_pooled = unpack_conditioning(model.null_conditioning(), model.pooled_width)
    assert torch.equal(null_hidden, negative) and torch.equal(null_pooled, negative_pooled)
    assert bool(null_hidden.any())


def test_a_direction_is_a_token_pair_seen_as_diffusers_sees_a_textual_inversion_token(sdxl64, tiny_sdxl_dir, tmp_path):
    directions = make_directions(sdxl64, count=2, names=["glasses: yes/no", "smile"])
    ours = sdxl64.encode_directions(directions.vectors.double())
    assert ours.shape == (2, 17, 80)
    # The same pair loaded into diffusers as two tokens (one per encoder) and prompted alone.
    directions.export_diffusers(tmp_path / "ti")
    pipe = fresh_pipeline(tiny_sdxl_dir)
    pipe.load_textual_inversion(
        sorted(map(str, (tmp_path / "ti" / "text_encoder").glob("*.safetensors"))),
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
    )
    pipe.load_textual_inversion(
        sorted(map(str, (tmp_path / "ti" / "text_encoder_2").glob("*.safetensors"))),
        text_encoder=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer_2,
    )
    tokens = [f"<{directions.file_stem(i)}>" for i in range(2)]
    hidden, _, pooled, _ = pipe.encode_prompt(tokens, device="cpu", do_classifier_free_guidance=False)
    theirs = pack_conditioning(hidden, pooled).detach()
    # Equal up to float64 rounding of the (bitwise different) embedding lookups.
    assert float((ours - theirs).abs().max()) < 1e-12 * float(theirs.detach().abs().max())
    # Each half drives its own encoder: changing one half changes only that encoder's columns.
    moved = directions.vectors.double().clone()
    moved[:, :32] += 0.5
    changed = sdxl64.encode_directions(moved)
    hidden_a, pooled_a = unpack_conditioning(ours, 40)
    hidden_b, pooled_b = unpack_conditioning(changed, 40)
    assert not torch.allclose(hidden_a[..., :32], hidden_b[..., :32])
    assert torch.equal(hidden_a[..., 32:], hidden_b[..., 32:]) and torch.equal(pooled_a, pooled_b)


def test_initial_directions_scale_each_half_to_its_encoders_token_norm(sdxl_model):
    rows = discovery.initial_directions(sdxl_model, 5, seed=1)
    assert rows.shape == (5, 80)
    norms = sdxl_model.typical_token_norms()
    first, second = rows.split(WIDTHS, dim=1)
    torch.testing.assert_close(first.norm(dim=1), torch.full((5,), norms[0]))
    torch.testing.assert_close(second.norm(dim=1), torch.full((5,), norms[1]))
    assert sdxl_model.typical_token_norm() == pytest.approx((norms[0] ** 2 + norms[1] ** 2) ** 0.5)


# ------------------------------------------------------------------------------- discovery
def test_gradients_reach_both_halves_of_the_drawn_rows_only(sdxl_model):
    model = sdxl_model
    vectors = torch.nn.Parameter(discovery.initial_directions(model, 5, seed=0))
    latents = random_latents(model, 3, dtype=torch.float32)
    drawn = torch.tensor([3, 0, 1])
    calls: list[tuple[int, bool]] = []
    handle = model.unet.register_forward_hook(
        lambda m, args, out: calls.append((args[0].shape[0], torch.is_grad_enabled()))
    )
    try:
        result = micro_batch_loss(model, vectors, latents, 400, torch.randn_like(latents), drawn)
    finally:
        handle.remove()
    assert calls == [(3, False), (9, True)]  # one null pass, ONE batched call for all pairs
    assert result.features.shape == (3, 3, 4 * 12 * 12)
    result.loss.backward()
    first, second = vectors.grad.split(WIDTHS, dim=1)
    assert (first.abs().sum(dim=1) > 0).tolist() == [True, True, False, True, False]
    assert (second.abs().sum(dim=1) > 0).tolist() == [True, True, False, True, False]
    for module in (model.unet, model.vae, model.text_encoder, model.text_encoder_2):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("variant", ["all-anchors", "single-anchor"])
def test_batched_loss_equals_a_per_direction_reference_in_float64(sdxl64, variant):
    model = sdxl64
    count, batch, timestep = 5, 3, 620
    init = discovery.initial_directions(model, count, seed=2).double()
    latents = random_latents(model, batch, seed=1)
    noise = random_latents(model, batch, seed=2)
    drawn = torch.tensor([4, 2, 0, 1])

    fast_vectors = torch.nn.Parameter(init.clone())
    fast = micro_batch_loss(model, fast_vectors, latents, timestep, noise, drawn, variant=variant, temperature=0.5)
    fast.loss.backward()

    # Reference: each direction encoded alone and each image predicted alone, Eq. 5 with loops.
    ref_vectors = torch.nn.Parameter(init.clone())
    noisy = model.add_noise(latents, noise, timestep)
    with torch.no_grad():
        eps_null = model.predict_eps(noisy, timestep, model.null_conditioning().expand(batch, -1, -1))
    deltas = []
    for k in drawn.tolist():
        conditioning = model.encode_directions(ref_vectors[k : k + 1])
        eps = torch.cat([model.predict_eps(noisy[n : n + 1], timestep, conditioning) for n in range(batch)])
        deltas.append(eps - eps_null)
    reference = reference_loss(torch.stack(deltas), 0.5, variant)
    reference.backward()

    assert fast.loss.dtype == torch.float64
    assert abs(fast.loss.item() - reference.item()) <= 1e-9 * abs(reference.item())
    error = (fast_vectors.grad - ref_vectors.grad).norm() / ref_vectors.grad.norm()
    assert float(error) < 1e-8 and float(ref_vectors.grad.norm()) > 0


def test_discovery_loss_decreases_and_the_file_records_the_pair(sdxl_model, tmp_path):
    settings = DiscoverySettings(
        num_directions=6, batch_size=4, num_negatives=5, micro_batches=1, steps=30, checkpoint_every=0, seed=0
    )
    result = discover(sdxl_model, random_pixels(8), tmp_path / "run", settings, progress=False)
    losses = [row["loss"] for row in result.loss_log]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.2, (first, last)
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert saved["model"]["kind"] == "sdxl" and saved["model"]["token_widths"] == WIDTHS

    from safetensors import safe_open

    with safe_open(str(result.directions_path), "pt") as handle:
        meta = handle.metadata()
    assert meta["model_kind"] == "sdxl" and json.loads(meta["token_widths"]) == WIDTHS and meta["token_width"] == "80"
    assert json.loads(meta["fingerprint"]) == sdxl_model.fingerprint()
    assert json.loads(meta["fingerprint_2"]) == sdxl_model.second_encoder_fingerprint()
    loaded = Directions.load(result.directions_path)
    assert loaded.kind == "sdxl" and loaded.token_widths == WIDTHS
    loaded.check_compatible(sdxl_model)


# --------------------------------------------------------------------------------- editing
@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_zero_scales_return_exactly_the_reconstruction(sdxl_model, method):
    directions = make_directions(sdxl_model)
    terms = [DirectionTerm(directions, 0, 0.0), DirectionTerm(directions, 2, 0.0, 0.2, 0.7)]
    result = edit(sdxl_model, random_pixels(2), terms, EditSettings(steps=4, inversion=method), progress=False)
    assert result.edited.shape == (2, 3, 96, 96)
    assert torch.equal(result.edited_latents, result.reconstruction_latents)
    changed = edit(
        sdxl_model,
        random_pixels(2),
        [DirectionTerm(directions, 1, 3.0)],
        EditSettings(steps=4, inversion=method),
        progress=False,
    )
    assert not torch.allclose(changed.edited_latents, changed.reconstruction_latents)


def test_ddpm_inversion_reconstructs_exactly_in_float64(sdxl64):
    directions = make_directions(sdxl64)
    latents = random_latents(sdxl64, 2)
    inversion = invert(sdxl64, latents, "ddpm", 10, generator=torch.Generator().manual_seed(4), progress=False)
    regenerated = regenerate(sdxl64, inversion, [[DirectionTerm(directions, 0, 0.0)], []], progress=False)
    for variant in regenerated:
        assert float((variant - latents).abs().max()) < 1e-10


def test_text_to_image_matches_diffusers_sdxl_pipeline(sdxl_model):
    from diffusers import DDIMScheduler

    pipe = sdxl_model.to_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(sdxl_model.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts, steps, guidance = ["a red cat", "two dogs"], 6, 5.0
    noise = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(3))
    reference = pipe(
        prompts,
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance,
        eta=0.0,
        output_type="latent",
    ).images
    ours = generate_latents(
        sdxl_model, prompts, [[]], guidance_scale=guidance, steps=steps, noise=noise, progress=False
    )[0]
    assert ours.shape == reference.shape == (2, 4, 12, 12)
    # diffusers steps in float32 (and keeps alpha_bar in float32); ours in float64.
    assert float((ours.float() - reference).abs().max()) < 1e-4 * float(reference.abs().max())


# ------------------------------------------------------------------------------ mismatches
def test_directions_of_the_other_kind_are_refused(sdxl_model, tiny_model, tmp_path):
    sdxl_file = make_directions(sdxl_model).save(tmp_path / "sdxl.safetensors")
    sd_rows = torch.randn(2, tiny_model.token_width)
    sd_file = Directions.for_model(tiny_model, sd_rows).save(tmp_path / "sd.safetensors")
    with pytest.raises(NoiseCLRError, match="an SDXL model .*32\\+48.* Stable Diffusion 1.x/2.x model") as caught:
        edit(
            tiny_model,
            random_pixels(1, size=64),
            [DirectionTerm(Directions.load(sdxl_file), 0, 1.0)],
            EditSettings(steps=2),
            progress=False,
        )
    assert "\n" not in str(caught.value) and "sdxl.safetensors" in str(caught.value)
    with pytest.raises(NoiseCLRError, match="Stable Diffusion 1.x/2.x model .* an SDXL model") as caught:
        Directions.load(sd_file).check_compatible(sdxl_model)
    assert "\n" not in str(caught.value) and "sd.safetensors" in str(caught.value)
    # Same kind and widths, different second text encoder: refused by fingerprint_2.
    other = Directions.load(sdxl_file)
    other.second_fingerprint = dict(
        other.second_fingerprint, sha256="0" * 64, probe=[v + 1.0 for v in other.second_fingerprint["probe"]]
    )
    with pytest.raises(NoiseCLRError, match="second text encoder differs"):
        other.check_compatible(sdxl_model)
