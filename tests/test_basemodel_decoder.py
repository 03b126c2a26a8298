"""The VAE decoder fine-tune (issue 20, arm (e)): its loss by hand, resumability, a frozen encoder,
and the folder it writes."""

from __future__ import annotations

import math

import pytest
import torch

from noiseclr.basemodel.decoder import (
    VAE_WEIGHTS,
    DecoderSettings,
    apply_decoder,
    decoder_loss,
    finetune_decoder,
    pixel_weights,
    weighted_psnr,
)
from noiseclr.errors import NoiseCLRError
from noiseclr.fileio import read_safetensors
from noiseclr.model import DiffusionModel


def test_decoder_loss_matches_its_definition_in_float64():
    gen = torch.Generator().manual_seed(0)
    recon, target = (
        torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64),
        torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64),
    )
    maps = torch.rand(2, 5, 6, generator=gen, dtype=torch.float64) * 2
    weights = pixel_weights(maps, 3.0)
    assert torch.allclose(weights[:, 0], (1 + 3 * maps) / 4)
    loss = decoder_loss(recon, target, weights, edge_weight=0.5)
    by_hand = 0.0
    error = recon - target
    for b in range(2):
        for c in range(3):
            for y in range(5):
                for x in range(6):
                    w = float(weights[b, 0, y, x])
                    by_hand += w * (abs(float(error[b, c, y, x])) + float(error[b, c, y, x]) ** 2) / error.numel()
    dx = sum(
        abs(float(error[b, c, y, x + 1] - error[b, c, y, x]))
        * min(float(weights[b, 0, y, x]), float(weights[b, 0, y, x + 1]))
        for b in range(2)
        for c in range(3)
        for y in range(5)
        for x in range(5)
    ) / (2 * 3 * 5 * 5)
    dy = sum(
        abs(float(error[b, c, y + 1, x] - error[b, c, y, x]))
        * min(float(weights[b, 0, y, x]), float(weights[b, 0, y + 1, x]))
        for b in range(2)
        for c in range(3)
        for y in range(4)
        for x in range(6)
    ) / (2 * 3 * 4 * 6)
    assert float(loss) == pytest.approx(by_hand + 0.5 * (dx + dy), rel=1e-12)
    # unit weights, no edges: plain L1 + MSE
    ones = torch.ones_like(weights)
    plain = (recon - target).abs().mean() + (recon - target).square().mean()
    assert torch.allclose(decoder_loss(recon, target, ones, 0.0), plain)
    mse = float(((recon - target) / 2).square().mean())
    assert weighted_psnr(recon, target, ones) == pytest.approx(-10 * math.log10(mse), rel=1e-12)


def tiny_settings(**changes) -> DecoderSettings:
    return DecoderSettings(
        **{"steps": 3, "batch_size": 2, "renders": 36, "checkpoint_every": 1, "log_every": 1, **changes}
    )


def test_fine_tune_resumes_exactly_and_keeps_the_encoder(tiny_model_dir, tmp_path):
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert finetune_decoder(tiny_model_dir, whole, tiny_settings(), log=lambda m: None)
    assert finetune_decoder(tiny_model_dir, pieces, tiny_settings(steps=2), log=lambda m: None)
    (pieces / "vae.safetensors").unlink()  # go on to step 3 from the step-2 checkpoint
    assert finetune_decoder(tiny_model_dir, pieces, tiny_settings(), log=lambda m: None)
    a, meta = read_safetensors(whole / "vae.safetensors", "")
    b, _ = read_safetensors(pieces / "vae.safetensors", "")
    # Resumed = uninterrupted up to float32 rounding (~1e-8: oneDNN's sums depend on alignment), so
    # the fp16 exports agree to within one fp16 step.
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4) for k in a)
    assert '"steps": 3' in meta["decoder_finetune"]
    own, _ = read_safetensors(tiny_model_dir / VAE_WEIGHTS, "")
    frozen = [k for k in own if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in own if k.startswith("decoder.")]
    assert frozen and all(torch.equal(own[k], a[k]) for k in frozen)
    assert any(not torch.equal(own[k], a[k]) for k in trained)

    out = apply_decoder(whole / "vae.safetensors", tiny_model_dir, tmp_path / "model")
    model = DiffusionModel.load(out, device="cpu", dtype="float32")
    before = DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float32")
    latents = torch.randn(1, model.latent_channels, model.latent_size, model.latent_size)
    assert torch.allclose(
        model.encode_images(torch.zeros(1, 3, 64, 64)), before.encode_images(torch.zeros(1, 3, 64, 64)), atol=1e-3
    )
    assert not torch.allclose(model.decode_latents(latents), before.decode_latents(latents))
    with pytest.raises(NoiseCLRError, match="exists"):
        apply_decoder(whole / "vae.safetensors", tiny_model_dir, out)


def test_a_decoder_from_another_encoder_is_refused(tiny_model_dir, tiny_v_model_dir, tmp_path):
    assert finetune_decoder(tiny_v_model_dir, tmp_path / "v", tiny_settings(steps=1), log=lambda m: None)
    with pytest.raises(NoiseCLRError, match="encoder is not"):
        apply_decoder(tmp_path / "v" / "vae.safetensors", tiny_model_dir, tmp_path / "model")
    assert not (tmp_path / "model").exists()
