"""Sampler math and real-image inversion (DDIM and edit-friendly DDPM)."""

from __future__ import annotations

import math

import pytest
import torch

from noiseclr.editing import regenerate
from noiseclr.errors import NoiseCLRError
from noiseclr.inversion import (
    ddim_step,
    ddpm_noise,
    ddpm_sigma,
    ddpm_step,
    invert,
    make_schedule,
    predict_x0,
)
from noiseclr.model import DiffusionModel


@pytest.fixture(scope="module")
def model64(tiny_model_dir) -> DiffusionModel:
    """The tiny epsilon model run in float64: the reference precision for exactness checks."""
    return DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float64")


def random_latents(model: DiffusionModel, batch: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, model.latent_channels, model.latent_size, model.latent_size)
    return torch.randn(shape, generator=generator, dtype=dtype)


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return float((estimate - reference.to(estimate)).norm() / reference.norm())


# ----------------------------------------------------------------------------- sampler math
def ddim_scheduler(model: DiffusionModel, steps: int):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(steps)
    return scheduler


def test_ddim_step_matches_diffusers_ddim_scheduler(tiny_model):
    steps = 10
    scheduler = ddim_scheduler(tiny_model, steps)
    schedule = make_schedule(tiny_model, steps)
    assert torch.equal(schedule.timesteps, scheduler.timesteps.long())
    generator = torch.Generator().manual_seed(1)
    for step in (0, 4, steps - 1):  # first, middle, and the last (lands on final_alpha_cumprod)
        latents = torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64)
        eps = torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64)
        reference = scheduler.step(eps, schedule.timesteps[step], latents, eta=0.0).prev_sample
        ours = ddim_step(latents, eps, *schedule.levels(step))
        assert ours.dtype == torch.float64
        assert torch.allclose(ours, reference.to(torch.float64), atol=1e-6, rtol=0)


