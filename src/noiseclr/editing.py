"""Editing real images and generating new ones with discovered directions (paper Eq. 8-9).

A direction ``d_k`` edits by steering the noise prediction away from the null prompt's::

    eps~ = eps(x_t, c_0) + sum_k lambda_k * (eps(x_t, c_k) - eps(x_t, c_0))

where ``c_0`` is the null conditioning and ``c_k`` the conditioning of direction ``k``. Each term
is active only in its own window of the denoising steps (``start``/``end`` fractions: 0 is the
first, noisiest step, 1 is after the last). Directions from different files (faces and cats,
say) combine freely as long as every file belongs to the model.

Everything runs through one batched kernel, :func:`denoise`: M trajectories share a schedule,
J conditionings are available, and a weight table ``w[m, j, step]`` says which conditionings
steer which trajectory at which step. Per step it gathers the null row of every trajectory
plus the ``(m, j)`` pairs with nonzero weight and evaluates them in ONE UNet call (split into
``max_batch``-row calls only when asked). Text-to-image is the same kernel with the prompt as
one more conditioning, weighted by the guidance scale.

Typical use::

    inversion = invert(model, model.encode_images(pixels), method="ddpm", steps=50)
    latents = regenerate(model, inversion, [[term_a], [term_a, term_b], []])   # [3, B, C, h, w]

or, for one edit with before/after, :func:`edit`; for prompts, :func:`noiseclr.generation.generate`.

The terms (directions and prompts alike) and the command line's ``FILE:INDEX=SCALE`` syntax are
in :mod:`noiseclr.terms`.

Localized edits (:mod:`noiseclr.regions` has the math): a term with a ``region`` contributes only
inside it, and an edit whose acting terms all have regions is blended back onto the image's
reconstruction outside their union after every step; the reconstruction rides in the same batch
(still ONE UNet call per step), and :func:`denoise` without a region plan is the global kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .composition import check_compose, compose_option, composite, split_edits, union_of_parts, with_reference
from .directions import Directions
from .errors import NoiseCLRError
from .images import ImageSet
from .inversion import (
    INVERSION_METHODS,
    Inversion,
    Schedule,
    check_steps,
    ddim_step,
    ddpm_step,
    invert,
    work_dtype,
)
from .options import check_count, check_inversion, check_max_batch, is_whole, option, positive_int
from .regions import (
    AutoRegion,
    RegionPlan,
    RegionState,
    blend_latents,
    edit_regions,
    plan_regions,
    region_overlay,
    region_union,
    step_gates,
    term_regions,
    with_reconstruction,
)
from .terms import EditTerm, PromptTerm, check_terms, resolve_strengths

if TYPE_CHECKING:
    from PIL import Image

    from .model import DiffusionModel

log = logging.getLogger("noiseclr")


# ------------------------------------------------------------------------- weight tables
def direction_conditionings(
    model: DiffusionModel, edits: Sequence[Sequence[EditTerm]]
) -> tuple[list[torch.Tensor], dict[tuple, int]]:
    """Encode each distinct (file, index) and prompt once: tensors [k, L, W] per file (then one for all
    prompts), and ``term.key`` -> row offset."""
    order: dict[tuple, int] = {}
    per_file: dict[int, tuple[Directions, list[int]]] = {}
    prompts: list[str] = []
    for terms in edits:
        for term in terms:
            key = term.key
            if key in order:
                continue
            order[key] = len(order)
            if isinstance(term, PromptTerm):
                prompts.append(term.prompt)
            else:
                per_file.setdefault(id(term.directions), (term.directions, []))[1].append(term.index)
    tensors, rows = [], {}
    offset = 0
    for directions, indices in per_file.values():
        vectors = directions.vectors[indices].to(model.device)
        with torch.no_grad():
            tensors.append(model.encode_directions(vectors))
        for position, index in enumerate(indices):
            rows[(id(directions), index)] = offset + position
        offset += len(indices)
    if prompts:
        tensors.append(model.encode_prompts(prompts))
        for position, prompt in enumerate(prompts):
            rows[("prompt", prompt)] = offset + position
    return tensors, rows


def edit_weights(
    edits: Sequence[Sequence[EditTerm]], rows: dict[tuple, int], columns: int, steps: int, offset: int
) -> torch.Tensor:
    """[E, columns, steps] float64 weight table: term scales on their windows (repeats add up)."""
    weights = torch.zeros(len(edits), columns, steps, dtype=torch.float64)
    for e, terms in enumerate(edits):
        for term in terms:
            if term.scale is None:
                raise ValueError(
                    f"{term.describe()}: strength not resolved to a scale (noiseclr.terms.resolve_strengths)"
                )
            column = offset + rows[term.key]
            weights[e, column] += term.scale * term.active_steps(steps).to(torch.float64)
    return weights


# --------------------------------------------------------------------------- the kernel
def combine_eps(
    eps_base: torch.Tensor, eps_pairs: torch.Tensor, pair_trajectory: torch.Tensor, pair_weight: torch.Tensor
) -> torch.Tensor:
    """``eps~[m] = eps_base[m] + sum_p w_p (eps_pairs[p] - eps_base[m_p])`` over pairs p of trajectory m.

    ``pair_weight`` is [P] (one number per pair) or [P, 1, h, w] (a weight map per pair: the scale
    times the pair's region)."""
    guided = eps_base.clone()
    if eps_pairs.shape[0]:
        weight = pair_weight.to(eps_base.dtype)
        if weight.ndim == 1:
            weight = weight.view((-1,) + (1,) * (eps_base.ndim - 1))
        delta = weight * (eps_pairs - eps_base[pair_trajectory])
        guided.index_add_(0, pair_trajectory, delta)
    return guided


StepCallback = Callable[[int, torch.Tensor], None]
"""Called as ``callback(step, latents[M])`` after every denoising step."""

RegionCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""Called as ``on_regions(step, union[M, h, w], held[G, h, w])`` after every step of a localized
denoise: each trajectory's union of regions, and each gated pair's own region (``RegionPlan`` order)."""


@torch.no_grad()
def denoise(
    model: DiffusionModel,
    latents: torch.Tensor,
    schedule: Schedule,
    conditionings: torch.Tensor,
    weights: torch.Tensor,
    *,
    noise_maps: torch.Tensor | None = None,
    noise_index: torch.Tensor | None = None,
    eta: float = 1.0,
    max_batch: int | None = None,
    progress: bool = True,
    desc: str = "denoising",
    callback: StepCallback | None = None,
    regions: RegionPlan | None = None,
    on_regions: RegionCallback | None = None,
) -> torch.Tensor:
    """Run M trajectories down ``schedule`` with guided noise predictions; returns latents [M, C, h, w].

    ``conditionings`` [J, L, W]: row 0 is the base (null) conditioning every trajectory uses.
    ``weights`` [M, J, N]: weight of conditioning j for trajectory m at step n (column 0 is
    ignored; 0 means not evaluated). Per step, one UNet call (``max_batch`` rows per call if
    set) evaluates the base for every trajectory and each nonzero (m, j) pair, and
    ``eps~ = eps_0 + sum_j w (eps_j - eps_0)``.

    Without ``noise_maps`` the step is DDIM (eta = 0). With ``noise_maps`` [N, B, C, h, w] it
    is the stochastic step with ``eta``, trajectory m using ``noise_maps[:, noise_index[m]]``.

    With ``regions`` (:mod:`noiseclr.regions`) each gated pair's ``w`` becomes ``w * R`` (its region at
    this step), and after the step every localized trajectory is blended with its reference
    trajectory outside its union of regions; ``on_regions(step, union, held)`` sees the unions
    [M, h, w] and every gated pair's own region [G, h, w].
    """
    from tqdm.auto import tqdm

    count = latents.shape[0]
    if weights.shape != (count, conditionings.shape[0], schedule.steps):
        raise ValueError(
            f"weights must be [M={count}, J={conditionings.shape[0]}, N={schedule.steps}], got {tuple(weights.shape)}"
        )
    if noise_maps is not None and noise_index is None:
        noise_index = torch.arange(count)
    device = model.device
    state = latents.to(device, work_dtype(device))
    weights = weights.to(torch.float64).cpu()
    base_rows = torch.arange(count)
    if regions is not None and regions.index.shape != (count, conditionings.shape[0]):
        raise ValueError(
            f"regions.index must be [M={count}, J={conditionings.shape[0]}], got {tuple(regions.index.shape)}"
        )
    memory = None if regions is None else RegionState.empty(regions, tuple(state.shape[2:]), state.dtype, device)
    for step in tqdm(range(schedule.steps), desc=desc, disable=not progress, leave=False):
        steering = weights[:, 1:, step]
        pair_trajectory, pair_column = steering.nonzero(as_tuple=True)
        pair_weight = steering[pair_trajectory, pair_column]
        trajectory_rows = torch.cat([base_rows, pair_trajectory]).to(device)
        conditioning_rows = torch.cat([torch.zeros(count, dtype=torch.long), pair_column + 1]).to(device)
        eps = model.predict_eps_rows(
            state[trajectory_rows],
            int(schedule.timesteps[step]),
            conditionings[conditioning_rows],
            max_batch,
        ).to(state.dtype)
        weight = pair_weight.to(device)
        if regions is not None:
            # Columns 1.. of the table are conditionings 1..; the plan indexes conditionings.
            gates, memory = step_gates(regions, pair_trajectory, pair_column + 1, eps[count:], eps[:count], memory)
            weight = weight.to(gates.dtype).view(-1, 1, 1, 1) * gates.unsqueeze(1)
        guided = combine_eps(eps[:count], eps[count:], pair_trajectory.to(device), weight)
        _check_finite(guided, step, schedule.steps)
        level_from, level_to = schedule.levels(step)
        if noise_maps is None:
            state = ddim_step(state, guided, level_from, level_to)
        else:
            noise = noise_maps[step].to(device, state.dtype)[noise_index.to(device)]
            state = ddpm_step(state, guided, level_from, level_to, noise, eta=eta)
        if regions is not None:
            union = region_union(regions, memory.held, count)
            state = blend_latents(state, regions, union)
            if on_regions is not None:
                on_regions(step, union, memory.held)
        if callback is not None:
            callback(step, state)
    return state


def _check_finite(eps: torch.Tensor, step: int, steps: int) -> None:
    # A NaN noise prediction would decode to a black image and pass silently (one sync per step).
    bad = ~torch.isfinite(eps.flatten(1)).all(dim=1)
    if bool(bad.any()):
        raise NoiseCLRError(
            f"denoising step {step + 1}/{steps}: the model's guided noise prediction is NaN or infinite for "
            f"{int(bad.sum())} of {eps.shape[0]} trajectories; lower the direction scales, or use --dtype float32."
        )


def warn_empty_windows(terms: Sequence[EditTerm], steps: int) -> None:
    for term in terms:
        if term.amount != 0 and not bool(term.active_steps(steps).any()):
            log.warning(
                "%s: its window covers none of the %d steps; it has no effect (widen it or use more steps)",
                term.describe(),
                steps,
            )


# ---------------------------------------------------------------------- editing real images
@torch.no_grad()
def regenerate(
    model: DiffusionModel,
    inversion: Inversion,
    edits: Sequence[Sequence[EditTerm]],
    *,
    image_indices: Sequence[int] | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
    auto_region: AutoRegion | None = None,
    return_regions: bool = False,
    return_term_regions: bool = False,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    desc: str | None = None,
    compose: str = "auto",
) -> torch.Tensor | tuple:
    """Render every edit variant of every inverted image; returns latents [E, B, C, h, w].

    ``edits`` holds one term list per variant (an empty list is the plain reconstruction).
    ``image_indices`` picks images of ``inversion`` (default all). All E*B trajectories run
    together: one UNet call per step. Latents are in the sampler's dtype on the model's device.
    Terms with a region are localized (:mod:`noiseclr.regions`, ``auto_region`` for auto ones);
    the reconstruction they blend with joins the batch if ``[]`` is not among the edits. With
    ``return_regions`` also returns float64 [E, B, h, w]: where each edit may differ from the
    reconstruction (:func:`edit_regions`); ``return_term_regions`` then also each term's own region,
    ``[e][t]`` [B, h, w] (:func:`~noiseclr.regions.term_regions`). ``image_sizes`` (width, height)
    per image of ``inversion`` is what ``#box=`` pixels refer to (default: the model's square input).
    ``compose`` says whether an edit's localized terms share a trajectory (:mod:`noiseclr.composition`;
    by default terms that all have boxes run apart and their changes are added).
    """
    requested = [list(terms) for terms in edits]
    if not requested:
        raise ValueError("regenerate needs at least one edit (use [[]] for the reconstruction)")
    expanded, parts = split_edits(requested, compose)
    if len(expanded) > len(requested):
        together = {"image_indices": image_indices, "max_batch": max_batch, "progress": progress, "callback": callback}
        more = {"auto_region": auto_region, "image_sizes": image_sizes, "desc": desc}
        return _composed(model, inversion, expanded, parts, return_regions, return_term_regions, **together, **more)
    check_terms(model, [term for terms in requested for term in terms])
    for terms in requested:
        warn_empty_windows(terms, inversion.steps)
    images = list(range(inversion.batch)) if image_indices is None else [int(i) for i in image_indices]
    check_max_batch(max_batch)
    edits, plain = with_reconstruction(requested)

    resolve_strengths(model, [term for terms in edits for term in terms], inversion.source_latents)
    tensors, rows = direction_conditionings(model, edits)
    conditionings = torch.cat([model.null_conditioning(), *tensors])
    per_edit = edit_weights(edits, rows, conditionings.shape[0], inversion.steps, offset=1)
    batch = len(images)
    plan = plan_regions(
        edits,
        rows,
        conditionings.shape[0],
        1,
        batch,
        inversion.steps,
        model.latent_size,
        (auto_region or AutoRegion()).validate(),
        reference_edit=plain,
        images=images,
        resolution=model.resolution,
        image_sizes=image_sizes,
    )
    final: dict[str, torch.Tensor] = {}
    # Trajectory m = e * B + b: edit e of image b.
    weights = per_edit.repeat_interleave(batch, dim=0)
    image_index = torch.as_tensor(images, dtype=torch.long)
    start = inversion.start_latents[image_index.to(inversion.start_latents.device)]
    start = start.repeat(len(edits), *([1] * (start.ndim - 1)))
    noise_index = image_index.repeat(len(edits))
    latents = denoise(
        model,
        start,
        inversion.schedule,
        conditionings,
        weights,
        noise_maps=inversion.noise_maps,
        noise_index=noise_index if inversion.noise_maps is not None else None,
        eta=inversion.eta,
        max_batch=max_batch,
        progress=progress,
        desc=desc or f"editing ({inversion.method})",
        callback=callback,
        regions=plan,
        on_regions=lambda step, union, held: final.update(union=union, held=held),
    )
    latents = latents.view(len(edits), batch, *latents.shape[1:])[: len(requested)]
    if not return_regions:
        return latents
    maps = edit_regions(edits, plan, final.get("union"), batch, model.latent_size)[: len(requested)]
    if not return_term_regions:
        return latents, maps
    own = [
        term_regions(terms, e, plan, final.get("held"), rows, 1, batch, model.latent_size)
        for e, terms in enumerate(requested)
    ]
    return latents, maps, own


def _composed(
    model: DiffusionModel,
    inversion: Inversion,
    expanded: list[list[EditTerm]],
    parts: list[list[int]],
    return_regions: bool,
    return_term_regions: bool,
    **options,
) -> torch.Tensor | tuple:
    """:func:`regenerate` of edits split by :func:`~noiseclr.composition.split_edits`: every part on
    its own trajectory beside the reconstruction, then each edit = reconstruction + its parts' changes."""
    _, _, latents, maps, own = _run_parts(model, inversion, expanded, parts, **options)
    if not return_regions:
        return latents
    return (latents, maps, own) if return_term_regions else (latents, maps)


