"""Text-to-image with edit terms: the prompt is one more conditioning of :func:`noiseclr.editing.denoise`.

``generate_latents`` starts M trajectories from seeded noise and steers each with its prompt
(weighted by the guidance scale) and its own edit terms, through the same batched kernel as real
image edits; :func:`generate` is the front end that decodes, saves grids and reports coverage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .composition import check_compose, compose_option, composite, split_edits, union_of_parts, with_reference
from .editing import StepCallback, denoise, direction_conditionings, edit_weights, warn_empty_windows
from .errors import NoiseCLRError
from .inversion import make_schedule
from .options import check_count, check_max_batch, option, positive_int
from .regions import AutoRegion, edit_regions, plan_regions, region_overlay, with_reconstruction
from .terms import EditTerm, check_terms, resolve_strengths

if TYPE_CHECKING:
    from PIL import Image

    from .model import DiffusionModel


log = logging.getLogger("noiseclr")


@torch.no_grad()
def generate_latents(
    model: DiffusionModel,
    prompts: Sequence[str],
    edits: Sequence[Sequence[EditTerm]],
    *,
    guidance_scale: float = 5.0,
    steps: int = 50,
    seed: int = 0,
    noise: torch.Tensor | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
    auto_region: AutoRegion | None = None,
    return_regions: bool = False,
    compose: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """DDIM (eta = 0) text-to-image with directions; returns latents [E, P, C, h, w].

    ``eps~ = eps_0 + g (eps_prompt - eps_0) + sum_k lambda_k (eps_k - eps_0)``. Every edit
    variant of prompt p starts from the same noise (``noise`` [P, C, h, w], or drawn on the
    CPU from ``seed``), so variants differ only by their directions. With ``g = 1`` this is the
    unguided prompt prediction, computed from both rows. Terms with a region are localized
    against the plain sample of the same prompt (added to the batch when ``[]`` is not among
    the edits); ``return_regions`` and ``compose`` as in :func:`regenerate`.
    """
    prompts = [str(p) for p in prompts]
    requested = [list(terms) for terms in edits]
    if not prompts or not requested:
        raise ValueError("generate needs at least one prompt and one edit (use [[]] for none)")
    expanded, parts = split_edits(requested, compose)
    if len(expanded) > len(requested):
        # One trajectory per object beside the plain sample, then the changes added (noiseclr.composition).
        given = {"guidance_scale": guidance_scale, "steps": steps, "seed": seed, "noise": noise, "max_batch": max_batch}
        run = {"progress": progress, "callback": callback, "auto_region": auto_region, "compose": "joint"}
        runs, reference = with_reference(expanded)
        latents, maps = generate_latents(model, prompts, runs, **given, **run, return_regions=True)
        latents = composite(latents, parts, reference)
        return (latents, union_of_parts(maps, parts)) if return_regions else latents
    if not math.isfinite(guidance_scale):
        raise NoiseCLRError(f"--guidance {guidance_scale}: not a finite number; 5 to 7.5 is typical.")
    check_terms(model, [term for terms in requested for term in terms])
    schedule = make_schedule(model, steps)
    for terms in requested:
        warn_empty_windows(terms, steps)
    check_max_batch(max_batch)
    edits, plain = with_reconstruction(requested)

    shape = (len(prompts), model.latent_channels, model.latent_size, model.latent_size)
    if noise is None:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must be {list(shape)}, got {list(noise.shape)}")

    # Strengths of uncalibrated files are measured on the initial noise taken as clean latents.
    resolve_strengths(model, [term for terms in edits for term in terms], noise)
    tensors, rows = direction_conditionings(model, edits)
    prompt_conditionings = model.encode_prompts(prompts)
    conditionings = torch.cat([model.null_conditioning(), prompt_conditionings, *tensors])
    count = len(prompts)
    per_edit = edit_weights(edits, rows, conditionings.shape[0], steps, offset=1 + count)
    # Trajectory m = e * P + p: edit e of prompt p, guided by its own prompt row.
    weights = per_edit.repeat_interleave(count, dim=0)
    trajectories = torch.arange(weights.shape[0])
    weights[trajectories, 1 + trajectories % count, :] = float(guidance_scale)
    plan = plan_regions(
        edits,
        rows,
        conditionings.shape[0],
        1 + count,
        count,
        steps,
        model.latent_size,
        (auto_region or AutoRegion()).validate(),
        reference_edit=plain,
        resolution=model.resolution,
    )
    start = noise.repeat(len(edits), 1, 1, 1)
    final: dict[str, torch.Tensor] = {}
    latents = denoise(
        model,
        start,
        schedule,
        conditionings,
        weights,
        max_batch=max_batch,
        progress=progress,
        desc="generating",
        callback=callback,
        regions=plan,
        on_regions=lambda step, union, held: final.update(union=union),
    )
    latents = latents.view(len(edits), count, *latents.shape[1:])[: len(requested)]
    if not return_regions:
        return latents
    return latents, edit_regions(edits, plan, final.get("union"), count, model.latent_size)[: len(requested)]


@dataclass
class GenerateSettings:
    """How :func:`generate` samples."""

    steps: int = option(50, flag="--steps", help="denoising steps", type=positive_int)
    guidance_scale: float = option(5.0, flag="--guidance", help="classifier-free guidance scale")
    seed: int = option(0, flag="--seed", help="seed of the initial noise (prompt p uses noise row p)", default_text="")
    images_per_prompt: int = option(1, flag="--num-images", help="images per prompt", type=positive_int)
    max_batch: int | None = option(
        None, flag="--max-batch", help="most UNet rows per call (memory cap)", type=positive_int, default_text=""
    )
    decode_batch: int = 8
    compose: str = compose_option()
    """:mod:`noiseclr.composition`."""
    auto_region: AutoRegion = field(default_factory=AutoRegion)
    """Parameters of ``#auto`` regions (flags ``--region-top``, ``--region-smoothing``)."""

    def __post_init__(self) -> None:
        check_count(self.steps, "--steps", why="must be a whole number of at least 1; 50 is typical.")
        if not math.isfinite(float(self.guidance_scale)):
            raise NoiseCLRError(f"--guidance {self.guidance_scale}: not a finite number; 5 to 7.5 is typical.")
        check_count(self.images_per_prompt, "--num-images")
        check_max_batch(self.max_batch)
        check_compose(self.compose)
        self.auto_region.validate()


