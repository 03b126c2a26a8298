"""Factor readers: shipped weights load offline and read fresh renders; formats, metadata, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noiseclr.errors import NoiseCLRError
from noiseclr.world import factors as F
from noiseclr.basemodel import reader_training as T
from noiseclr.world import readers as R
from noiseclr.world import render_many

DOMAINS = list(F.DOMAINS)
SAMPLE = 100
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped() -> dict[str, R.FactorReader]:
    return {domain: R.FactorReader.load(domain) for domain in DOMAINS}


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[np.ndarray, list[dict]]]:
    # Seeds far into the evaluation range: not the first 2000 the docs' numbers come from.
    return {domain: R.eval_renders(domain, SAMPLE, start=50_000) for domain in DOMAINS}


# ------------------------------------------------------------------------------------ shipped readers
@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_reader_reads_fresh_renders(shipped, samples, domain):
    images, labels = samples[domain]
    accuracy = R.reader_accuracy(shipped[domain], images, labels)
    assert list(accuracy) == F.factor_names(domain)
    low = {name: value for name, value in accuracy.items() if value < 0.95}
    assert not low, f"{domain}: factors below 95% on {SAMPLE} fresh renders: {low}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_reader_reads_blurred_renders(shipped, samples, domain):
    images, labels = samples[domain]
    blurred = T.gaussian_blur(R.to_reader_input(images), 1.0)
    accuracy = R.reader_accuracy(shipped[domain], blurred, labels)
    low = {name: value for name, value in accuracy.items() if value < 0.93}
    assert not low, f"{domain}: factors below 93% on blurred renders: {low}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_weights_are_small_fp16_with_metadata(shipped, domain):
    path = R.default_reader_path(domain)
    assert path.stat().st_size <= 1_100_000
    reader = shipped[domain]
    assert T.parameter_count(reader) <= 500_000
    meta = reader.metadata
    assert meta["domain"] == domain
    assert json.loads(meta["factors"]) == [[f.name, list(f.values)] for f in F.domain_factors(domain)]
    assert R.ReaderConfig.from_json(meta["config"]) == reader.net.config
    assert meta["command"].startswith("python scripts/train_readers.py")
    assert len(meta["date"]) == 10 and meta["date"][4] == "-"
    evaluation = json.loads(meta["eval"])
    assert evaluation["images"] >= 2000 and min(evaluation["clean"].values()) >= 0.98
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        dtypes = {handle.get_tensor(key).dtype for key in handle.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes


def test_input_formats_give_the_same_predictions(shipped, samples):
    reader = shipped["faces"]
    images, _ = samples["faces"]
    images = images[:12]
    expected = reader.predict_indices(images)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pil = [Image.fromarray(image) for image in images]
    assert torch.equal(reader.predict_indices(tensor), expected)
    assert torch.equal(reader.predict_indices(pil), expected)
    assert torch.equal(reader.predict_indices(torch.from_numpy(images)), expected)
    assert torch.equal(reader.predict_indices(pil[0]), expected[:1])
    assert torch.equal(reader.predict_indices(images[0]), expected[:1])
    assert torch.equal(reader.predict_indices(tensor[0]), expected[:1])
    assert torch.allclose(reader.predict_logits(tensor)[0], reader.predict_logits(images)[0], atol=1e-5)


@pytest.mark.parametrize("domain", DOMAINS)
def test_predictions_are_valid_values(shipped, samples, domain):
    reader = shipped[domain]
    images, _ = samples[domain]
    images = images[:8]
    labels = reader.predict_labels(images)
    assert len(labels) == 8
    for item in labels:
        assert F.check_labels(domain, item) == item
    indices = reader.predict_indices(images)
    assert indices.dtype == torch.long and indices.shape == (8, len(F.factor_names(domain)))
    assert [F.encode_labels(domain, item) for item in labels] == indices.tolist()
    probs = reader.predict_probs(images)
    assert list(probs) == F.factor_names(domain)
    for factor in F.domain_factors(domain):
        assert probs[factor.name].shape == (8, len(factor.values))
        assert torch.allclose(probs[factor.name].sum(dim=1), torch.ones(8), atol=1e-5)


# ------------------------------------------------------------------------------------ metadata errors
def test_changed_factor_registry_is_refused(monkeypatch):
    cats = list(F.DOMAINS["cats"])
    cats[0] = F.Factor(cats[0].name, (*cats[0].values, "black"), cats[0].description)
    monkeypatch.setitem(F.DOMAINS, "cats", tuple(cats))
    with pytest.raises(
        NoiseCLRError, match=r"reader for cats .* was trained for other factors; re-run scripts/train_readers.py"
    ):
        R.FactorReader.load("cats")


def _rewrite(source: Path, target: Path, **changes: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    metadata.update(changes)
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_bad_reader_files_are_clear_errors(tmp_path):
    shipped_cats = R.default_reader_path("cats")
    renamed = _rewrite(shipped_cats, tmp_path / "renamed.safetensors", factors=json.dumps([["fur", ["a", "b"]]]))
    with pytest.raises(NoiseCLRError, match="was trained for other factors"):
        R.FactorReader.load("cats", renamed)
    with pytest.raises(NoiseCLRError, match="holds the reader for 'cats'"):
        R.FactorReader.load("faces", shipped_cats)
    with pytest.raises(NoiseCLRError, match="no weights at"):
        R.FactorReader.load("cats", tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(NoiseCLRError, match="not a readable safetensors file"):
        R.FactorReader.load("cats", tmp_path / "junk.safetensors")
    other = _rewrite(shipped_cats, tmp_path / "other.safetensors", format="something-else")
    with pytest.raises(NoiseCLRError, match="not a factor reader file"):
        R.FactorReader.load("cats", other)
    wider = _rewrite(
        shipped_cats,
        tmp_path / "wider.safetensors",
        config=json.dumps({**json.loads(R.ReaderConfig().to_json()), "hidden": 7}),
    )
    with pytest.raises(NoiseCLRError, match="does not match its architecture"):
        R.FactorReader.load("cats", wider)
    with pytest.raises(NoiseCLRError, match="unknown"):
        R.FactorReader.load("dogs")


def test_bad_images_are_clear_errors(shipped):
    reader = shipped["cats"]
    with pytest.raises(NoiseCLRError, match="must be 128x128"):
        reader.predict_indices(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(NoiseCLRError, match="numpy images must be uint8"):
        reader.predict_indices(np.zeros((2, 128, 128, 3), dtype=np.float32))
    with pytest.raises(NoiseCLRError, match=r"float images must be \[N,3,H,W\]"):
        reader.predict_indices(torch.zeros(2, 128, 128, 3))
    with pytest.raises(NoiseCLRError, match="empty list"):
        reader.predict_indices([])


# ------------------------------------------------------------------------------------ pieces
def test_gaussian_blur_matches_float64_reference():
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.random((2, 3, 20, 20))).float()
    sigmas = torch.tensor([0.7, 1.2])
    fast = T.gaussian_blur(pixels, sigmas).double().numpy()
    for n, sigma in enumerate(sigmas.tolist()):
        radius = int(np.ceil(3.0 * 1.2))
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
        kernel /= kernel.sum()
        padded = np.pad(pixels[n].double().numpy(), ((0, 0), (radius, radius), (radius, radius)), mode="reflect")
        reference = np.zeros((3, 20, 20))
        for dy, wy in zip(offsets, kernel):
            for dx, wx in zip(offsets, kernel):
                reference += wy * wx * padded[:, radius + dy : radius + dy + 20, radius + dx : radius + dx + 20]
        np.testing.assert_allclose(fast[n], reference, atol=1e-5)
    # sigma 0 leaves images unchanged
    assert torch.allclose(T.gaussian_blur(pixels, 0.0), pixels, atol=1e-6)


def test_augmentation_is_deterministic_and_mild(samples):
    images, _ = samples["scenes"]
    pixels = R.to_reader_input(images[:6])
    first = T.augment_for_reading(pixels, np.random.default_rng(3))
    second = T.augment_for_reading(pixels, np.random.default_rng(3))
    assert torch.equal(first, second)
    assert first.shape == pixels.shape and first.min() >= -1.0 and first.max() <= 1.0
    # No hue jitter: each image's mean colour stays close to the original's.
    mean_shift = (first.mean(dim=(2, 3)) - pixels.mean(dim=(2, 3))).abs().max()
    assert mean_shift < 0.15


def test_seed_ranges_are_disjoint_and_below_the_base_model_range():
    from noiseclr.basemodel.training import TRAIN_SEED_BASE

    assert R.BASE_MODEL_SEED_BASE == TRAIN_SEED_BASE
    assert R.READER_TRAIN_SEED_BASE + 50_000_000 <= R.READER_VAL_SEED_BASE < R.EVAL_SEED_BASE < TRAIN_SEED_BASE
    with pytest.raises(NoiseCLRError, match="evaluation range"):
        R.eval_renders("faces", 10, start=TRAIN_SEED_BASE)


def test_train_save_load_round_trip(tmp_path):
    settings = T.ReaderTrainSettings(
        steps=3,
        batch_size=8,
        train_images=16,
        val_images=8,
        log_every=1,
        val_every=0,
        config=R.ReaderConfig(stem_channels=8, stage_channels=(8, 8, 8, 8), hidden=16),
    )
    result = T.train_reader("cats", settings, progress=False)
    assert set(result.val_accuracy) == set(F.factor_names("cats")) and len(result.history) == 3
    path = result.reader.save(tmp_path / "cats.safetensors", {"command": "test", "date": "2026-11-24"})
    loaded = R.FactorReader.load("cats", path)
    assert loaded.net.config == settings.config and loaded.metadata["command"] == "test"
    images, _ = R.eval_renders("cats", 4)
    # fp16 storage: logits agree to fp16 precision.
    for a, b in zip(result.reader.predict_logits(images), loaded.predict_logits(images)):
        assert torch.allclose(a, b, atol=2e-2)


def test_train_script_bad_flag_exits_2(tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_readers.py"), "--steps", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == "error: --steps 0: must be at least 1."


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_forced_value_is_read_back(shipped, domain):
    # One seed, each value of each factor forced in turn: the edit the benchmark will measure.
    requests = [{factor.name: value} for factor in F.domain_factors(domain) for value in factor.values]
    images, labels = render_many(domain, [R.EVAL_SEED_BASE + 77_777] * len(requests), requests)
    assert shipped[domain].predict_labels(images) == labels