def test_ddpm_step_matches_diffusers_with_eta_one(tiny_model):
    steps = 10
    scheduler = ddim_scheduler(tiny_model, steps)
    schedule = make_schedule(tiny_model, steps)
    generator = torch.Generator().manual_seed(2)
    for step in (0, 5, steps - 1):
        latents, eps, noise = (torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
        reference = scheduler.step(eps, schedule.timesteps[step], latents, eta=1.0, variance_noise=noise).prev_sample
        ours = ddpm_step(latents, eps, *schedule.levels(step), noise, eta=1.0)
        assert torch.allclose(ours, reference.to(torch.float64), atol=1e-6, rtol=0)
    # The last step goes to final_alpha_cumprod < 1, so it is still stochastic: sigma > 0.
    assert ddpm_sigma(*schedule.levels(steps - 1)) > 0


def test_ddim_step_runs_backwards_and_ddpm_noise_solves_the_step():
    generator = torch.Generator().manual_seed(3)
    latents, eps, target = (torch.randn(3, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    noisy, clean = 0.2, 0.9
    # Same eps forwards then backwards: the identity.
    there = ddim_step(latents, eps, noisy, clean)
    assert torch.allclose(ddim_step(there, eps, clean, noisy), latents, atol=1e-12, rtol=0)
    # x0 prediction is consistent with the forward process.
    x0 = predict_x0(latents, eps, noisy)
    assert torch.allclose(math.sqrt(noisy) * x0 + math.sqrt(1 - noisy) * eps, latents, atol=1e-12, rtol=0)
    # The solved noise reaches the target exactly.
    noise = ddpm_noise(latents, eps, target, noisy, clean)
    assert torch.allclose(ddpm_step(latents, eps, noisy, clean, noise), target, atol=1e-12, rtol=0)


def test_schedule_levels_and_step_checks(tiny_model):
    schedule = make_schedule(tiny_model, 50)
    assert schedule.steps == 50 and schedule.alpha_bars.dtype == torch.float64
    assert bool((schedule.timesteps[:-1] > schedule.timesteps[1:]).all())
    assert bool((schedule.alpha_bars[:-1] < schedule.alpha_bars[1:]).all())  # noise falls step by step
    assert float(schedule.alpha_bars[-1]) == tiny_model.final_alpha_cumprod < 1.0
    for bad in (0, -3, 5000):
        with pytest.raises(NoiseCLRError, match="--steps"):
            make_schedule(tiny_model, bad)
    # diffusers' "leading" spacing with steps_offset=1 would ask for timestep 1000 at 1000 steps.
    with pytest.raises(NoiseCLRError, match="--steps 1000"):
        make_schedule(tiny_model, 1000)
    with pytest.raises(NoiseCLRError, match="--inversion"):
        invert(tiny_model, torch.zeros(1, 4, 8, 8), method="null-text", steps=5, progress=False)


# ------------------------------------------------------------------------------ DDIM inversion
def fixed_eps_predictor(model: DiffusionModel):
    """A stub eps(x, t, c) that depends on t and c only: DDIM inversion is then exactly invertible."""
    pattern = torch.randn(
        model.latent_channels, model.latent_size, model.latent_size, generator=torch.Generator().manual_seed(9)
    )

    def predict_eps(latents, timesteps, conditioning):
        t = torch.as_tensor(timesteps).to(latents.dtype).reshape(-1, 1, 1, 1).expand(latents.shape[0], 1, 1, 1)
        c = conditioning.to(latents.dtype).mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return torch.sin(pattern.to(latents) * (1 + t / 100)) + c

    return predict_eps


def test_ddim_inversion_matches_diffusers_ddim_inverse_scheduler(model64):
    from diffusers import DDIMInverseScheduler

    steps = 10
    scheduler = DDIMInverseScheduler.from_config(model64.scheduler.config)
    scheduler.set_timesteps(steps)
    latents = random_latents(model64, 2)
    reference = latents.clone()
    null = model64.null_conditioning().expand(2, -1, -1)
    for t in scheduler.timesteps:
        eps = model64.predict_eps(reference, t, null)
        reference = scheduler.step(eps, t, reference).prev_sample.to(torch.float64)
    ours = invert(model64, latents, "ddim", steps, progress=False).start_latents
    assert torch.equal(make_schedule(model64, steps).timesteps.flip(0), scheduler.timesteps.long())
    # diffusers keeps alpha_bar in float32: agreement to float32 precision, not bitwise.
    assert relative_error(ours, reference) < 1e-5


def test_ddim_inversion_is_exact_when_eps_ignores_the_latents(model64, monkeypatch):
    monkeypatch.setattr(model64, "predict_eps", fixed_eps_predictor(model64))
    latents = random_latents(model64, 2)
    inversion = invert(model64, latents, "ddim", 50, progress=False)
    assert inversion.method == "ddim" and inversion.noise_maps is None
    reconstruction = regenerate(model64, inversion, [[]], progress=False)[0]
    assert (reconstruction - latents).abs().max() < 1e-10
    # And the inverted latents are noise-like: far from the input.
    assert relative_error(inversion.start_latents, latents) > 0.5


# Measured on 2026-11-24 (2-core CPU, torch 2.13 CPU, diffusers 0.42) with this test's setup:
# tiny random epsilon UNet in float64, two N(0, 1) float64 latents drawn from seed 0,
# relative L2 error ||regenerate(invert(x)) - x|| / ||x|| of DDIM inversion + DDIM regeneration:
#     10 steps: 1.0005     50 steps: 0.7097     200 steps: 0.2725
# (python -m pytest tests/test_inversion.py -k ddim_reconstruction_error -s prints them).
# A random UNet's eps changes a lot with its input, so DDIM inversion's approximation
# eps(x_{t-1}, t) ~ eps(x_t, t) is poor here; it is exact when eps ignores x (test above).
# The bounds add ~13-17% headroom to the measurement; the error must fall as steps get finer.
DDIM_RELATIVE_ERROR_50_STEPS = 0.80
DDIM_RELATIVE_ERROR_200_STEPS = 0.32


def test_ddim_reconstruction_error_on_tiny_model_shrinks_with_steps(model64):
    latents = random_latents(model64, 2)
    errors = {}
    for steps in (10, 50, 200):
        inversion = invert(model64, latents, "ddim", steps, progress=False)
        reconstruction = regenerate(model64, inversion, [[]], progress=False)[0]
        errors[steps] = relative_error(reconstruction, latents)
    print("DDIM relative reconstruction error (float64 tiny UNet):", {k: round(v, 4) for k, v in errors.items()})
    assert errors[50] < DDIM_RELATIVE_ERROR_50_STEPS
    assert errors[200] < errors[50] < errors[10]
    assert errors[200] < DDIM_RELATIVE_ERROR_200_STEPS


# ------------------------------------------------------------------------------ DDPM inversion
def test_ddpm_inversion_reconstructs_exactly_in_float64(model64):
    latents = random_latents(model64, 3)
    inversion = invert(model64, latents, "ddpm", 50, generator=torch.Generator().manual_seed(4), progress=False)
    assert inversion.noise_maps.shape == (50, *latents.shape) and inversion.eta == 1.0
    reconstruction = regenerate(model64, inversion, [[]], progress=False)[0]
    assert float((reconstruction - latents).abs().max()) < 1e-10
    assert bool(torch.isfinite(inversion.noise_maps).all())
    # The start latents are the independent draw at the noisiest level, not the input.
    level = float(inversion.schedule.alpha_bars[0])
    assert relative_error(inversion.start_latents / math.sqrt(1 - level), latents) > 0.5


def test_ddpm_inversion_reconstructs_float32_and_v_prediction(any_tiny_model):
    latents = random_latents(any_tiny_model, 2, dtype=torch.float32)
    inversion = invert(any_tiny_model, latents, "ddpm", 20, progress=False)
    reconstruction = regenerate(any_tiny_model, inversion, [[]], progress=False)[0]
    assert float((reconstruction - latents).abs().max()) < 1e-5


def test_ddpm_inversion_is_seeded_and_chunking_does_not_change_it(model64):
    latents = random_latents(model64, 2)

    def run(seed, max_batch=None):
        return invert(
            model64,
            latents,
            "ddpm",
            8,
            generator=torch.Generator().manual_seed(seed),
            max_batch=max_batch,
            progress=False,
        )

    first, again, other, chunked = run(5), run(5), run(6), run(5, max_batch=3)
    assert torch.equal(first.noise_maps, again.noise_maps)
    assert not torch.allclose(first.noise_maps, other.noise_maps)
    assert torch.allclose(first.noise_maps, chunked.noise_maps, atol=1e-10, rtol=0)


def test_ddpm_inversion_batches_the_independent_predictions(model64):
    latents = random_latents(model64, 2)
    calls = []
    handle = model64.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        invert(model64, latents, "ddpm", 6, max_batch=5, progress=False)
    finally:
        handle.remove()
    assert calls == [5, 5, 2]  # 6 steps x 2 images = 12 rows, 5 per call


def test_predict_eps_rows_chunks_like_one_call(model64):
    latents = random_latents(model64, 5)
    conditioning = model64.null_conditioning().expand(5, -1, -1)
    timesteps = torch.tensor([1, 101, 301, 601, 901])
    whole = model64.predict_eps_rows(latents, timesteps, conditioning)
    parts = model64.predict_eps_rows(latents, timesteps, conditioning, max_batch=2)
    assert whole.dtype == torch.float64
    assert torch.allclose(whole, parts, atol=1e-12, rtol=0)


def test_inversion_select_keeps_images_and_noise(model64):
    latents = random_latents(model64, 3)
    inversion = invert(model64, latents, "ddpm", 4, progress=False)
    picked = inversion.select([2, 0])
    assert picked.batch == 2 and picked.steps == 4
    assert torch.equal(picked.start_latents[0], inversion.start_latents[2])
    assert torch.equal(picked.noise_maps[:, 1], inversion.noise_maps[:, 0])
    assert torch.equal(
        regenerate(model64, picked, [[]], progress=False)[0],
        regenerate(model64, inversion, [[]], image_indices=[2, 0], progress=False)[0],
    )