@dataclass
class GenerateResult:
    """Generated images, and (with ``compare``) the same noise and prompts without the directions."""

    images: torch.Tensor
    """[P, 3, S, S] float32 in [-1, 1], CPU: one per prompt (each prompt repeated ``images_per_prompt`` times)."""
    latents: torch.Tensor
    prompts: list[str]
    terms: list[EditTerm]
    plain: torch.Tensor | None = None
    """[P, 3, S, S]: the same samples without the terms (None unless asked for)."""
    region: torch.Tensor | None = None
    """[P, h, w]: where the samples may differ from the plain ones (None when no term has a region)."""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def grid(self) -> Image.Image:
        """One row per sample: plain | with directions (| region), or just the samples."""
        from .images import make_grid, tensor_to_pil

        columns = [self.plain, self.images] if self.plain is not None else [self.images]
        labels = ["plain", "with directions"] if self.plain is not None else ["generated"]
        if self.region is not None:
            columns.append(torch.stack([region_overlay(self.images[i], self.region[i]) for i in range(len(self))]))
            labels.append("region")
        rows = [[tensor_to_pil(column[i]) for column in columns] for i in range(len(self))]
        title = "; ".join(term.describe() for term in self.terms) or None
        return make_grid(
            rows, column_labels=labels, row_labels=[p[:24] or "(empty)" for p in self.prompts], title=title
        )


def generate(
    model: DiffusionModel,
    prompts: Sequence[str],
    terms: Sequence[EditTerm],
    settings: GenerateSettings | None = None,
    *,
    compare: bool = False,
    progress: bool = True,
) -> GenerateResult:
    """Text-to-image with directions (see :func:`generate_latents` for the guidance and seeding).

    With ``compare`` the plain samples (same noise, no terms) are rendered in the same batched
    pass and returned as ``plain``.
    """
    settings = settings or GenerateSettings()
    prompts = [str(p) for p in prompts for _ in range(settings.images_per_prompt)]
    variants = [list(terms), []] if compare else [list(terms)]
    # Boxes that run apart are summed in pixel space, each part decoded alone (noiseclr.composition).
    runs, parts = split_edits(variants, settings.compose)
    separated = len(runs) > len(variants)
    if separated:
        runs, reference = with_reference(runs)
    latents, maps = generate_latents(
        model,
        prompts,
        runs,
        guidance_scale=settings.guidance_scale,
        steps=settings.steps,
        seed=settings.seed,
        max_batch=settings.max_batch,
        progress=progress,
        auto_region=settings.auto_region,
        compose="joint" if separated else settings.compose,
        return_regions=True,
    )
    pixels = model.decode_latents(latents.reshape(-1, *latents.shape[2:]), batch_size=settings.decode_batch).cpu()
    pixels = pixels.view(*latents.shape[:2], *pixels.shape[1:])
    if separated:
        pixels = composite(pixels, parts, reference).clamp(-1, 1)
        latents, maps = composite(latents, parts, reference), union_of_parts(maps, parts)
    return GenerateResult(
        images=pixels[0],
        latents=latents[0],
        prompts=prompts,
        terms=list(terms),
        plain=pixels[1] if compare else None,
        region=maps[0] if any(term.region is not None for term in terms) else None,
    )


__all__ = ["GenerateResult", "GenerateSettings", "generate", "generate_latents"]