def _run_parts(
    model: DiffusionModel, inversion: Inversion, expanded: list[list[EditTerm]], parts: list[list[int]], **options
):
    """Every part on its own trajectory beside the reconstruction, in one batch: the parts' latents
    and the reconstruction's index among them, then per requested edit the composited latents,
    regions and per-term regions."""
    runs, reference = with_reference(expanded)
    run_latents, maps, own = regenerate(
        model, inversion, runs, return_regions=True, return_term_regions=True, compose="joint", **options
    )
    own = [[region for i in indices for region in own[i]] for indices in parts]
    return run_latents, reference, composite(run_latents, parts, reference), union_of_parts(maps, parts), own


def _decode(model: DiffusionModel, latents: torch.Tensor, decode_batch: int) -> torch.Tensor:
    """[E, B, C, h, w] latents -> [E, B, 3, S, S] pixels, float32 on the CPU."""
    pixels = model.decode_latents(latents.reshape(-1, *latents.shape[2:]), batch_size=decode_batch).cpu()
    return pixels.view(*latents.shape[:2], *pixels.shape[1:])


def _render(
    model: DiffusionModel, inversion: Inversion, edits: Sequence[Sequence[EditTerm]], decode_batch: int, **options
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
    """Pixels, latents, regions and per-term regions of :func:`regenerate`'s edits. Edits whose
    terms run apart (:mod:`noiseclr.composition`) are summed in pixel space from each part decoded
    alone, so the decoder cannot carry one object's change into another's box."""
    requested = [list(terms) for terms in edits]
    compose = options.pop("compose", "auto")
    expanded, parts = split_edits(requested, compose)
    if len(expanded) == len(requested):
        latents, maps, own = regenerate(
            model, inversion, requested, return_regions=True, return_term_regions=True, compose=compose, **options
        )
        return _decode(model, latents, decode_batch), latents, maps, own
    run_latents, reference, latents, maps, own = _run_parts(model, inversion, expanded, parts, **options)
    pixels = composite(_decode(model, run_latents, decode_batch), parts, reference).clamp(-1, 1)
    return pixels, latents, maps, own


def render_edits(
    model: DiffusionModel,
    inversion: Inversion,
    edits: Sequence[Sequence[EditTerm]],
    *,
    image_indices: Sequence[int] | None = None,
    max_batch: int | None = None,
    decode_batch: int = 8,
    progress: bool = True,
    auto_region: AutoRegion | None = None,
    return_regions: bool = False,
    desc: str | None = None,
    compose: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`regenerate` and decode: pixels [E, B, 3, S, S] in [-1, 1], float32 on the CPU (and the
    regions [E, B, h, w] with ``return_regions``). ``desc`` labels the progress bar. Edits whose
    boxes run apart are composited in pixel space (:mod:`noiseclr.composition`)."""
    pixels, _, maps, _ = _render(
        model,
        inversion,
        edits,
        decode_batch,
        image_indices=image_indices,
        max_batch=max_batch,
        progress=progress,
        auto_region=auto_region,
        desc=desc,
        compose=compose,
    )
    return (pixels, maps) if return_regions else pixels


@dataclass
class EditSettings:
    """How :func:`edit` inverts and denoises."""

    steps: int = option(50, flag="--steps", help="inversion and denoising steps", type=positive_int)
    inversion: str = option(
        "ddim",
        flag="--inversion",
        help="ddim or ddpm (edit-friendly: reconstructs the latents exactly; "
        "the VAE round trip still softens fine detail)",
        choices=list(INVERSION_METHODS),
    )
    """``"ddim"`` (deterministic, approximate reconstruction) or ``"ddpm"`` (edit-friendly, exact in the latents)."""
    seed: int = option(0, flag="--seed", help="seed of the DDPM inversion's noise", default_text="")
    """Seeds the DDPM inversion's noise draws."""
    max_batch: int | None = option(
        None, flag="--max-batch", help="most UNet rows per call (memory cap)", type=positive_int, default_text=""
    )
    """Most UNet rows per call (memory cap; results are unchanged). None: one call per step."""
    decode_batch: int = 8
    """Images per VAE call when encoding and decoding."""
    compose: str = compose_option()
    """:mod:`noiseclr.composition`: ``auto``, ``joint`` or ``separate``."""
    auto_region: AutoRegion = field(default_factory=AutoRegion)
    """Parameters of ``#auto`` regions (flags ``--region-top``, ``--region-smoothing``)."""

    def __post_init__(self) -> None:
        check_count(self.steps, "--steps", why="must be a whole number of at least 1; 50 is typical.")
        check_inversion(self.inversion)
        check_compose(self.compose)
        check_max_batch(self.max_batch)
        if not is_whole(self.decode_batch) or self.decode_batch < 1:
            raise ValueError("decode_batch must be at least 1")
        self.auto_region.validate()


@dataclass
class EditResult:
    """Edited images with the same inversion's plain reconstruction, for before/after views."""

    edited: torch.Tensor
    """[B, 3, S, S] float32 in [-1, 1], CPU."""
    reconstruction: torch.Tensor
    """[B, 3, S, S]: the same inversion regenerated without directions."""
    source: torch.Tensor
    """[B, 3, S, S]: the input pixels."""
    edited_latents: torch.Tensor
    reconstruction_latents: torch.Tensor
    inversion: Inversion
    terms: list[EditTerm]
    paths: list[Path] | None = None
    region: torch.Tensor | None = None
    """[B, h, w] float64 on the latent grid: where the edit may differ from the reconstruction (the
    union of its terms' regions at the last step); None when no term has a region."""
    term_regions: list[torch.Tensor] | None = None
    """Per term, [B, h, w] float64: its own region at the last step it acted (ones for a global
    term); None when no term has a region."""

    def coverage(self) -> list[list[float]] | None:
        """Per term, per image: the fraction of the latent grid its own region covered (None
        without regions). The union's share is ``region.mean((1, 2))``."""
        if self.term_regions is None:
            return None
        return [[float(own[b].mean()) for b in range(own.shape[0])] for own in self.term_regions]

    def __len__(self) -> int:
        return int(self.edited.shape[0])

    def region_images(self) -> torch.Tensor | None:
        """[B, 3, S, S]: the edited images dimmed outside their region (None without regions)."""
        if self.region is None:
            return None
        return torch.stack([region_overlay(self.edited[i], self.region[i]) for i in range(len(self))])

    def grid(self) -> Image.Image:
        """One row per image: input | reconstruction | edited (| region)."""
        from .images import make_grid, tensor_to_pil

        columns = [self.source, self.reconstruction, self.edited]
        labels_top = ["input", "reconstruction", "edited"]
        if self.region is not None:
            columns.append(self.region_images())
            labels_top.append("region")
        rows = [[tensor_to_pil(t[i]) for t in columns] for i in range(len(self))]
        labels = [p.name for p in self.paths] if self.paths else None
        title = "; ".join(term.describe() for term in self.terms) or "no directions"
        return make_grid(rows, column_labels=labels_top, row_labels=labels, title=title)


@torch.no_grad()
def edit(
    model: DiffusionModel,
    images: ImageSet | torch.Tensor,
    terms: Sequence[EditTerm],
    settings: EditSettings | None = None,
    *,
    progress: bool = True,
) -> EditResult:
    """Edit real images (pixels in [-1, 1], [B, 3, S, S], or an :class:`ImageSet`) with ``terms``.

    The images are encoded, inverted once with the null prompt (``settings.inversion``), and
    regenerated twice in the same batched pass: with the terms and without (the reconstruction).
    ``#box=`` regions are in pixels of each input file (an :class:`ImageSet`'s ``sizes``), or of
    the [S, S] pixels given.
    """
    settings = settings or EditSettings()
    terms = list(terms)
    check_terms(model, terms)
    check_steps(model, settings.steps)
    paths = list(images.paths) if isinstance(images, ImageSet) else None
    sizes = list(images.sizes) if isinstance(images, ImageSet) and images.sizes else None
    pixels = images.pixels if isinstance(images, ImageSet) else images
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, S, S] pixels, got {tuple(pixels.shape)}")
    latents = model.encode_images(pixels, batch_size=settings.decode_batch)
    generator = torch.Generator().manual_seed(settings.seed)
    inversion = invert(
        model,
        latents,
        settings.inversion,
        settings.steps,
        generator=generator,
        max_batch=settings.max_batch,
        progress=progress,
    )
    decoded, both, maps, own = _render(
        model,
        inversion,
        [terms, []],
        settings.decode_batch,
        max_batch=settings.max_batch,
        progress=progress,
        auto_region=settings.auto_region,
        image_sizes=sizes,
        compose=settings.compose,
    )
    localized = any(term.region is not None for term in terms)
    return EditResult(
        edited=decoded[0],
        reconstruction=decoded[1],
        source=pixels.detach().float().cpu(),
        edited_latents=both[0],
        reconstruction_latents=both[1],
        inversion=inversion,
        terms=terms,
        paths=paths,
        region=maps[0] if localized else None,
        term_regions=own[0] if localized else None,
    )


__all__ = [
    "EditResult",
    "EditSettings",
    "combine_eps",
    "denoise",
    "direction_conditionings",
    "edit",
    "edit_weights",
    "regenerate",
    "render_edits",
]
