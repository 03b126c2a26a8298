"""A replica of the published NoiseCLR procedure (gemlab-vt/NoiseCLR ``core/trainer.py`` and
``core/loss.py``), for comparisons: the speed benchmark times our fast path against it, the tests
check both give the same loss and gradients, and ``scripts/compare_loss_variants.py`` checks its
single-anchor variant against it before comparing variants.

It runs on a :class:`noiseclr.model.DiffusionModel` but computes the way the published trainer
does: the directions are extra rows of the token table, every text-encoder call (the null
prompt's too) looks tokens up in it, the null UNet pass is part of the graph, and the text encoder
and UNet run once per drawn direction on all N images.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


@contextlib.contextmanager
def published_training_mode(model: Any, checkpointing: bool):
    """The published config's ``gradient_checkpointing = True``: UNet and text encoder checkpointed (train mode)."""
    unet, text_encoder = model.unet, model.text_encoder
    modes = (unet.training, text_encoder.training)
    unet_was_checkpointing = bool(getattr(unet, "is_gradient_checkpointing", False))
    if checkpointing:
        unet.enable_gradient_checkpointing()
        enable = (
            getattr(text_encoder, "activation_checkpointing_enable", None) or text_encoder.gradient_checkpointing_enable
        )
        enable({"use_reentrant": False})  # first parameter in both the old and the new name
        unet.train()
        text_encoder.train()  # SD's modules have no dropout: train() only switches checkpointing on
    try:
        yield
    finally:
        if checkpointing:
            if not unet_was_checkpointing:
                unet.disable_gradient_checkpointing()
            disable = (
                getattr(text_encoder, "activation_checkpointing_disable", None)
                or text_encoder.gradient_checkpointing_disable
            )
            disable()
            unet.train(modes[0])
            text_encoder.train(modes[1])


def _published_positive_mean(deltas: torch.Tensor, temperature: float) -> torch.Tensor:
    # core/loss.py get_positive_sum / count: pairs n < m of the anchor's N deltas.
    rows = deltas.flatten(start_dim=1)
    rows = rows / (rows.norm(dim=1, keepdim=True) + 1e-20)
    similarity = torch.exp(rows @ rows.T / temperature)
    count = rows.shape[0]
    return similarity.triu(diagonal=1).sum() / (count * (count - 1) // 2)


def _published_negative_sum(anchor: torch.Tensor, other: torch.Tensor, temperature: float) -> torch.Tensor:
    # core/loss.py get_negative_sum: the same image under the anchor and under another direction.
    a = anchor.flatten(start_dim=1)
    b = other.flatten(start_dim=1)
    a = a / (a.norm(dim=1, keepdim=True) + 1e-20)
    b = b / (b.norm(dim=1, keepdim=True) + 1e-20)
    return torch.exp((a * b).sum(dim=1) / temperature).sum()


def reference_micro_batch_loss(
    model: Any,
    vectors: torch.Tensor,
    latents: torch.Tensor,
    timestep: int,
    noise: torch.Tensor,
    drawn: torch.Tensor,
    temperature: float = 0.5,
    checkpointing: bool = False,
    stats: dict[str, float] | None = None,
) -> torch.Tensor:
    """One micro-batch as gemlab-vt/NoiseCLR ``core/trainer.py`` computes it (single anchor = ``drawn[0]``).

    The whole token table is a trainable parameter there: the directions are extra rows and
    every text-encoder call (the null prompt's too) looks tokens up in it, so the null UNet
    pass is part of the graph and the backward runs through it. The text encoder and the UNet
    run once per direction on all N images. Returns ``-log(mean_pos / mean_neg)``. ``stats``
    receives ``delta_over_eps``: |eps(c_anchor) - eps(c_0)| / |eps(c_0)|, which sets how much
    half-precision rounding of eps is amplified in the normalised differences.
    """
    text_encoder = model.text_encoder
    embedding = text_encoder.get_input_embeddings()
    base_rows = embedding.weight.shape[0]
    directions = vectors[drawn.to(vectors.device)]
    table = torch.cat([embedding.weight, directions.to(embedding.weight.dtype)])  # vocab + J rows

    tokenize = dict(padding="max_length", max_length=model.max_length, truncation=True, return_tensors="pt")
    null_ids = model.tokenizer("", **tokenize).input_ids.to(model.device)  # [1, L]: BOS EOS pad...

    def direction_ids(j: int) -> torch.Tensor:
        # What tokenizing the placeholder "<tj>" gives: BOS, the new token, EOS, pad...
        token = torch.tensor([[base_rows + j]], device=model.device)
        return torch.cat([null_ids[:, :1], token, null_ids[:, 1:-1]], dim=1)

    batch = latents.shape[0]
    noisy = model.add_noise(latents, noise, timestep)
    # Look tokens up in the extended table (the published code resizes the table instead).
    embedding.forward = lambda ids: torch.nn.functional.embedding(ids, table)
    try:
        with published_training_mode(model, checkpointing):

            def eps_under(ids: torch.Tensor) -> torch.Tensor:
                hidden = text_encoder(ids)[0].repeat(batch, 1, 1)
                return model.predict_eps(noisy, timestep, hidden)

            eps_null = eps_under(null_ids)  # grad mode on, as published
            anchor = eps_under(direction_ids(0)) - eps_null
            if stats is not None:
                with torch.no_grad():
                    ratio = anchor.flatten(1).norm(dim=1) / eps_null.flatten(1).norm(dim=1).clamp_min(1e-30)
                    stats["delta_over_eps"] = float(ratio.mean())
            positive_mean = _published_positive_mean(anchor, temperature)
            negative_sum, negative_count = 0.0, 0
            for j in range(1, drawn.shape[0]):
                other = eps_under(direction_ids(j)) - eps_null
                negative_sum = negative_sum + _published_negative_sum(anchor, other, temperature)
                negative_count += batch
    finally:
        del embedding.forward
    return -torch.log(positive_mean / (negative_sum / negative_count))
