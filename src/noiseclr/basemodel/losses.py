"""The base model's training losses: epsilon MSE (min-SNR, mask-weighted), the text read-out, edges.

Pure tensor functions, so that tests pin each term on tiny tensors; the trainer only sums them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_loss(
    pred: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: torch.Tensor,
    min_snr_gamma: float,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Epsilon MSE with min-SNR weighting; ``pixel_weights`` [B, 1, h, w] (mean 1) reweights cells."""
    error = (pred.float() - noise).square()
    if pixel_weights is not None:
        error = error * pixel_weights
    per_sample = error.mean(dim=(1, 2, 3))
    snr = (alpha_bar / (1 - alpha_bar)).view(-1)
    weight = snr.clamp(max=min_snr_gamma) / snr
    return (weight * per_sample).mean()


def mask_loss_weights(maps: torch.Tensor, strength: float) -> torch.Tensor:
    """Equalized weight maps [B, h, w] (mean 1) -> loss weights [B, 1, h, w] = ``(1 + s E) / (1 + s)``.

    The mean stays 1, so the loss scale (and the LR that suits it) is the plain loss's; s = 0 or an
    all-ones map gives all ones. s = 1 puts half the weight on the factors' pixels, shared equally.
    """
    return ((1.0 + strength * maps) / (1.0 + strength)).unsqueeze(1)


def share_pair_rows(values: torch.Tensor, first: int, pairs: int) -> torch.Tensor:
    """Copy rows ``first .. first+pairs`` onto rows ``first+pairs .. first+2*pairs`` (each pair's partner)."""
    out = values.clone()
    out[first + pairs : first + 2 * pairs] = values[first : first + pairs]
    return out


def readout_heads() -> list[tuple[str, str, int]]:
    """(domain, factor, number of values) of every head of :class:`FactorReadout`, in registry order."""
    from ..world.factors import DOMAINS

    return [(domain, factor.name, len(factor.values)) for domain, factors in DOMAINS.items() for factor in factors]


class FactorReadout(torch.nn.Module):
    """One linear head per (domain, factor) on the text encoder's pooled output (one Linear, sliced).

    Trained beside the text encoder so that the encoding of every caption tells the values it names
    apart; not exported (the shipped text encoder stays a plain ``CLIPTextModel``).
    """

    def __init__(self, width: int):
        super().__init__()
        self.heads = readout_heads()
        self.linear = torch.nn.Linear(width, sum(n for _, _, n in self.heads))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled)


def readout_targets(domains: list[str], mentions: list[dict], heads: list[tuple[str, str, int]]) -> torch.Tensor:
    """[B, heads] value index of every factor the caption names, -1 where it names none."""
    from ..world.factors import get_factor

    targets = torch.full((len(domains), len(heads)), -1, dtype=torch.long)
    for row, (domain, said) in enumerate(zip(domains, mentions)):
        for column, (head_domain, factor, _) in enumerate(heads):
            if head_domain == domain and factor in said:
                targets[row, column] = get_factor(domain, factor).index(said[factor])
    return targets


def readout_loss(logits: torch.Tensor, targets: torch.Tensor, heads: list[tuple[str, str, int]]) -> torch.Tensor:
    """Mean cross-entropy over every (caption, named factor); 0 (with a graph) when nothing is named."""
    total = logits.sum() * 0.0
    count = 0
    start = 0
    for column, (_, _, size) in enumerate(heads):
        rows = targets[:, column] >= 0
        if rows.any():
            total = total + F.cross_entropy(logits[rows, start : start + size], targets[rows, column], reduction="sum")
            count += int(rows.sum())
        start += size
    return total / max(count, 1)


def edge_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences: penalises blurred edges."""
    dx = F.l1_loss(recon[..., :, 1:] - recon[..., :, :-1], target[..., :, 1:] - target[..., :, :-1])
    dy = F.l1_loss(recon[..., 1:, :] - recon[..., :-1, :], target[..., 1:, :] - target[..., :-1, :])
    return dx + dy
