"""One step of the base model's diffusion stage: the batch it draws and the state it updates.

Lifted out of :meth:`BaseModelTrainer.train_diffusion` so that the loop reads top to bottom. Every
draw comes from the step's own generators, in a fixed order, so a run cut into pieces equals an
uninterrupted one; the checkpoint keys are the ones every earlier work folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_module_tensors, load_optimizer_tensors, module_tensors, optimizer_tensors
from .losses import FactorReadout, share_pair_rows


@dataclass
class DiffusionBatch:
    """What one step trains on: ``n_single`` pool rows, then ``n_pairs`` firsts and their partners."""

    token_ids: torch.Tensor
    """[B, L] the captions, tokenized."""
    clean: torch.Tensor
    """[B, C, h, w] clean latents."""
    timesteps: torch.Tensor
    noise: torch.Tensor
    pool_rows: torch.Tensor
    """[B] the pool render each row comes from (a pair's partner: its first's render)."""
    domains: list[str]
    mentions: list[dict]
    """Per row, the factor values its caption names."""


def batch_split(batch_size: int, paired_fraction: float) -> tuple[int, int]:
    """(single rows, pairs) of a batch: a pair takes two rows."""
    pairs = int(round(batch_size * paired_fraction / 2))
    return batch_size - 2 * pairs, pairs


def draw_diffusion_batch(
    rng: np.random.Generator,
    generator: torch.Generator,
    pool: tuple[torch.Tensor, list[str], list[dict]],
    extras: dict[str, Any],
    tokenizer: Any,
    split: tuple[int, int],
    num_timesteps: int,
) -> DiffusionBatch:
    """Draw captions from ``rng``, then timesteps and noise from ``generator``; pairs share both."""
    from ..world.captions import caption_with_mentions, paired_captions

    latents_pool, domains, labels = pool
    n_single, n_pairs = split
    picks = rng.integers(0, len(latents_pool), size=n_single)
    drawn = [caption_with_mentions(domains[i], labels[i], rng) for i in picks]
    captions = [text for text, _ in drawn]
    mentions = [said for _, said in drawn]
    rows, batch_domains = list(picks), [domains[i] for i in picks]
    partners = torch.empty(0, *latents_pool.shape[1:])
    if n_pairs:
        pair_ids = rng.integers(0, len(extras["pair_index"]), size=n_pairs)
        firsts, seconds = [], []
        for j in pair_ids:
            i = int(extras["pair_index"][j])
            factor, value = extras["pair_changes"][j]
            text_a, text_b, said = paired_captions(domains[i], labels[i], factor, value, rng)
            firsts.append((i, text_a, said))
            seconds.append((i, text_b, {**said, factor: value}))
        for i, text, said in firsts + seconds:
            rows.append(i)
            batch_domains.append(domains[i])
            captions.append(text)
            mentions.append(said)
        partners = extras["pair_latents"][torch.from_numpy(pair_ids)]
    token_ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    pool_rows = torch.tensor(rows, dtype=torch.long)
    clean = latents_pool[pool_rows[: n_single + n_pairs]]
    if n_pairs:
        clean = torch.cat([clean, partners])
    timesteps = torch.randint(0, num_timesteps, (len(rows),), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    if n_pairs:  # a pair shares its noise and timestep: only the named factor differs
        timesteps = share_pair_rows(timesteps, n_single, n_pairs)
        noise = share_pair_rows(noise, n_single, n_pairs)
    return DiffusionBatch(token_ids, clean, timesteps, noise, pool_rows, batch_domains, mentions)


@dataclass
class DiffusionState:
    """UNet and text encoder, their EMA copies and optimizer, and the optional read-out head."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    optimizer: torch.optim.Optimizer
    readout: FactorReadout | None = None
    readout_optimizer: torch.optim.Optimizer | None = None
    ema_unet: list[torch.Tensor] = field(default_factory=list)
    ema_text: list[torch.Tensor] = field(default_factory=list)
    step: int = 0
    warmup_from: int = 0
    """The step the LR warm-up counts from (a warm start's first step)."""

    @classmethod
    def create(cls, unet: torch.nn.Module, text_encoder: torch.nn.Module, lr: float) -> DiffusionState:
        params = list(unet.parameters()) + list(text_encoder.parameters())
        state = cls(unet, text_encoder, torch.optim.AdamW(params, lr=lr, weight_decay=1e-2))
        state.ema_unet = [p.detach().clone() for p in unet.parameters()]
        state.ema_text = [p.detach().clone() for p in text_encoder.parameters()]
        return state

    def add_readout(
        self, lr: float, device: Any, seed: int, tensors: dict[str, torch.Tensor], record: dict[str, Any]
    ) -> None:
        """The read-out head and its optimizer, from the checkpoint where it holds them (a warm start does not)."""
        with torch.random.fork_rng(devices=[]):  # its init from ``seed``, not from the global RNG's state
            torch.manual_seed(seed)
            self.readout = FactorReadout(self.text_encoder.config.hidden_size).to(device).train()
        self.readout_optimizer = torch.optim.AdamW(self.readout.parameters(), lr=lr, weight_decay=1e-2)
        if "readout.linear.weight" in tensors:
            load_module_tensors(self.readout, tensors, "readout")
            if "readout_optimizer" in record:
                load_optimizer_tensors(
                    self.readout_optimizer, tensors, record["readout_optimizer"], prefix="readout_optimizer"
                )

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.unet.parameters()) + list(self.text_encoder.parameters())

    def restore(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`checkpoint` or by a warm start (the read-out: :meth:`add_readout`)."""
        self.warmup_from = int(record.get("warmup_from", 0))
        load_module_tensors(self.unet, tensors, "unet")
        load_module_tensors(self.text_encoder, tensors, "text_encoder")
        for i, p in enumerate(self.ema_unet):
            p.copy_(tensors[f"ema_unet.{i}"])
        for i, p in enumerate(self.ema_text):
            p.copy_(tensors[f"ema_text.{i}"])
        load_optimizer_tensors(self.optimizer, tensors, record["optimizer"])
        self.step = record["step"]

    def apply(self, loss: torch.Tensor, lr: float, ema_decay: float) -> None:
        """One optimizer step on ``loss`` (gradients clipped to norm 1), then the EMA update."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.readout_optimizer is not None:
            self.readout_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        if self.readout_optimizer is not None:
            self.readout_optimizer.step()
        self.step += 1
        decay = min(ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_unet, [p.detach() for p in self.unet.parameters()], 1 - decay)
            torch._foreach_lerp_(self.ema_text, [p.detach() for p in self.text_encoder.parameters()], 1 - decay)

    def checkpoint(self, settings: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, record) for :func:`noiseclr.checkpoint.save_checkpoint`."""
        tensors = {**module_tensors(self.unet, "unet"), **module_tensors(self.text_encoder, "text_encoder")}
        tensors.update({f"ema_unet.{i}": p for i, p in enumerate(self.ema_unet)})
        tensors.update({f"ema_text.{i}": p for i, p in enumerate(self.ema_text)})
        opt_tensors, opt_info = optimizer_tensors(self.optimizer)
        record = {"step": self.step, "warmup_from": self.warmup_from, "optimizer": opt_info, "settings": settings}
        if self.readout is not None:
            tensors.update(module_tensors(self.readout, "readout"))
            readout_tensors, record["readout_optimizer"] = optimizer_tensors(
                self.readout_optimizer, "readout_optimizer"
            )
            opt_tensors.update(readout_tensors)
        return {**tensors, **opt_tensors}, record
