"""Calibrated strength: the response against a direct computation, the unit, files, terms."""

from __future__ import annotations

import pytest
import torch

from noiseclr.directions import Directions
from noiseclr.editing import regenerate
from noiseclr.terms import DirectionTerm, PromptTerm, parse_direction_spec
from noiseclr.errors import NoiseCLRError
from noiseclr.inversion import invert
from noiseclr.model import DiffusionModel
from noiseclr.strength import (
    calibrate,
    calibration_timesteps,
    direction_response,
    noise_response,
    scale_for,
    strength_of,
)
from noiseclr.terms import resolve_strengths


@pytest.fixture()
def model64(tiny_model_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float64")


def some_directions(model: DiffusionModel, count: int = 3, seed: int = 0) -> Directions:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(count, model.token_width, generator=generator)
    return Directions.for_model(model, model.scale_to_token_norms(rows) * torch.tensor([[0.5], [1.0], [2.0]])[:count])


def test_response_matches_a_direct_float64_computation(model64):
    directions = some_directions(model64)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    timesteps = [100, 500, 900]
    fast = noise_response(
        model64, model64.encode_directions(directions.vectors.double()), latents, timesteps, seed=7, rows_per_call=2
    )
    # Direct: every (direction, image, timestep) on its own, the same noise draws.
    generator = torch.Generator().manual_seed(7)
    noises = [torch.randn(latents.shape, generator=generator).double() for _ in timesteps]
    expected = torch.zeros(directions.count, dtype=torch.float64)
    for k in range(directions.count):
        c_k = model64.encode_directions(directions.vectors[k : k + 1].double())
        ratios = []
        for t, noise in zip(timesteps, noises):
            for b in range(latents.shape[0]):
                z = model64.add_noise(latents[b : b + 1], noise[b : b + 1].float(), t).double()
                e0 = model64.predict_eps(z, t, model64.null_conditioning())
                ek = model64.predict_eps(z, t, c_k)
                ratios.append(float((ek - e0).norm() / e0.norm()))
        expected[k] = sum(ratios) / len(ratios)
    assert torch.allclose(fast, expected, rtol=1e-5), (fast, expected)


def test_strength_unit_is_the_relative_noise_change():
    assert scale_for(10.0, 0.02) == pytest.approx(5.0)
    assert strength_of(scale_for(-7.5, 0.3), 0.3) == pytest.approx(-7.5)


def test_a_strength_moves_every_direction_by_the_same_relative_amount(model64):
    directions = some_directions(model64)
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    terms = [DirectionTerm(directions, k, strength=10.0) for k in range(3)]
    resolve_strengths(model64, terms, latents)
    responses = direction_response(model64, directions, latents[:8])
    for term, response in zip(terms, responses):
        # lambda * r = S / 100: the term changes the prediction by 10% of its norm on average.
        assert term.scale * float(response) == pytest.approx(0.10) and term.response == pytest.approx(float(response))
    assert len({round(t.scale, 6) for t in terms}) == 3  # different directions, different scales


def test_stored_calibration_is_used_and_survives_the_file(model64, tmp_path):
    directions = some_directions(model64)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    directions.calibration = calibrate(model64, directions, latents, source="test")
    assert directions.calibration["timesteps"] == calibration_timesteps(model64)
    directions.edit_defaults = [{"strength": -12.0, "start": 0.0, "end": 1.0}] * 3
    path = directions.save(tmp_path / "d.safetensors")
    loaded = Directions.load(path)
    assert loaded.calibration == directions.calibration
    term = parse_direction_spec(f"{path}:2")  # the stored strength, not a scale
    assert term.strength == -12.0 and term.scale is None
    resolve_strengths(
        model64, [term], torch.full((2, 4, 8, 8), float("nan"), dtype=torch.float64)
    )  # not measured again
    assert term.scale == pytest.approx(-0.12 / directions.calibration["response"][2])
    assert parse_direction_spec(f"{path}:2=25%").strength == 25.0
    assert parse_direction_spec(f"{path}:2=3").scale == 3.0
    assert "25%" in parse_direction_spec(f"{path}:2=25%").describe()


def test_strength_terms_edit_like_the_equivalent_scale(model64):
    directions = some_directions(model64)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    inversion = invert(model64, latents, "ddpm", 4, progress=False)
    by_strength = DirectionTerm(directions, 1, strength=20.0)
    prompt = PromptTerm("a cat", strength=-5.0)
    got = regenerate(model64, inversion, [[by_strength, prompt]], progress=False)
    want = regenerate(
        model64,
        inversion,
        [[DirectionTerm(directions, 1, by_strength.scale), PromptTerm("a cat", prompt.scale)]],
        progress=False,
    )
    assert torch.equal(got, want)


def test_a_term_takes_a_scale_or_a_strength(model64):
    directions = some_directions(model64)
    with pytest.raises(NoiseCLRError, match="not both"):
        DirectionTerm(directions, 0, 2.0, strength=5.0)
    with pytest.raises(NoiseCLRError, match="not neither"):
        DirectionTerm(directions, 0)
    with pytest.raises(NoiseCLRError, match="finite"):
        DirectionTerm(directions, 0, strength=float("inf"))


def test_change_similarity_finds_one_axis_twice(model64):
    from noiseclr.strength import change_similarity, duplicate_pairs

    directions = some_directions(model64)
    # Row 2 is a copy of row 0: the same change twice.
    directions.vectors[2] = directions.vectors[0] * 1.0
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    similarity = change_similarity(model64, directions, latents, 500)
    assert similarity.shape == (3, 3) and torch.allclose(similarity.diagonal(), torch.ones(3, dtype=torch.float64))
    assert similarity[0, 2] == pytest.approx(1.0) and abs(float(similarity[0, 1])) < 0.99
    assert duplicate_pairs(similarity, 0.99) == [[0, 2, pytest.approx(1.0)]]
