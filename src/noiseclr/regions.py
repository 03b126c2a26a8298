"""Localized edits: each edit term may act only inside a region of the latent grid.

A term's region is ``None`` (global, the default), ``"auto"`` (found at every step from the term's
own noise difference, as LEDITS++'s implicit masks) or a user mask (an image or a tensor: white =
the region, black = left alone, grey = partly). The editing kernel
(:func:`noiseclr.editing.denoise`) applies them with two rules, per denoising step ``n``:

1. **Gated guidance.** Each (trajectory m, conditioning j) pair p of weight ``w_p`` contributes
   only inside its region ``R_p,n`` ([h, w], broadcast over channels; 1 everywhere without one)::

       eps~_m = eps_0,m + sum_p w_p * R_p,n * (eps_p - eps_0,m)

2. **Latent blending** (as blended latent diffusion). Every trajectory takes its sampler step; then
   a localized edit m is pulled back onto the reconstruction trajectory r(m) of the same image
   (in the same batch) outside the union of its regions::

       z_m <- lerp(z'_r, z'_m, U_m,n) = z'_r + U_m,n * (z'_m - z'_r),   U_m,n = max_p H_p,n

   ``H_p,n`` is pair p's region at the latest step <= n where p acted (0 before it first acts: a
   term joins the union when it starts and stays after its window ends). Where ``U = 0`` the
   edited latents ARE the reconstruction's, bit for bit (``lerp`` is exact at 0 and 1), so with DDPM
   inversion the unedited part is exactly the inversion of the input. An edit with any acting term
   without a region is global: its region terms are still gated but nothing is blended.

**Auto regions** (:func:`auto_energy`, :func:`top_cells`, parameters :class:`AutoRegion`): at each
step where the pair acts, ``d = mean_c |eps_p - eps_0,m|`` (the unscaled noise difference, so both
signs of a direction find the same region) is smoothed by a normalised Gaussian of ``smoothing``
latent cells (replicate padding, radius ``ceil(3 sigma)``) and divided by its spatial mean: ``e_p,n``.
The region is the top ``top`` fraction of the running mean of those maps over the steps so far
where the pair acted: 1 where ``mean_k e_p,k`` is at least its k-th largest value,
``k = ceil(top * h * w)``, 0 elsewhere. At a term's first step that is LEDITS++'s implicit mask of
that step; the running mean keeps the region from jumping between steps (per-step masks left
scattered cells that latent blending turned into patchwork on the embedded model).

**Boxes** (:func:`parse_box`, :func:`box_mask`): ``box=X0,Y0,X1,Y1`` in pixels of the input image
(x to the right, y down, X1 and Y1 exclusive) is a fixed mask, 1 inside; ``auto+box=...`` is an
auto region kept inside the box: the top ``box_top`` fraction of the box's cells, so a box around one
object of a scene keeps the auto region off the other one. A box goes through the same centre crop as
its image; each latent cell takes the exact fraction of its area inside the box. Without the image's
size (generation, latents) a box is in pixels of the model's square input.

**Mask files** (:func:`load_mask`): any image Pillow reads, as grey levels in [0, 1], centre-cropped
and area-resampled onto the latent grid as images are (the CLI refuses another aspect ratio).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .errors import NoiseCLRError
from .options import option

log = logging.getLogger("noiseclr")

REGION_WORDS = ("auto", "none", "box=X0,Y0,X1,Y1", "auto+box=X0,Y0,X1,Y1")
"""What a ``#REGION`` may say besides a mask file."""

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels: x to the right, y down, the far edges exclusive."""


# ----------------------------------------------------------------------------- settings
@dataclass
class AutoRegion:
    """Parameters of ``auto`` regions (see the module docstring)."""

    top: float = option(
        0.25, flag="--region-top", help="auto regions: fraction of the latent grid kept at each step", type=float
    )
    """Fraction of the latent cells in the region (0 < top <= 1)."""
    smoothing: float = option(
        1.0,
        flag="--region-smoothing",
        type=float,
        help="auto regions: Gaussian sigma, in latent cells, of the noise-difference map (0 = none)",
    )
    """Gaussian sigma in latent cells applied to ``mean_c |eps_k - eps_0|`` before the top fraction is kept."""
    box_top: float = option(
        0.4,
        flag="--region-box-top",
        type=float,
        help="auto regions inside a box (#auto+box=...): fraction of the box's cells kept at each step",
    )
    """Fraction of a box's cells an auto region inside it keeps (the box excludes other objects)."""

    def validate(self) -> AutoRegion:
        for flag, value, example in (("--region-top", self.top, 0.25), ("--region-box-top", self.box_top, 0.4)):
            if not (isinstance(value, (int, float)) and 0.0 < float(value) <= 1.0):
                raise NoiseCLRError(f"{flag} {value}: must be a fraction in (0, 1], e.g. {example}.")
        if not (
            isinstance(self.smoothing, (int, float))
            and math.isfinite(float(self.smoothing))
            and float(self.smoothing) >= 0
        ):
            raise NoiseCLRError(
                f"--region-smoothing {self.smoothing}: must be 0 or a positive number of latent cells, e.g. 1."
            )
        self.top, self.smoothing, self.box_top = float(self.top), float(self.smoothing), float(self.box_top)
        return self


