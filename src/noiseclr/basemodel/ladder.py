"""The diagnostic ladder: per factor value, where on the way from pixels to edits a factor is lost.

Rungs, cheapest first (each a function; :func:`run_ladder` runs them all):

1. ``vae``: readers on encode -> decode round trips (per true value) and the PSNR inside the
   factor's own pixels (:func:`noiseclr.world.masks.factor_masks`) -- can the latent hold it?
2. ``text``: relative distance of the text encoder's outputs (the full ``[L, W]`` sequence the
   UNet cross-attends to) between captions naming one value and each other value of the factor --
   does the conditioning tell the values apart?
3. ``unet``: noise a real latent at ``t``, predict the clean latent under its full caption and
   under the caption with one value swapped; project the change on the true counterfactual
   latent difference (same seed rendered with the swapped value): 1 = the UNet moves all the way,
   0 = it ignores the words (:func:`counterfactual_response`);
4. ``generation``: readers on samples of ``caption_for_value`` (:func:`quality.evaluate_text_conditioning`);
5. ``probe``: the edit probe (:func:`quality.controllability_probe`).

A factor that passes rung k and fails rung k+1 is lost between them. All renders come from the
evaluation seed range (offset ``ladder``), so the ladder never sees a training image.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..model import DiffusionModel
from ..world.captions import describe
from ..world.factors import domain_factors, encode_labels
from ..world.masks import factor_masks
from ..world.readers import FactorReader, to_reader_input
from ..world.render import render_many
from ..world.seeds import EVAL_OFFSETS, EVAL_SEED_BASE
from . import quality

# Past every offset in EVAL_OFFSETS' small-number block (0..400 000), below the benchmark's 10 M roles.
LADDER_OFFSET = 500_000
if LADDER_OFFSET in EVAL_OFFSETS.values():  # pragma: no cover - a guard for whoever adds offsets
    raise AssertionError("ladder offset collides with another evaluation's")


@dataclass
class LadderSettings:
    domains: tuple[str, ...] = ("faces", "cats")
    vae_images: int = 48
    """Renders per domain through the VAE (the masks cost ~20 renders each)."""
    unet_images: int = 8
    """Renders per domain for the caption-swap response (each tried with every other value)."""
    timesteps: tuple[int, ...] = (300, 500, 700)
    samples_per_value: int = 4
    """Generation from a caption: samples per value."""
    generation_steps: int = 20
    probe: quality.ProbeSettings = field(
        default_factory=lambda: quality.ProbeSettings(images=8, steps=10, scales=(2.0, 4.0))
    )
    seed: int = 0


def ladder_renders(domain: str, count: int, start: int = 0) -> tuple[list[int], np.ndarray, list[dict]]:
    seeds = list(range(EVAL_SEED_BASE + LADDER_OFFSET + start, EVAL_SEED_BASE + LADDER_OFFSET + start + count))
    images, labels = render_many(domain, seeds)
    return seeds, images, labels


# ------------------------------------------------------------------------------------ maths
def masked_psnr(recon: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, images in [0, 1] or uint8 scaled to it) over the pixels where ``mask`` is true; nan if empty."""
    if not mask.any():
        return float("nan")
    diff = (np.asarray(recon, dtype=np.float64) - np.asarray(target, dtype=np.float64))[mask]
    mse = float(np.mean(diff**2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / mean(|a|, |b|)`` over all elements: 0 = identical, ~1.4 = unrelated (orthogonal)."""
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / (0.5 * (a.norm() + b.norm())).clamp_min(1e-12))


def projected_response(predicted_change: torch.Tensor, true_change: torch.Tensor) -> torch.Tensor:
    """Per row: ``<predicted, true> / |true|^2`` (1 = the prediction moved by all of the true change)."""
    p, q = predicted_change.flatten(1).double(), true_change.flatten(1).double()
    return (p * q).sum(dim=1) / q.square().sum(dim=1).clamp_min(1e-12)


def predicted_clean(noisy: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)``."""
    return (noisy - (1.0 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


# ------------------------------------------------------------------------------------- rungs
def vae_rung(model: DiffusionModel, readers: dict[str, FactorReader], settings: LadderSettings) -> dict[str, Any]:
    """Per factor value: reader accuracy on round trips of renders with that true value; per
    factor: PSNR inside the factor's pixels (and of the whole image)."""
    result: dict[str, Any] = {}
    for domain in settings.domains:
        seeds, images, labels = ladder_renders(domain, settings.vae_images)
        pixels = to_reader_input(images)
        recon = torch.cat([model.decode_latents(model.encode_images(chunk)).cpu() for chunk in pixels.split(32)])
        recon01 = ((recon.permute(0, 2, 3, 1).numpy() + 1.0) / 2.0).clip(0, 1)
        target01 = images.astype(np.float64) / 255.0
        reader = readers[domain]
        read = reader.predict_indices(recon)
        truth = torch.tensor([encode_labels(domain, lab) for lab in labels])
        masks = [factor_masks(domain, seed)[0] for seed in seeds]
        per_value: dict[str, dict[str, float]] = {}
        psnr: dict[str, float] = {}
        for column, factor in enumerate(domain_factors(domain)):
            for index, value in enumerate(factor.values):
                rows = truth[:, column] == index
                if rows.any():
                    per_value.setdefault(factor.name, {})[value] = float((read[rows, column] == index).double().mean())
            inside = [masked_psnr(recon01[i], target01[i], masks[i][factor.name]) for i in range(len(seeds))]
            inside = [v for v in inside if np.isfinite(v)]
            psnr[factor.name] = statistics.fmean(inside) if inside else float("nan")
        whole = statistics.fmean(
            masked_psnr(recon01[i], target01[i], np.ones(recon01.shape[1:3], bool)) for i in range(len(seeds))
        )
        accuracy = {f: float((read[:, c] == truth[:, c]).double().mean()) for c, f in enumerate(reader.factor_names)}
        result[domain] = {
            "per_value": per_value,
            "accuracy": accuracy,
            "psnr_inside": psnr,
            "psnr_image": whole,
            "images": len(seeds),
        }
    return result


@torch.no_grad()
def text_rung(model: DiffusionModel, settings: LadderSettings) -> dict[str, Any]:
    """Per factor value: mean relative distance of ``caption_for_value(v)``'s encoder output to
    those of the factor's other values; per factor the mean over value pairs."""
    from ..world.captions import caption_for_value

    result: dict[str, Any] = {}
    for domain in settings.domains:
        per_value: dict[str, dict[str, float]] = {}
        per_factor: dict[str, float] = {}
        for factor in domain_factors(domain):
            hidden = (
                model.encode_prompts([caption_for_value(domain, factor.name, v) for v in factor.values]).float().cpu()
            )
            pairs = {
                (i, j): relative_distance(hidden[i], hidden[j])
                for i in range(len(hidden))
                for j in range(len(hidden))
                if i < j
            }
            for i, value in enumerate(factor.values):
                per_value.setdefault(factor.name, {})[value] = statistics.fmean(
                    d for (a, b), d in pairs.items() if i in (a, b)
                )
            per_factor[factor.name] = statistics.fmean(pairs.values())
        result[domain] = {"per_value": per_value, "per_factor": per_factor}
    return result


@torch.no_grad()
def counterfactual_response(
    model: DiffusionModel, domain: str, seeds: Sequence[int], timesteps: Sequence[int], seed: int = 0, batch: int = 64
) -> dict[str, dict[str, dict[int, float]]]:
    """factor -> value -> t -> mean projected response of the predicted clean latent to swapping
    the full caption's value of ``factor`` for ``value`` (over the images not already at it)."""
    images, labels = render_many(domain, seeds)
    base = model.encode_images(to_reader_input(images)).float().cpu()
    jobs: list[tuple[int, str, str]] = []  # (image, factor, value)
    counter_images = []
    for i, (s, lab) in enumerate(zip(seeds, labels)):
        for factor in domain_factors(domain):
            for value in factor.values:
                if value != lab[factor.name]:
                    jobs.append((i, factor.name, value))
                    counter_images.append(render_many(domain, [s], [{**lab, factor.name: value}])[0][0])
    counter = model.encode_images(to_reader_input(np.stack(counter_images))).float().cpu()
    own_captions = [describe(domain, lab) for lab in labels]
    swap_captions = [describe(domain, {**labels[i], f: v}) for i, f, v in jobs]
    own_cond = model.encode_prompts(own_captions)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    for t in timesteps:
        alpha_bar = float(model.alphas_cumprod[t])
        noise = torch.randn(base.shape, generator=generator)
        noisy = alpha_bar**0.5 * base + (1 - alpha_bar) ** 0.5 * noise
        own_eps = model.predict_eps(noisy, t, own_cond).float().cpu()
        own_x0 = predicted_clean(noisy, own_eps, alpha_bar)
        index = torch.tensor([i for i, _, _ in jobs])
        responses = []
        for start in range(0, len(jobs), batch):
            rows = index[start : start + batch]
            cond = model.encode_prompts(swap_captions[start : start + batch])
            eps = model.predict_eps(noisy[rows], t, cond).float().cpu()
            change = predicted_clean(noisy[rows], eps, alpha_bar) - own_x0[rows]
            responses.append(projected_response(change, counter[start : start + batch] - base[rows]))
        for (i, f, v), r in zip(jobs, torch.cat(responses).tolist()):
            out.setdefault(f, {}).setdefault(v, {}).setdefault(t, []).append(r)
    return {f: {v: {t: statistics.fmean(r) for t, r in ts.items()} for v, ts in vs.items()} for f, vs in out.items()}


def unet_rung(model: DiffusionModel, settings: LadderSettings) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for domain in settings.domains:
        seeds, _, _ = ladder_renders(domain, settings.unet_images, start=50_000)
        per_value = counterfactual_response(model, domain, seeds, settings.timesteps, settings.seed)
        per_factor = {
            f: {t: statistics.fmean(vs[v][t] for v in vs) for t in settings.timesteps} for f, vs in per_value.items()
        }
        result[domain] = {"per_value": per_value, "per_factor": per_factor, "images": len(seeds)}
    return result


def generation_rung(
    model: DiffusionModel, readers: dict[str, FactorReader], settings: LadderSettings
) -> dict[str, Any]:
    qs = quality.QualitySettings(
        samples_per_value=settings.samples_per_value, steps=settings.generation_steps, seed=settings.seed
    )
    return quality.evaluate_text_conditioning(model, readers, qs, domains=settings.domains)


def probe_rung(model: DiffusionModel, readers: dict[str, FactorReader], settings: LadderSettings) -> dict[str, Any]:
    from dataclasses import replace

    return quality.controllability_probe(model, readers, replace(settings.probe, domains=settings.domains))


RUNGS: dict[str, Callable[..., dict[str, Any]]] = {
    "vae": lambda m, r, s: vae_rung(m, r, s),
    "text": lambda m, r, s: text_rung(m, s),
    "unet": lambda m, r, s: unet_rung(m, s),
    "generation": generation_rung,
    "probe": probe_rung,
}


def run_ladder(
    model: DiffusionModel,
    readers: dict[str, FactorReader],
    settings: LadderSettings = LadderSettings(),
    rungs: Sequence[str] = tuple(RUNGS),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every rung in ``rungs``; each records its process CPU seconds (the budget on shared cores)."""
    result: dict[str, Any] = {"settings": asdict(settings), "rungs": {}, "cpu_seconds": {}}
    for name in rungs:
        cpu, wall = time.process_time(), time.monotonic()
        result["rungs"][name] = RUNGS[name](model, readers, settings)
        result["cpu_seconds"][name] = round(time.process_time() - cpu, 1)
        log(f"ladder {name}: {result['cpu_seconds'][name]:.0f} CPU-s ({time.monotonic() - wall:.0f} s wall)")
    return result


# ---------------------------------------------------------------------------------- summary
def summary(ladder: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """domain -> factor -> one number per rung column (per-factor means), for tables and comparisons."""
    rungs = ladder["rungs"]
    settings = ladder["settings"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for domain in settings["domains"]:
        for factor in domain_factors(domain):
            row: dict[str, float] = {}
            name = factor.name
            if "vae" in rungs:
                row["vae_acc"] = rungs["vae"][domain]["accuracy"][name]
                row["vae_psnr"] = rungs["vae"][domain]["psnr_inside"][name]
            if "text" in rungs:
                row["text_dist"] = rungs["text"][domain]["per_factor"][name]
            if "unet" in rungs:
                for t, value in rungs["unet"][domain]["per_factor"][name].items():
                    row[f"unet_t{t}"] = value
            if "generation" in rungs:
                row["generation"] = rungs["generation"]["per_factor"][domain][name]
            if "probe" in rungs:
                row["probe"] = rungs["probe"]["domains"][domain]["per_factor"][name]["reached"]
            out.setdefault(domain, {})[name] = row
    return out


def domain_means(ladder: dict[str, Any]) -> dict[str, dict[str, float]]:
    """domain -> column -> mean over the domain's factors."""
    table = summary(ladder)
    means = {}
    for domain, factors in table.items():
        columns = next(iter(factors.values())).keys()
        means[domain] = {
            c: statistics.fmean(row[c] for row in factors.values() if np.isfinite(row[c])) for c in columns
        }
    return means


COLUMN_TITLES = {
    "vae_acc": "VAE acc",
    "vae_psnr": "PSNR in mask (dB)",
    "text_dist": "text dist",
    "generation": "generation",
    "probe": "probe reached",
}


def _cell(column: str, value: float) -> str:
    if not np.isfinite(value):
        return "–"
    if column == "vae_psnr":
        return f"{value:.1f}"
    if column.startswith("unet_t") or column == "text_dist":
        return f"{value:.2f}"
    return f"{100 * value:.0f}%"


def markdown(ladder: dict[str, Any], title: str = "") -> str:
    """Per-factor table per domain, then per-value detail for the weakest columns."""
    table = summary(ladder)
    lines = [title, ""] if title else []
    for domain, factors in table.items():
        columns = list(next(iter(factors.values())).keys())
        heads = [COLUMN_TITLES.get(c, f"UNet t={c[6:]}" if c.startswith("unet_t") else c) for c in columns]
        lines += [f"#### {domain}", "", "| factor | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(columns)]
        for name, row in factors.items():
            lines.append(f"| {name} | " + " | ".join(_cell(c, row[c]) for c in columns) + " |")
        means = domain_means(ladder)[domain]
        lines.append("| **mean** | " + " | ".join(f"**{_cell(c, means[c])}**" for c in columns) + " |")
        lines.append("")
        lines += _value_lines(ladder, domain)
    return "\n".join(lines)


def _value_lines(ladder: dict[str, Any], domain: str) -> list[str]:
    rungs = ladder["rungs"]
    lines = [
        "<details><summary>per value</summary>",
        "",
        "| factor | value | VAE acc | text dist | UNet (per t) | generation | probe |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for factor in domain_factors(domain):
        for value in factor.values:
            vae = (
                rungs.get("vae", {}).get(domain, {}).get("per_value", {}).get(factor.name, {}).get(value, float("nan"))
            )
            text = (
                rungs.get("text", {}).get(domain, {}).get("per_value", {}).get(factor.name, {}).get(value, float("nan"))
            )
            unet = rungs.get("unet", {}).get(domain, {}).get("per_value", {}).get(factor.name, {}).get(value, {})
            gen = (
                rungs.get("generation", {})
                .get("per_value", {})
                .get(domain, {})
                .get(factor.name, {})
                .get(value, float("nan"))
            )
            probe = (
                rungs.get("probe", {})
                .get("domains", {})
                .get(domain, {})
                .get("per_value", {})
                .get(factor.name, {})
                .get(value, {})
            )
            unet_cell = " / ".join(f"{v:.2f}" for v in unet.values()) if unet else "–"
            lines.append(
                f"| {factor.name} | {value} | {_cell('vae_acc', vae)} | {_cell('text_dist', text)} | {unet_cell} | "
                f"{_cell('generation', gen)} | {_cell('probe', probe.get('reached', float('nan')))} |"
            )
    return lines + ["", "</details>", ""]
