"""The random reference: per-factor percentiles, the leave-one-out margin threshold, judging, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from noiseclr.chance import (
    RandomReference,
    ReferenceCache,
    beats_random,
    describe,
    factor_percentiles,
    judge,
    leave_one_out_margins,
    margin_threshold,
    reference_key,
)

NAMES = ("skin", "eyes", "hair", "mouth", "background")
RATES = torch.tensor([0.5, 0.3, 0.1, 0.0, 0.6], dtype=torch.float64)  # how much random directions move each factor


def random_tables(generator: torch.Generator, count: int, images: int = 30) -> torch.Tensor:
    """Change tables [count, F] as random directions give them: binomial fractions with
    direction-to-direction variation of the rate."""
    rates = (RATES * torch.rand(count, len(NAMES), generator=generator, dtype=torch.float64) * 2).clamp(0, 1)
    return torch.binomial(torch.full_like(rates, float(images)), rates, generator=generator) / images


def test_percentiles_and_margins_by_hand():
    table = torch.tensor([[0.1, 0.0], [0.2, 0.5], [0.4, 0.1], [0.3, 0.2]], dtype=torch.float64)
    assert torch.allclose(factor_percentiles(table), torch.tensor(np.quantile(table.numpy(), 0.95, axis=0)))
    loo = leave_one_out_margins(table)
    for r in range(4):
        others = np.delete(table.numpy(), r, axis=0)
        assert abs(float(loo[r]) - float((table[r].numpy() - np.quantile(others, 0.95, axis=0)).max())) < 1e-12
    assert margin_threshold(table) == max(0.0, float(np.quantile(loo.numpy(), 0.95)))


def test_a_fresh_random_direction_beats_random_about_one_time_in_twenty():
    generator = torch.Generator().manual_seed(0)
    wins, trials = 0, 0
    for _ in range(300):
        reference = RandomReference(random_tables(generator, 20), NAMES, 3.0, 30)
        fresh = random_tables(generator, 20)
        wins += int(beats_random(fresh, reference).sum())
        trials += 20
    # A per-factor 95th percentile alone would pass far more: the best of 5 factors is picked.
    assert 0.02 <= wins / trials <= 0.08, wins / trials


def test_real_changes_beat_random_and_random_like_ones_do_not():
    generator = torch.Generator().manual_seed(1)
    reference = RandomReference(random_tables(generator, 20), NAMES, 3.0, 30)
    changes = torch.tensor(
        [
            [0.4, 0.2, 0.05, 0.9, 0.5],  # the mouth, which random never moves
            [0.5, 0.3, 0.1, 0.0, 0.6],  # random's own rates
            [0.3, 0.2, 0.8, 0.0, 0.3],  # hair, which random moves a little
            [1.0, 0.2, 0.0, 0.0, 0.3],
        ],
        dtype=torch.float64,
    )
    rows = judge(changes, reference)
    assert rows[0]["factor"] == "mouth" and rows[0]["beats_random"] and rows[0]["random_p95"] == 0.0
    assert not rows[1]["beats_random"]
    assert rows[2]["factor"] == "hair" and rows[2]["beats_random"]
    # Skin on every image is no evidence: random directions at this strength do nearly as much.
    assert rows[3]["factor"] == "skin" and not rows[3]["beats_random"]
    assert [r["beats_random"] for r in rows] == beats_random(changes, reference).tolist()
    assert describe(rows[0]).startswith("beats random (mouth 0.90 vs 95th of 20 random 0.00")


def test_the_cache_round_trips_and_recomputes_damaged_or_stale_files(tmp_path):
    cache = ReferenceCache(tmp_path / "cache")
    key = reference_key({"model": "abc", "domain": "faces", "strength": 3.0, "seeds": [1, 2]})
    assert key == reference_key({"seeds": [1, 2], "strength": 3.0, "domain": "faces", "model": "abc"})
    table = random_tables(torch.Generator().manual_seed(2), 5)
    calls = []

    def compute():
        calls.append(1)
        return RandomReference(table, NAMES, 3.0, 30)

    first, cached = cache.get_or_compute(key, compute)
    assert not cached and first.key == key and len(calls) == 1
    again, cached = cache.get_or_compute(key, compute)
    assert cached and len(calls) == 1 and torch.allclose(again.changes, table, atol=1e-6)
    cache.path(key).write_text("{not json")
    _, cached = cache.get_or_compute(key, compute)
    assert not cached and len(calls) == 2
    data = json.loads(cache.path(key).read_text())
    data["key"] = "other"
    cache.path(key).write_text(json.dumps(data))
    _, cached = cache.get_or_compute(key, compute)
    assert not cached and len(calls) == 3


def test_a_shipped_folder_is_read_after_the_users_and_never_written(tmp_path):
    key = reference_key({"model": "abc", "domain": "faces", "strength": 3.0, "seeds": [1, 2]})
    table = random_tables(torch.Generator().manual_seed(3), 5)
    shipped = ReferenceCache(tmp_path / "shipped")
    shipped.put(RandomReference(table, NAMES, 3.0, 30, key))
    before = sorted((tmp_path / "shipped").iterdir())
    cache = ReferenceCache(tmp_path / "user", shipped=[tmp_path / "shipped"])
    found, cached = cache.get_or_compute(key, lambda: pytest.fail("the shipped reference should be used"))
    assert cached and torch.allclose(found.changes, table, atol=1e-6)
    other = reference_key({"model": "abc", "domain": "faces", "strength": 2.0, "seeds": [1, 2]})
    cache.get_or_compute(other, lambda: RandomReference(table, NAMES, 2.0, 30))
    assert cache.path(other).is_file() and sorted((tmp_path / "shipped").iterdir()) == before


def test_measuring_a_reference_on_a_split_and_caching_it(tiny_model, tmp_path, monkeypatch):
    from test_bench import BandReader

    from noiseclr import measure
    from noiseclr.chance import model_digest, split_reference
    from noiseclr.measure import EditProtocol, prepare_split
    from noiseclr.world.factors import factor_names

    reader = BandReader("faces")
    protocol = EditProtocol(steps=2, inversion="ddpm")
    split = prepare_split(tiny_model, reader, "faces", "heldout", 4, protocol, progress=False)
    names = factor_names("faces")
    cache = ReferenceCache(tmp_path / "cache")
    reference, cached = split_reference(
        tiny_model, reader, split, names, 4.0, protocol=protocol, cache=cache, count=3, progress=False
    )
    assert not cached and reference.changes.shape == (3, len(names)) and reference.images == 4
    assert torch.equal(reference.changes * 4, (reference.changes * 4).round())  # fractions of 4 images
    renders = []
    monkeypatch.setattr(measure, "render_and_read", lambda *a, **k: renders.append(1))
    again, cached = split_reference(
        tiny_model, reader, split, names, 4.0, protocol=protocol, cache=cache, count=3, progress=False
    )
    assert cached and not renders and torch.allclose(again.changes, reference.changes)
    # Another strength is another reference; so is a retrained UNet.
    digest = model_digest(tiny_model)
    with torch.no_grad():
        parameter = next(tiny_model.unet.parameters())
        original = parameter.clone()
        parameter.add_(1.0)
        assert model_digest(tiny_model) != digest
        parameter.copy_(original)
    assert model_digest(tiny_model) == digest
