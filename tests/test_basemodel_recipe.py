"""Issue 20's recipe arms: the loss terms on tiny tensors, pool extras and a two-step run of every arm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noiseclr.basemodel import losses as L
from noiseclr.basemodel import training as T
from noiseclr.basemodel.folders import read_training_record
from noiseclr.world.captions import paired_captions
from noiseclr.world.render import labels_for_seed


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pred, noise = torch.randn(4, 4, 2, 2, generator=g), torch.randn(4, 4, 2, 2, generator=g)
    alpha_bar = torch.tensor([0.9, 0.5, 0.1, 0.02]).view(-1, 1, 1, 1)
    return pred, noise, alpha_bar


def _reference_loss(pred, noise, alpha_bar, gamma):
    # The original inline formula of train_diffusion, kept here to pin the default path.
    per_sample = (pred.float() - noise).square().mean(dim=(1, 2, 3))
    snr = (alpha_bar / (1 - alpha_bar)).view(-1)
    return (snr.clamp(max=gamma) / snr * per_sample).mean()


def test_default_loss_is_the_original_formula():
    pred, noise, alpha_bar = _batch()
    assert torch.equal(L.diffusion_loss(pred, noise, alpha_bar, 5.0), _reference_loss(pred, noise, alpha_bar, 5.0))


def test_mask_weighting_with_all_ones_maps_equals_the_plain_loss():
    pred, noise, alpha_bar = _batch()
    weights = L.mask_loss_weights(torch.ones(4, 2, 2), strength=3.0)
    assert weights.shape == (4, 1, 2, 2)
    assert torch.allclose(weights, torch.ones_like(weights))
    assert torch.allclose(
        L.diffusion_loss(pred, noise, alpha_bar, 5.0, weights), L.diffusion_loss(pred, noise, alpha_bar, 5.0)
    )
    # Strength 0 ignores the map; a map concentrated on one cell moves the loss towards that cell's error.
    peaked = torch.zeros(4, 2, 2)
    peaked[:, 0, 0] = 4.0  # mean 1
    assert torch.allclose(L.mask_loss_weights(peaked, 0.0), torch.ones(4, 1, 2, 2))
    w = L.mask_loss_weights(peaked, 1.0)
    assert w.mean() == pytest.approx(1.0) and w[0, 0, 0, 0] == pytest.approx(2.5)


def test_share_pair_rows_copies_each_first_onto_its_partner():
    values = torch.arange(7)
    shared = L.share_pair_rows(values, first=3, pairs=2)
    assert shared.tolist() == [0, 1, 2, 3, 4, 3, 4]
    assert values.tolist() == list(range(7))  # not in place


def test_readout_targets_and_loss_reach_the_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            bos_token_id=0,
            eos_token_id=49,
        )
    )
    readout = L.FactorReadout(16)
    heads = readout.heads
    assert ("faces", "mouth", 3) in heads and ("scenes", "face.mouth", 3) in heads and ("cats", "stripes", 2) in heads
    targets = L.readout_targets(
        ["faces", "cats", "faces"], [{"mouth": "frown", "glasses": "yes"}, {"stripes": "yes"}, {}], heads
    )
    assert targets.shape == (3, len(heads))
    assert targets[0, heads.index(("faces", "mouth", 3))] == 2 and targets[0, heads.index(("faces", "glasses", 2))] == 1
    assert targets[1, heads.index(("cats", "stripes", 2))] == 1
    assert (targets[2] == -1).all() and (targets >= 0).sum() == 3
    ids = torch.randint(0, 50, (3, 8))
    ids[:, -1] = 49
    pooled = encoder(ids)[1]
    logits = readout(pooled)
    assert logits.shape == (3, sum(n for _, _, n in heads))
    loss = L.readout_loss(logits, targets, heads)
    assert loss.ndim == 0 and loss > 0
    loss.backward()
    assert encoder.get_input_embeddings().weight.grad.abs().sum() > 0
    assert readout.linear.weight.grad.abs().sum() > 0
    # Nothing named: zero, still differentiable.
    none = L.readout_loss(logits.detach().requires_grad_(), torch.full_like(targets, -1), heads)
    assert none.item() == 0.0
    none.backward()


def test_paired_captions_differ_only_in_the_changed_value():
    labels = labels_for_seed("faces", 3)
    value = "frown" if labels["mouth"] != "frown" else "smile"
    for seed in range(20):
        first, second, said = paired_captions("faces", labels, "mouth", value, np.random.default_rng(seed))
        assert said["mouth"] == labels["mouth"] and first and second and first != second
        assert set(said) <= set(labels)


def test_every_arm_trains_two_steps_from_a_warm_start(tmp_path):
    from noiseclr.model import embedded_model_path

    trainer = T.BaseModelTrainer(tmp_path / "w", device="cpu", log=lambda m: None)
    settings = T.DiffusionSettings(
        steps=2,
        batch_size=8,
        pool_size=12,
        pool_masks=True,
        pool_pairs=6,
        checkpoint_every=1,
        log_every=1,
        sample_every=0,
        snapshot_every=0,
        mask_weight=1.0,
        text_aux_weight=0.1,
        paired_fraction=0.5,
    )
    start = trainer.warm_start(embedded_model_path(), settings)
    assert trainer.build_pool(settings)
    extras = trainer.load_pool_extras()
    assert extras["weight_maps"].shape == (12, 16, 16)
    assert extras["pair_latents"].shape == (6, 4, 16, 16) and extras["pair_index"].tolist() == list(range(6))
    assert len(extras["pair_changes"]) == 6
    assert torch.allclose(extras["weight_maps"].mean(dim=(1, 2)), torch.ones(12), atol=1e-2)
    settings.steps = start + 2
    assert trainer.train_diffusion(settings)
    tensors, state = T.load_checkpoint(trainer.work / "diffusion" / "checkpoint.safetensors")
    assert state["step"] == start + 2 and "readout.linear.weight" in tensors and "readout_optimizer" in state
    # Resuming with the read-out head goes on from its checkpoint.
    settings.steps = start + 3
    assert trainer.train_diffusion(settings)
    assert read_training_record(trainer.export(tmp_path / "export"))["diffusion_step"] == start + 3


def test_arms_refuse_a_pool_without_their_extras(tmp_path):
    from noiseclr.model import embedded_model_path

    trainer = T.BaseModelTrainer(tmp_path / "w", device="cpu", log=lambda m: None)
    settings = T.DiffusionSettings(steps=1, batch_size=4, pool_size=4, sample_every=0, snapshot_every=0)
    start = trainer.warm_start(embedded_model_path(), settings)
    trainer.build_pool(settings)
    settings.steps = start + 1
    with pytest.raises(RuntimeError, match="pool_masks"):
        trainer.train_diffusion(T.DiffusionSettings(**{**settings.__dict__, "mask_weight": 1.0}))
    with pytest.raises(RuntimeError, match="pool_pairs"):
        trainer.train_diffusion(T.DiffusionSettings(**{**settings.__dict__, "paired_fraction": 0.5}))


def test_a_fresh_readout_head_starts_from_the_seed_not_the_global_rng():
    # Before, its init came from whatever state the global RNG was in: two fresh runs differed.
    from transformers import CLIPTextConfig, CLIPTextModel

    from noiseclr.basemodel.diffusion_step import DiffusionState

    config = CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    heads = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        encoder = CLIPTextModel(config)
        state = DiffusionState.create(torch.nn.Linear(2, 2), encoder, lr=1e-3)
        state.add_readout(1e-3, "cpu", seed=7, tensors={}, record={})
        heads.append(state.readout.linear.weight.detach().clone())
    assert torch.equal(heads[0], heads[1])
    state.add_readout(1e-3, "cpu", seed=8, tensors={}, record={})
    assert not torch.equal(heads[0], state.readout.linear.weight)
