"""Base-model quality measurements run end to end on a tiny 128-px pipeline (numbers meaningless, plumbing real)."""

from __future__ import annotations

import pytest
import torch

from noiseclr.architecture import build_pipeline, load_clip_tokenizer, tiny_spec
from noiseclr.model import DiffusionModel
from noiseclr.basemodel import quality
from noiseclr.world.factors import domain_factors
from noiseclr.world.tokenizer import build_world_tokenizer


@pytest.fixture(scope="module")
def world_tiny_model(tmp_path_factory) -> DiffusionModel:
    folder = tmp_path_factory.mktemp("world-tiny")
    tokenizer = load_clip_tokenizer(build_world_tokenizer(folder / "tokenizer"))
    spec = tiny_spec(text_width=32, max_length=tokenizer.model_max_length).with_changes(
        text_encoder={"vocab_size": len(tokenizer)}, unet={"sample_size": 16}, vae={"sample_size": 128}
    )
    pipe = build_pipeline(spec, tokenizer, seed=0)
    return DiffusionModel.from_pipeline(pipe, name="world-tiny", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def readers():
    return quality.load_readers()


SMALL = quality.QualitySettings(
    reader_images=20, vae_images=4, samples_per_value=1, unconditional_samples=6, inversion_images=2, steps=2, batch=64
)


def test_readers_and_vae_report_every_factor(world_tiny_model, readers):
    for result in (quality.evaluate_readers(readers, SMALL), quality.evaluate_vae(world_tiny_model, readers, SMALL)):
        assert set(result) == {"faces", "cats", "scenes"}
        for domain, factors in result.items():
            assert list(factors) == [f.name for f in domain_factors(domain)]
            assert all(0.0 <= v <= 1.0 for v in factors.values())
    # The shipped readers read clean renders perfectly.
    assert min(min(f.values()) for f in quality.evaluate_readers(readers, SMALL).values()) == 1.0


def test_text_conditioning_rates(world_tiny_model, readers):
    result = quality.evaluate_text_conditioning(world_tiny_model, readers, SMALL, domains=("cats",))
    factors = result["per_factor"]["cats"]
    assert set(factors) == {f.name for f in domain_factors("cats")}
    assert set(result["per_value"]["cats"]["fur_color"]) == set(domain_factors("cats")[0].values)
    assert result["overall"] == pytest.approx(sum(factors.values()) / len(factors))


def test_unconditional_and_inversion(world_tiny_model, readers):
    classify = lambda pixels: torch.arange(len(pixels)) % 3  # noqa: E731 - a fixed domain split is enough here
    result = quality.evaluate_unconditional(world_tiny_model, readers, classify, SMALL)
    assert sum(result["domain_counts"].values()) == SMALL.unconditional_samples
    assert 0.0 < result["values_covered"] <= 1.0
    inversion = quality.evaluate_inversion(world_tiny_model, readers, SMALL)
    assert set(inversion) == {"faces", "cats", "scenes"}


def test_discovery_step_timing(world_tiny_model):
    timing = quality.time_discovery_step(world_tiny_model, images=2, directions=3, repeats=1)
    assert timing["median_seconds"] > 0 and timing["images"] == 2


def test_controllability_probe_reports_every_value(world_tiny_model, readers):
    settings = quality.ProbeSettings(images=3, steps=2, scales=(1.0, 3.0), domains=("cats",))
    probe = quality.controllability_probe(world_tiny_model, readers, settings)
    cats = probe["domains"]["cats"]
    assert set(cats["per_factor"]) == {f.name for f in domain_factors("cats")}
    for factor in domain_factors("cats"):
        for value in factor.values:
            entry = cats["per_value"][factor.name][value]
            assert entry["caption"] and 0 <= entry["images"] <= 3
            if entry["images"]:
                assert set(entry["scales"]) == {"1", "3"} and entry["best_scale"] in (1.0, 3.0)
                assert 0.0 <= entry["reached"] <= 1.0 and 0.0 <= entry["others"] <= 1.0
    assert probe["score"] == pytest.approx(cats["reached"])
