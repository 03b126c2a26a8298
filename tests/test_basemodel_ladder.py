"""The diagnostic ladder (issue 20): its maths on tiny tensors and the cheap rungs on the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noiseclr.basemodel import ladder as L


def test_masked_psnr_only_counts_the_mask():
    target = np.zeros((4, 4, 3))
    recon = target.copy()
    recon[0, 0] = 0.1  # error outside the mask
    mask = np.zeros((4, 4), bool)
    mask[2:, 2:] = True
    assert L.masked_psnr(recon, target, mask) == pytest.approx(120.0)  # perfect inside (clamped mse)
    recon[3, 3] = 0.1
    assert L.masked_psnr(recon, target, mask) == pytest.approx(10 * np.log10(1 / (0.01 / 4)))
    assert np.isnan(L.masked_psnr(recon, target, np.zeros((4, 4), bool)))


def test_relative_distance_and_projection():
    a = torch.tensor([3.0, 4.0])
    assert L.relative_distance(a, a) == 0.0
    assert L.relative_distance(a, -a) == pytest.approx(2.0)
    true = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    predicted = torch.tensor([[0.5, 7.0], [0.0, 2.0]])  # the orthogonal part does not count
    assert L.projected_response(predicted, true).tolist() == pytest.approx([0.5, 1.0])


def test_predicted_clean_inverts_the_forward_process():
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    a = 0.3
    noisy = a**0.5 * clean + (1 - a) ** 0.5 * noise
    assert torch.allclose(L.predicted_clean(noisy, noise, a), clean, atol=1e-5)


def test_cheap_rungs_on_the_shipped_model():
    from noiseclr.basemodel.quality import load_readers
    from noiseclr.model import DiffusionModel

    model = DiffusionModel.load("embedded", device="cpu", dtype="float32")
    settings = L.LadderSettings(domains=("faces",), vae_images=3, unet_images=1, timesteps=(700,))
    result = L.run_ladder(model, load_readers(), settings, rungs=("vae", "text", "unet"), log=lambda m: None)
    table = L.summary(result)["faces"]
    assert set(table) >= {"mouth", "skin", "background"}
    assert set(table["mouth"]) == {"vae_acc", "vae_psnr", "text_dist", "unet_t700"}
    # The ladder's finding on the step-4 000 weights was that the mouth's captions were nearly one
    # encoding (0.02-0.05); the recipe shipped since 2026-12-07 separates them (0.40 in the docs' ladder).
    assert table["mouth"]["text_dist"] > 0.2
    assert 10 < table["background"]["vae_psnr"] < 60
    text = L.markdown(result)
    assert "| mouth |" in text and "UNet t=700" in text