# ------------------------------------------------------------------------------ regions
@dataclass(frozen=True, eq=False)
class Region:
    """Where a term acts: ``kind`` ``"auto"`` or ``"mask"`` (``mask`` [H, W] or [N, H, W] in [0, 1],
    any resolution; N masks are one per image of the batch being edited)."""

    kind: str
    mask: torch.Tensor | None = None
    source: str = ""
    """What it came from, for labels: ``auto``, a file name or ``tensor``."""
    size: tuple[int, int] | None = None
    """(width, height) of a mask file, for the aspect check against the images."""
    boxes: tuple[Box, ...] | None = None
    """``kind == "box"``: the fixed box mask; ``kind == "auto"``: the box the auto region stays in.
    One box for every image, or one per image of the batch."""
    frames: tuple[tuple[int, int], ...] | None = None
    """(width, height) of the images the boxes are in pixels of (one, or one per image); None: the
    model's square input (:meth:`on_images` sets it from the loaded images)."""

    @classmethod
    def auto(cls) -> Region:
        return cls("auto", source="auto")

    @classmethod
    def box(cls, *boxes: Sequence[float], auto: bool = False) -> Region:
        """A box region (``auto=True``: an auto region kept inside the box): one ``(x0, y0, x1, y1)``
        in input pixels for every image, or one per image."""
        if not boxes:
            raise NoiseCLRError("box region: give at least one box (x0, y0, x1, y1) in pixels of the input.")
        checked = tuple(check_box(box) for box in boxes)
        shown = ",".join(f"{v:g}" for v in checked[0]) + (f" (+{len(checked) - 1} more)" if len(checked) > 1 else "")
        return cls("auto" if auto else "box", boxes=checked, source=("auto+box=" if auto else "box=") + shown)

    def on_images(self, frames: Sequence[tuple[int, int]]) -> Region:
        """This region with its boxes in pixels of images of these (width, height): one per image of
        the batch. Regions without boxes, or whose boxes already have frames, are returned as they are."""
        if self.boxes is None or self.frames is not None:
            return self
        return replace(self, frames=tuple((int(w), int(h)) for w, h in frames))

    def label(self) -> str:
        return self.source or self.kind

    def same_as(self, other: Region) -> bool:
        if self.kind != other.kind or self.boxes != other.boxes or self.frames != other.frames:
            return False
        return self.kind in ("auto", "box") or (
            self.mask.shape == other.mask.shape and bool(torch.equal(self.mask, other.mask))
        )

    def _box_of(self, image: int, resolution: int, frame: tuple[int, int] | None) -> tuple[Box, tuple[int, int]]:
        assert self.boxes is not None

        def pick(values: tuple, what: str):
            if len(values) == 1:
                return values[0]
            if not 0 <= image < len(values):
                raise NoiseCLRError(
                    f"region {self.label()}: {len(values)} {what} for the images, but image {image} is "
                    f"edited; give one {what[:-1] if what.endswith('s') else what} or one per image."
                )
            return values[image]

        box = pick(self.boxes, "boxes")
        if self.frames is not None:
            return box, pick(self.frames, "image sizes")
        return box, frame or (resolution, resolution)

    def within(
        self, size: int, image: int = 0, resolution: int | None = None, frame: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Where an auto region may be, float64 [size, size]: its box's cells (ones without a box)."""
        if self.boxes is None:
            return torch.ones(size, size, dtype=torch.float64)
        box, frame = self._box_of(image, resolution or size * 8, frame)
        return box_mask(box, frame, size, what=f"region {self.label()}")

    def latent_mask(
        self, size: int, image: int = 0, resolution: int | None = None, frame: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The mask of image ``image`` on the ``size`` x ``size`` latent grid: float64 [size, size].
        A box is in pixels of ``self.frames``, else of ``frame`` (the image's (width, height)), else of
        the model's square input of ``resolution`` pixels (default ``8 * size``, the VAE's usual factor)."""
        assert self.kind != "auto", "auto regions have no fixed mask"
        if self.kind == "box":
            return self.within(size, image, resolution, frame)
        mask = self.mask
        if mask.ndim == 3:
            if not 0 <= image < mask.shape[0]:
                raise NoiseCLRError(
                    f"region {self.label()}: {mask.shape[0]} masks for the images, but image {image} is edited; "
                    "give one mask [H, W] or one per image."
                )
            mask = mask[image]
        return resize_mask(mask, size)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """[H, W] -> [size, size] float64: centre-cropped to a square (as images are), area-resampled
    (bilinear when growing)."""
    height, width = mask.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = mask[top : top + side, left : left + side].to(torch.float64)[None, None]
    if side == size:
        return square[0, 0].clone()
    mode = "area" if side > size else "bilinear"
    resized = F.interpolate(
        square, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False})
    )
    return resized[0, 0].clamp(0.0, 1.0)


def mask_from_tensor(value: torch.Tensor, what: str = "region mask tensor") -> Region:
    """A user mask tensor [H, W] or [N, H, W] with values in [0, 1]."""
    if value.ndim not in (2, 3) or value.shape[-1] < 1 or value.shape[-2] < 1:
        raise NoiseCLRError(f"{what}: shape {list(value.shape)}; pass [H, W] (one mask) or [N, H, W] (one per image).")
    mask = value.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(mask).all()) or float(mask.min()) < 0.0 or float(mask.max()) > 1.0:
        raise NoiseCLRError(f"{what}: values must be finite and in [0, 1] (1 = the region, 0 = left alone).")
    return Region("mask", mask=mask, source="tensor")


def check_box(box: Sequence[Any]) -> Box:
    """A box ``(x0, y0, x1, y1)`` of finite numbers with ``0 <= x0 < x1`` and ``0 <= y0 < y1``."""
    values = list(box) if isinstance(box, (list, tuple)) else None
    if values is None or len(values) != 4:
        raise NoiseCLRError(f"box {box!r}: need 4 numbers x0,y0,x1,y1 (pixels of the input), e.g. box=10,20,200,240.")
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        raise NoiseCLRError(
            f"box {','.join(map(str, values))}: not numbers; give pixels x0,y0,x1,y1, e.g. box=10,20,200,240."
        ) from None
    shown = ",".join(f"{v:g}" for v in (x0, y0, x1, y1))
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise NoiseCLRError(f"box {shown}: not finite numbers; give pixels x0,y0,x1,y1, e.g. box=10,20,200,240.")
    if min(x0, y0) < 0:
        raise NoiseCLRError(f"box {shown}: starts outside the image (negative); pixels count from 0 at the top left.")
    if x1 <= x0 or y1 <= y0:
        raise NoiseCLRError(f"box {shown}: empty or inverted; need x0 < x1 and y0 < y1 (left, top, right, bottom).")
    return (x0, y0, x1, y1)


def parse_box(text: str) -> Box:
    """``"X0,Y0,X1,Y1"`` -> a checked box (one-line errors for anything else)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4 or not all(parts):
        raise NoiseCLRError(f"box={text}: need 4 numbers x0,y0,x1,y1 (pixels of the input), e.g. box=10,20,200,240.")
    return check_box(parts)


def check_box_fits(box: Box, frame: tuple[int, int], what: str) -> None:
    """A box must lie inside its image and reach the centre square the model sees."""
    width, height = frame
    shown = ",".join(f"{v:g}" for v in box)
    if box[2] > width or box[3] > height:
        raise NoiseCLRError(
            f"{what}: box {shown} reaches outside the {width}x{height} image; "
            f"give pixels inside it (x1 <= {width}, y1 <= {height})."
        )
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    if box[2] <= left or box[0] >= left + side or box[3] <= top or box[1] >= top + side:
        raise NoiseCLRError(
            f"{what}: box {shown} lies outside the centre {side}x{side} square the model sees "
            f"(x {left:g}..{left + side:g}, y {top:g}..{top + side:g}); move it inside."
        )


def _cover(start: float, end: float, origin: float, cell: float, size: int) -> torch.Tensor:
    """[size] fraction of each cell ``[origin + i cell, origin + (i+1) cell)`` inside ``[start, end)``."""
    edges = origin + cell * torch.arange(size + 1, dtype=torch.float64)
    return (torch.minimum(edges[1:], torch.tensor(end)) - torch.maximum(edges[:-1], torch.tensor(start))).clamp_min(
        0
    ) / cell


def box_mask(box: Box, frame: tuple[int, int], size: int, what: str = "region") -> torch.Tensor:
    """A box in pixels of a ``frame`` = (width, height) image on the ``size`` x ``size`` latent grid:
    centre-cropped to a square like the image, each cell the fraction of its area inside the box."""
    check_box_fits(box, frame, what)
    width, height = frame
    side = min(width, height)
    cell = side / size
    columns = _cover(box[0], box[2], (width - side) / 2, cell, size)
    rows = _cover(box[1], box[3], (height - side) / 2, cell, size)
    return rows[:, None] * columns[None, :]


def load_mask(path: str | Path) -> Region:
    """A mask image (white = region) as a :class:`Region`; one-line errors for missing or unreadable files."""
    import numpy as np
    from PIL import Image

    from .images import open_image, to_rgb

    path = Path(path).expanduser()
    if not path.is_file():
        raise NoiseCLRError(f"mask {path}: no such file; pass an image where white marks the region (or #auto).")
    try:
        image = open_image(path)
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        reason = (
            "not an image"
            if isinstance(exc, Image.UnidentifiedImageError)
            else (str(exc).splitlines() or ["unreadable"])[0][:120]
        )
        raise NoiseCLRError(
            f"mask {path}: cannot read it as an image ({reason}); pass a PNG where white marks the region."
        ) from None
    grey = to_rgb(image).convert("L")
    mask = torch.from_numpy(np.asarray(grey, dtype=np.float64) / 255.0)
    if float(mask.max()) == 0.0:
        log.warning("mask %s is black everywhere: its term will change nothing (white marks the region)", path)
    return Region("mask", mask=mask, source=path.name, size=grey.size)


def as_region(value: Any) -> Region | None:
    """None, ``"auto"``, ``"none"``, a mask file path, a tensor or a :class:`Region` -> Region or None."""
    if value is None or isinstance(value, Region):
        return value
    if isinstance(value, torch.Tensor):
        return mask_from_tensor(value)
    if isinstance(value, (str, Path)):
        text = str(value).strip()
        if text == "auto":
            return Region.auto()
        if text == "none":
            return None
        for prefix, auto in (("box=", False), ("auto+box=", True)):
            if text.startswith(prefix):
                return Region.box(parse_box(text[len(prefix) :]), auto=auto)
        return load_mask(text)
    raise NoiseCLRError(
        f"region {value!r}: use None, 'auto', 'box=X0,Y0,X1,Y1', 'auto+box=...', a mask image path or a [H, W] tensor."
    )


def check_mask_aspect(region: Region | None, image_sizes: dict[str, tuple[int, int]], what: str) -> None:
    """A mask file must have its images' aspect ratio (any size is resized, but a crop would misalign)."""
    if region is None or region.size is None:
        return
    width, height = region.size
    for name, (image_width, image_height) in image_sizes.items():
        if abs(width / height - image_width / image_height) > 0.01 * (image_width / image_height):
            raise NoiseCLRError(
                f"{what}: mask {region.source} is {width}x{height} but image {name} is {image_width}x{image_height}; "
                "draw the mask on the image (same aspect ratio; any size is resized)."
            )


# --------------------------------------------------------------------------------- math
def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """[P, h, w] maps blurred by a normalised separable Gaussian (radius ceil(3 sigma), replicate padding)."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(maps.unsqueeze(1), (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1)).squeeze(1)


def auto_energy(difference: torch.Tensor, settings: AutoRegion) -> torch.Tensor:
    """``e`` [P, h, w]: the smoothed channel mean of ``|eps_p - eps_0|`` [P, C, h, w], divided by its spatial
    mean (so every step weighs the same in the running mean; an all-zero map stays zero)."""
    energy = gaussian_smooth(difference.abs().mean(dim=1), settings.smoothing)
    return energy / energy.flatten(1).mean(dim=1).clamp_min(1e-30).view(-1, 1, 1)


def top_cells(energy: torch.Tensor, top: float) -> torch.Tensor:
    """{0, 1} [P, h, w]: 1 where ``energy`` is at least its k-th largest value, ``k = ceil(top * h * w)``."""
    flat = energy.flatten(1)
    keep = max(1, math.ceil(top * flat.shape[1] - 1e-9))
    threshold = flat.topk(keep, dim=1).values[:, -1:]
    return (flat >= threshold).to(energy.dtype).view_as(energy)


def top_cells_within(energy: torch.Tensor, top: float, within: torch.Tensor) -> torch.Tensor:
    """:func:`top_cells` kept inside ``within`` [P, h, w] in [0, 1] (a box's cell coverage): the top
    ``top`` fraction of the cells where ``within > 0``, weighted by ``within`` so the box's edge cells
    count by their share. With ``within`` all ones it is :func:`top_cells` exactly."""
    inside = (within > 0).flatten(1)
    flat = torch.where(inside, energy.flatten(1), torch.full_like(energy.flatten(1), -math.inf))
    keep = torch.ceil(top * inside.sum(dim=1).to(torch.float64) - 1e-9).clamp_min(1).long()
    threshold = flat.sort(dim=1, descending=True).values.gather(1, (keep - 1).to(flat.device)[:, None])
    return ((flat >= threshold) & inside).to(energy.dtype).view_as(energy) * within.to(energy.dtype)


def auto_masks(difference: torch.Tensor, settings: AutoRegion) -> torch.Tensor:
    """One step's regions {0, 1} [P, h, w] from noise differences ``eps_p - eps_0`` [P, C, h, w] (the
    first step of a term; later steps use the running mean of :func:`auto_energy`, see :func:`step_gates`)."""
    return top_cells(auto_energy(difference, settings), settings.top)


@dataclass
class RegionPlan:
    """Which (trajectory, conditioning) pairs of a :func:`~noiseclr.editing.denoise` batch are gated,
    and which trajectory each localized edit is blended with (built by :func:`plan_regions`)."""

    index: torch.Tensor
    """[M, J] long: gated pair number g of (m, j), -1 for pairs without a region."""
    owner: torch.Tensor
    """[G] long: the trajectory of gated pair g."""
    auto: torch.Tensor
    """[G] bool: the pair's region is auto (else its fixed ``masks[g]``)."""
    masks: torch.Tensor
    """[G, h, w] float64: fixed masks (zeros for auto pairs)."""
    within: torch.Tensor
    """[G, h, w] float64: where each auto pair's region may be (its box's cells; ones without a box)."""
    boxed: torch.Tensor
    """[G] bool: an auto pair kept inside a box."""
    reference: torch.Tensor
    """[M] long: the reconstruction trajectory a localized edit is blended with; -1: not blended."""
    settings: AutoRegion

    @property
    def count(self) -> int:
        return int(self.owner.shape[0])


@dataclass(frozen=True)
class RegionState:
    """What the kernel carries between steps for the gated pairs."""

    held: torch.Tensor
    """[G, h, w] each pair's region at the latest step it acted (0 before)."""
    energy: torch.Tensor
    """[G, h, w] sum of the auto pairs' :func:`auto_energy` maps over the steps they acted."""
    steps: torch.Tensor
    """[G] how many steps each pair has acted."""

    @classmethod
    def empty(cls, plan: RegionPlan, size: tuple[int, int], dtype: torch.dtype, device: torch.device) -> RegionState:
        zeros = torch.zeros((plan.count, *size), dtype=dtype, device=device)
        return cls(held=zeros, energy=zeros.clone(), steps=torch.zeros(plan.count, dtype=dtype, device=device))


def step_gates(
    plan: RegionPlan,
    pair_trajectory: torch.Tensor,
    pair_column: torch.Tensor,
    eps_pairs: torch.Tensor,
    eps_base: torch.Tensor,
    state: RegionState,
) -> tuple[torch.Tensor, RegionState]:
    """This step's gates ``R_p`` [P, h, w] (1 for pairs without a region) and the state updated with the
    gated pairs that acted (their regions held, auto pairs' energy maps added to the running sums)."""
    gated = plan.index[pair_trajectory, pair_column]  # CPU, [P]
    device, dtype = eps_pairs.device, eps_pairs.dtype
    gates = torch.ones((eps_pairs.shape[0], *eps_pairs.shape[2:]), dtype=dtype, device=device)
    chosen = (gated >= 0).nonzero().flatten()
    if not chosen.numel():
        return gates, state
    number = gated[chosen].to(device)
    values = plan.masks[gated[chosen]].to(device, dtype)
    energy, steps = state.energy, state.steps.index_add(0, number, torch.ones_like(number, dtype=state.steps.dtype))
    auto = plan.auto[gated[chosen]].to(device)
    if bool(auto.any()):
        rows = chosen.to(device)[auto]
        difference = eps_pairs[rows] - eps_base[pair_trajectory.to(device)[rows]]
        energy = energy.index_add(0, number[auto], auto_energy(difference, plan.settings).to(energy.dtype))
        mean = energy[number[auto]] / steps[number[auto]].view(-1, 1, 1)
        picked = gated[chosen][auto.cpu()]
        # Each row by its own kind: a boxed auto keeps box_top of its box, a bare auto top of the grid.
        box_rows = plan.boxed[picked].to(device)
        boxed = top_cells_within(mean, plan.settings.box_top, plan.within[picked].to(device))
        values[auto] = torch.where(box_rows.view(-1, 1, 1), boxed, top_cells(mean, plan.settings.top)).to(dtype)
    gates[chosen.to(device)] = values
    held = state.held.index_copy(0, number, values.to(state.held.dtype))
    return gates, RegionState(held=held, energy=energy, steps=steps)


def region_union(plan: RegionPlan, held: torch.Tensor, trajectories: int) -> torch.Tensor:
    """``U_m`` [M, h, w]: elementwise max of the held regions of each trajectory's gated pairs (0 if none)."""
    union = torch.zeros((trajectories, *held.shape[1:]), dtype=held.dtype, device=held.device)
    owner = plan.owner.to(held.device).view(-1, *([1] * (held.ndim - 1))).expand_as(held)
    return union.scatter_reduce_(0, owner, held, reduce="amax", include_self=True)


def blend_latents(state: torch.Tensor, plan: RegionPlan, union: torch.Tensor) -> torch.Tensor:
    """Localized trajectories pulled onto their reconstruction outside their union:
    ``z_m = lerp(z_r, z_m, U_m)`` (exact at U = 0 and U = 1)."""
    blended = (plan.reference >= 0).nonzero().flatten()
    if not blended.numel():
        return state
    rows = blended.to(state.device)
    reference = plan.reference[blended].to(state.device)
    weight = union[rows].unsqueeze(1).to(state.dtype)
    out = state.clone()
    out[rows] = torch.lerp(state[reference], state[rows], weight)
    return out


# ---------------------------------------------------------------------------- pictures
def region_overlay(pixels: torch.Tensor, region: torch.Tensor, dim: float = 0.3) -> torch.Tensor:
    """An image [3, S, S] in [-1, 1] with everything outside ``region`` [h, w] dimmed (nearest upsampling):
    how the region looks on the picture."""
    size = pixels.shape[-1]
    weight = F.interpolate(region.detach().float().cpu()[None, None], size=(size, size), mode="nearest")[0]
    shown = (pixels.detach().float().cpu() + 1.0) / 2.0
    return (shown * (dim + (1.0 - dim) * weight)) * 2.0 - 1.0


__all__ = [
    "AutoRegion",
    "Region",
    "RegionPlan",
    "RegionState",
    "as_region",
    "auto_energy",
    "auto_masks",
    "blend_latents",
    "check_mask_aspect",
    "gaussian_smooth",
    "load_mask",
    "mask_from_tensor",
    "region_overlay",
    "region_union",
    "resize_mask",
    "step_gates",
    "top_cells",
    "top_cells_within",
    "box_mask",
    "check_box",
    "check_box_fits",
    "parse_box",
    "term_regions",
]


# ------------------------------------------------------------------------ planning a batch
class EditTerm(Protocol):
    """What planning reads of an edit term (:class:`noiseclr.terms.Term`; named here, not imported,
    so that terms -> regions stays one-way)."""

    region: Any
    amount: float

    @property
    def key(self) -> tuple: ...

    def active_steps(self, steps: int) -> torch.Tensor: ...

    def describe(self) -> str: ...


def _acts(term: EditTerm, steps: int) -> bool:
    return term.amount != 0 and bool(term.active_steps(steps).any())


def _region_of(term: EditTerm) -> Region | None:
    # A region assigned after construction ("auto", a path) is normalised here as well.
    return as_region(term.region)


def with_reconstruction(edits: Sequence[Sequence[EditTerm]]) -> tuple[list[list[EditTerm]], int | None]:
    """The edits, plus a plain variant ``[]`` appended when a term has a region and none is there, and
    the index of the plain variant (None if there is none)."""
    edits = [list(terms) for terms in edits]
    plain = next((e for e, terms in enumerate(edits) if not terms), None)
    if plain is None and any(_region_of(term) is not None for terms in edits for term in terms):
        return [*edits, []], len(edits)
    return edits, plain


def plan_regions(
    edits: Sequence[Sequence[EditTerm]],
    rows: dict[tuple, int],
    columns: int,
    offset: int,
    batch: int,
    steps: int,
    latent_size: int,
    settings: AutoRegion,
    *,
    reference_edit: int | None,
    images: Sequence[int] | None = None,
    resolution: int | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> RegionPlan | None:
    """The :class:`~noiseclr.regions.RegionPlan` of a batch of trajectories ``m = e * batch + b`` (None if
    no term has a region). ``reference_edit`` is the plain variant the localized edits blend with;
    ``images[b]`` picks per-image masks and boxes (default ``b``); boxes are in pixels of
    ``image_sizes[images[b]]`` (width, height), else of the model's ``resolution``-pixel square input. A direction repeated in one edit must
    repeat its region (its weights add up, as without regions)."""
    if not any(_region_of(term) is not None for terms in edits for term in terms):
        return None
    assert reference_edit is not None and not edits[reference_edit], "localized edits need a plain variant"
    images = list(range(batch)) if images is None else list(images)
    count = len(edits) * batch
    index = torch.full((count, columns), -1, dtype=torch.long)
    reference = torch.full((count,), -1, dtype=torch.long)
    owner, auto, masks, within, boxed = [], [], [], [], []
    for e, terms in enumerate(edits):
        regions: dict[int, Region | None] = {}
        terms_by_column: dict[int, EditTerm] = {}
        for term in terms:
            column = offset + rows[term.key]
            region = _region_of(term)
            terms_by_column[column] = term
            if column in regions and not _same_region(regions[column], region):
                raise NoiseCLRError(
                    f"{term.describe()}: the same direction twice in one edit with different regions; "
                    "give both the same region (or one term)."
                )
            regions[column] = region
        localized = any(r is not None for r in regions.values()) and all(
            _region_of(term) is not None for term in terms if _acts(term, steps)
        )
        for b in range(batch):
            m = e * batch + b
            if localized:
                reference[m] = reference_edit * batch + b
            for column, region in regions.items():
                if region is None:
                    continue
                index[m, column] = len(owner)
                owner.append(m)
                auto.append(region.kind == "auto")
                boxed.append(region.kind == "auto" and region.boxes is not None)
                zeros = torch.zeros(latent_size, latent_size, dtype=torch.float64)
                frame = tuple(image_sizes[images[b]]) if image_sizes else None
                try:
                    masks.append(
                        zeros
                        if region.kind == "auto"
                        else region.latent_mask(latent_size, images[b], resolution, frame)
                    )
                    within.append(
                        region.within(latent_size, images[b], resolution, frame) if boxed[-1] else zeros + 1.0
                    )
                except NoiseCLRError as exc:
                    raise NoiseCLRError(f"{terms_by_column[column].describe()}: {exc}") from None
    return RegionPlan(
        index=index,
        owner=torch.tensor(owner, dtype=torch.long),
        auto=torch.tensor(auto, dtype=torch.bool),
        masks=torch.stack(masks),
        within=torch.stack(within),
        boxed=torch.tensor(boxed, dtype=torch.bool),
        reference=reference,
        settings=settings,
    )


def _same_region(a: Region | None, b: Region | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.same_as(b))


def term_regions(
    terms: Sequence[EditTerm],
    edit: int,
    plan: RegionPlan | None,
    held: torch.Tensor | None,
    rows: dict[tuple, int],
    offset: int,
    batch: int,
    size: int,
) -> list[torch.Tensor]:
    """Per term of edit ``edit`` (columns ``offset + rows[term.key]`` as in :func:`plan_regions`):
    [batch, h, w] float64, the term's own region at the last step it acted; ones for a global term."""
    maps = []
    for term in terms:
        region = torch.ones(batch, size, size, dtype=torch.float64)
        if plan is not None and held is not None:
            gated = plan.index[edit * batch : (edit + 1) * batch, offset + rows[term.key]]
            for b, number in enumerate(gated.tolist()):
                if number >= 0:
                    region[b] = held[number].to("cpu", torch.float64)
        maps.append(region)
    return maps


def edit_regions(
    edits: Sequence[Sequence[EditTerm]], plan: RegionPlan | None, union: torch.Tensor | None, batch: int, size: int
) -> torch.Tensor:
    """[E, batch, h, w] where each edit may differ from the reconstruction: its final union when it is
    localized, ones for other edits with terms, zeros for the plain variant."""
    maps = torch.zeros(len(edits), batch, size, size, dtype=torch.float64)
    for e, terms in enumerate(edits):
        if terms:
            maps[e] = 1.0
    if plan is not None and union is not None:
        flat = maps.view(-1, size, size)
        localized = (plan.reference >= 0).nonzero().flatten()
        flat[localized] = union[localized.to(union.device)].to("cpu", torch.float64)
    return maps
