"""The measurement protocol: render world images, invert them once, edit, decode and read factors.

Shared by the benchmark (:mod:`noiseclr.bench`) and the demo (:mod:`noiseclr.demo`):

* :func:`seeds_for` -- the render seeds of one role (held-out, validation, discovery, demo...),
  from the evaluation range of :mod:`noiseclr.world.seeds`;
* :func:`prepare_split` -- render, encode and invert a set ONCE (:class:`EditProtocol`: steps,
  inversion, seed), and read its inputs and reconstructions (:class:`Split`);
* :func:`render_and_read` -- every edit of every inverted image, in batched passes
  (:class:`PassSizes`), decoded and read by the factor reader; :class:`PixelComparison` compares
  the decoded edits with the reconstruction pixel by pixel, in the whole image and outside the
  edit's region (localized edits, :mod:`noiseclr.regions`);
* :func:`direction_records` -- one :class:`DirectionRecord` per direction from the change
  tables (:mod:`noiseclr.metrics` does the arithmetic), and :func:`annotate_directions`, the
  annotated copy of a directions file that stores them (``settings[ANNOTATIONS_KEY]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .directions import Directions
from .editing import render_edits
from .terms import EditTerm
from .errors import NoiseCLRError
from .inversion import Inversion, invert
from .metrics import (
    EFFECTIVE_CHANGE,
    direction_metrics,
    discovered_factors,
    dominant_value,
    masked_psnr,
    upsample_region,
)
from .model import DiffusionModel
from .options import check_count, check_inversion, check_max_batch
from .regions import AutoRegion, Region
from .world.seeds import BENCH_ROLES, EVAL_OFFSETS, EVAL_SEED_BASE, SEED_STRIDE

log = logging.getLogger("noiseclr")

READER_SIZE = 128
"""Side of the images the readers read (the world's render size)."""
ANNOTATIONS_KEY = "factor_annotations"
"""Key in ``Directions.settings`` of the annotated copies (bench and demo): what each direction moves."""


# -------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class PassSizes:
    """How much is rendered at once (memory only: results do not depend on it)."""

    trajectories_per_pass: int = 128
    """Edited images rendered together."""
    max_batch: int | None = None
    """Most UNet rows per call."""
    decode_batch: int = 16
    """Images per VAE call."""

    def validate(self) -> PassSizes:
        check_count(self.trajectories_per_pass, "--trajectories-per-pass")
        check_max_batch(self.max_batch)
        check_count(self.decode_batch, "decode_batch")
        return self


@dataclass(frozen=True)
class EditProtocol:
    """How a set of images is inverted and edited for measuring."""

    steps: int = 25
    """Inversion and denoising steps of every edit."""
    inversion: str = "ddpm"
    seed: int = 0
    """Picks the image sets (:func:`seeds_for`) and seeds the DDPM inversion's noise."""
    passes: PassSizes = field(default_factory=PassSizes)

    def validate(self) -> EditProtocol:
        check_count(self.steps, "--steps")
        check_inversion(self.inversion)
        self.passes.validate()
        return self


# --------------------------------------------------------------------------------- images
def seeds_for(role: str, count: int, seed: int = 0) -> list[int]:
    """Render seeds of one role (``heldout``, ``validation``, ``discovery``, ...)."""
    if role not in BENCH_ROLES:
        raise ValueError(f"unknown seed role {role!r}; one of {BENCH_ROLES}")
    start = EVAL_SEED_BASE + EVAL_OFFSETS[role] + SEED_STRIDE * int(seed)
    if count < 0 or count >= SEED_STRIDE or not 0 <= seed < 5:
        raise NoiseCLRError(
            f"--seed {seed} / count {count}: out of the benchmark's seed range (seed 0..4, count < 1e6)."
        )
    return list(range(start, start + count))


def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 3, size, size] (antialiased bilinear); unchanged when already that size."""
    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    import torch.nn.functional as F

    return F.interpolate(pixels.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(
        -1, 1
    )


def render_pixels(domain: str, seeds: Sequence[int], resolution: int) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """World renders as model pixels [N, 3, R, R] in [-1, 1] and their true labels."""
    from .world.render import render_many

    array, labels = render_many(domain, list(seeds))
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return resize_pixels(pixels, resolution), labels


def load_reader(domain: str, reader_dir: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
    """The shipped factor reader of ``domain`` (or ``reader_dir/<domain>.safetensors``)."""
    try:
        from .world.readers import FactorReader
    except ImportError:
        raise NoiseCLRError(
            "factor readers: noiseclr.world.readers is missing from this install; reinstall noiseclr."
        ) from None
    path = None
    if reader_dir is not None:
        path = Path(reader_dir) / f"{domain}.safetensors"
        if not path.is_file():
            raise NoiseCLRError(
                f"--readers {reader_dir}: no {domain}.safetensors there; pass the folder of reader weights."
            )
    return FactorReader.load(domain, path, device=device)


def reader_factor_names(reader: Any, domain: str) -> list[str]:
    from .world.factors import factor_names

    names = [getattr(f, "name", f) for f in reader.factors]
    if names != factor_names(domain):
        raise NoiseCLRError(f"reader for {domain}: reads {names}, not the registry's factors; use the matching reader.")
    return names


def read_factors(reader: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Reader's value index per factor: LongTensor [N, F] for pixels [N, 3, S, S] in [-1, 1]."""
    return reader.predict_indices(resize_pixels(pixels.detach().float().cpu(), READER_SIZE)).long().cpu()


@dataclass
class Split:
    """One set of renders, inverted once, with the reads of its inputs and reconstructions."""

    role: str
    domain: str
    seeds: list[int]
    labels: list[dict[str, str]]
    """Ground truth; only the reader-accuracy diagnostic reads it, never a method."""
    pixels: torch.Tensor
    inversion: Inversion
    input_indices: torch.Tensor
    recon_indices: torch.Tensor
    recon_kept: torch.Tensor | None = None
    recon_small: torch.Tensor | None = None
    """[B, 3, 128, 128] float32: every reconstruction at the reader's size (for :class:`PixelComparison`;
    kept only when asked)."""

    @property
    def count(self) -> int:
        return len(self.seeds)


ChunkCallback = Callable[[range, list[int], torch.Tensor, torch.Tensor], None]
"""``on_chunk(edits, images, pixels [e, b, 3, S, S], regions [e, b, h, w])``: one rendered pass of
:func:`render_and_read` (edit numbers, image numbers, decoded pixels, :func:`noiseclr.regions.edit_regions`)."""


class PixelComparison:
    """Per (edit, image): PSNR against the reconstruction at the reader's size, over the whole image and
    outside the edit's region, and the region's share of the latent grid. Pass it as ``on_chunk``.

    ``inside`` [E, B, h, w] bool gives the regions to measure outside of (e.g. the localized twin's,
    to compare a global edit on the same pixels); by default each edit's own (cells > 0)."""

    def __init__(self, recon_small: torch.Tensor, edits: int, images: int, inside: torch.Tensor | None = None):
        self.recon = recon_small
        self.given = inside
        nan = torch.full((edits, images), float("nan"), dtype=torch.float64)
        self.psnr, self.psnr_outside, self.region = nan.clone(), nan.clone(), nan.clone()
        self.inside: torch.Tensor | None = None
        """[E, B, h, w] bool: the region of every edit (filled as passes arrive)."""

    def __call__(self, edits: range, images: list[int], pixels: torch.Tensor, regions: torch.Tensor) -> None:
        edit_index = torch.as_tensor(list(edits), dtype=torch.long)
        image_index = torch.as_tensor(images, dtype=torch.long)
        if self.given is not None:
            inside = self.given[edit_index][:, image_index]
        else:
            inside = regions > 0
        if self.inside is None:
            self.inside = torch.zeros((self.psnr.shape[0], self.psnr.shape[1], *inside.shape[2:]), dtype=torch.bool)
        self.inside[edit_index.view(-1, 1), image_index.view(1, -1)] = inside
        small = resize_pixels(pixels.reshape(-1, *pixels.shape[2:]).float(), READER_SIZE)
        recon = self.recon[image_index].float().repeat(len(edit_index), 1, 1, 1)
        flat_inside = inside.reshape(-1, *inside.shape[2:])
        outside = ~upsample_region(flat_inside, READER_SIZE)
        shape = (len(edit_index), len(images))
        rows, columns = edit_index.view(-1, 1), image_index.view(1, -1)
        self.psnr[rows, columns] = masked_psnr(small, recon).view(shape)
        self.psnr_outside[rows, columns] = masked_psnr(small, recon, outside).view(shape)
        self.region[rows, columns] = flat_inside.flatten(1).to(torch.float64).mean(dim=1).view(shape)


def render_and_read(
    model: DiffusionModel,
    inversion: Inversion,
    reader: Any,
    edits: Sequence[Sequence[EditTerm]],
    passes: PassSizes = PassSizes(),
    *,
    keep_images: int = 0,
    desc: str = "editing",
    progress: bool = True,
    auto_region: AutoRegion | None = None,
    on_chunk: ChunkCallback | None = None,
    compose: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Regenerate every edit of every inverted image, decode and read: indices [E, B, F] and the first
    ``keep_images`` images of every edit (pixels [E, keep, 3, S, S], or None). ``auto_region``
    parameterises the terms' auto regions; ``on_chunk`` sees every pass (:data:`ChunkCallback`);
    ``compose`` as in :func:`noiseclr.editing.regenerate`."""
    from tqdm.auto import tqdm

    edits = [list(terms) for terms in edits]
    count, batch = len(edits), inversion.batch
    keep = min(keep_images, batch)
    per_pass = passes.trajectories_per_pass
    image_chunk = min(batch, per_pass)
    read: torch.Tensor | None = None
    kept = None
    bar = tqdm(total=count * batch, desc=desc, unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for first_image in range(0, batch, image_chunk):
            images = list(range(first_image, min(batch, first_image + image_chunk)))
            edits_per_pass = max(1, per_pass // len(images))
            for first_edit in range(0, count, edits_per_pass):
                chunk = edits[first_edit : first_edit + edits_per_pass]
                pixels, regions = render_edits(
                    model,
                    inversion,
                    chunk,
                    image_indices=images,
                    max_batch=passes.max_batch,
                    decode_batch=passes.decode_batch,
                    progress=False,
                    auto_region=auto_region,
                    return_regions=True,
                    compose=compose,
                )
                pixels = pixels.reshape(-1, *pixels.shape[2:])
                indices = read_factors(reader, pixels).view(len(chunk), len(images), -1)
                if on_chunk is not None:
                    on_chunk(
                        range(first_edit, first_edit + len(chunk)),
                        images,
                        pixels.view(len(chunk), len(images), *pixels.shape[1:]),
                        regions,
                    )
                if read is None:
                    read = torch.empty(count, batch, indices.shape[-1], dtype=torch.long)
                    if keep:
                        kept = torch.empty(count, keep, *pixels.shape[1:])
                read[first_edit : first_edit + len(chunk), images[0] : images[-1] + 1] = indices
                if kept is not None and images[0] < keep:
                    upto = min(keep, images[-1] + 1) - images[0]
                    shaped = pixels.view(len(chunk), len(images), *pixels.shape[1:])
                    kept[first_edit : first_edit + len(chunk), images[0] : images[0] + upto] = shaped[:, :upto]
                bar.update(len(chunk) * len(images))
    finally:
        bar.close()
    assert read is not None
    return read, kept


def read_axis_edits(
    model: DiffusionModel,
    split: Split,
    reader: Any,
    edits: Sequence[Sequence[EditTerm]],
    passes: PassSizes = PassSizes(),
    *,
    desc: str = "editing",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every direction's edits at both signs (adjacent, in :data:`~noiseclr.metrics.SIGNS` order) on
    every image of ``split``, read: the read values and which factors changed against the
    reconstruction, both [K, 2, B, F]."""
    from .metrics import SIGNS, changed_mask

    read, _ = render_and_read(model, split.inversion, reader, edits, passes, desc=desc, progress=progress)
    edited = read.view(len(edits) // len(SIGNS), len(SIGNS), *read.shape[1:])
    return edited, changed_mask(edited, split.recon_indices)


def prepare_split(
    model: DiffusionModel,
    reader: Any,
    domain: str,
    role: str,
    count: int,
    protocol: EditProtocol,
    *,
    keep_images: int = 0,
    keep_recon_pixels: bool = False,
    progress: bool = True,
) -> Split:
    """Render ``count`` images of ``role``, invert them once and read inputs and reconstructions
    (with ``keep_recon_pixels``, keep every reconstruction at the reader's size: ``recon_small``)."""
    passes = protocol.passes
    seeds = seeds_for(role, count, protocol.seed)
    pixels, labels = render_pixels(domain, seeds, model.resolution)
    latents = model.encode_images(pixels, batch_size=passes.decode_batch)
    generator = torch.Generator().manual_seed(protocol.seed * 1000 + sorted(BENCH_ROLES).index(role))
    inversion = invert(
        model,
        latents,
        protocol.inversion,
        protocol.steps,
        generator=generator,
        max_batch=passes.max_batch,
        progress=progress,
    )
    small = torch.zeros(count, 3, READER_SIZE, READER_SIZE) if keep_recon_pixels else None

    def keep_small(edits: range, images: list[int], pixels: torch.Tensor, regions: torch.Tensor) -> None:
        small[torch.as_tensor(images)] = resize_pixels(pixels[0].float(), READER_SIZE)

    recon, kept = render_and_read(
        model,
        inversion,
        reader,
        [[]],
        passes,
        keep_images=keep_images,
        desc=f"{role}: reconstruction",
        progress=progress,
        on_chunk=keep_small if keep_recon_pixels else None,
    )
    return Split(
        role=role,
        domain=domain,
        seeds=seeds,
        labels=labels,
        pixels=pixels,
        inversion=inversion,
        input_indices=read_factors(reader, pixels),
        recon_indices=recon[0],
        recon_kept=None if kept is None else kept[0],
        recon_small=small,
    )


REGION_MODES = ("global", "auto", "box", "auto-in-box")
"""How a scene term is localized: not at all, ``#auto``, the box a user would draw around its
object (:func:`~noiseclr.world.render.object_box`), or ``#auto`` kept inside that box."""


def object_region(
    mode: str, seeds: Sequence[int], labels: Sequence[Mapping[str, str]], part: str
) -> Region | str | None:
    """The region of a term on scene object ``part`` for every render ``(seeds[b], labels[b])`` of a
    batch, in ``mode`` (:data:`REGION_MODES`); boxes are in the renders' own pixels."""
    from .world.render import IMAGE_SIZE, object_box

    if mode not in REGION_MODES:
        raise NoiseCLRError(f"region mode {mode!r}: use one of {', '.join(REGION_MODES)}.")
    if mode in ("global", "auto"):
        return None if mode == "global" else "auto"
    boxes = [object_box("scenes", seed, part, label) for seed, label in zip(seeds, labels)]
    return Region.box(*boxes, auto=mode == "auto-in-box").on_images([(IMAGE_SIZE, IMAGE_SIZE)])


def split_diagnostics(split: Split, factor_names: Sequence[str]) -> dict[str, Any]:
    """How well the reader reads the inputs (vs. the true labels) and how much the reconstruction drifts."""
    from .world.factors import encode_labels

    truth = torch.tensor([encode_labels(split.domain, labels) for labels in split.labels], dtype=torch.long)
    accuracy = (split.input_indices == truth).to(torch.float64).mean(dim=0)
    agreement = (split.recon_indices == split.input_indices).to(torch.float64).mean(dim=0)
    return {
        "images": split.count,
        "seeds": [split.seeds[0], split.seeds[-1]] if split.seeds else [],
        "reader_accuracy_input": {n: round(float(v), 4) for n, v in zip(factor_names, accuracy)},
        "recon_agreement": {n: round(float(v), 4) for n, v in zip(factor_names, agreement)},
    }


def direction_name(factor: str, plus: str | None, minus: str | None, main_change: float) -> str:
    """Human name of what a direction does, e.g. ``glasses (+yes -no)``, ``mouth +smile`` or
    ``hair_color (mixed)``; ``plus``/``minus`` are the values the factor mostly moves to under
    each sign (None where that sign has no clear target); ``eye_color ±green`` when both signs move
    it to the same value (from different starting values)."""
    if main_change <= 0.0:
        return "no visible effect"
    if plus is not None and plus == minus:
        return f"{factor} ±{plus}"
    targets = " ".join(f"{sign}{value}" for sign, value in (("+", plus), ("-", minus)) if value is not None)
    if not targets:
        return f"{factor} (mixed)"
    return f"{factor} ({targets})" if plus is not None and minus is not None else f"{factor} {targets}"


def _target(
    edited: torch.Tensor, changed: torch.Tensor, factor: int, values: Sequence[str]
) -> tuple[str | None, float, float]:
    """The value ``factor`` mostly moves to under one sign (None unless >= 60% of its changes), its
    share of those changes, and the fraction of images it changed."""
    value, share = dominant_value(edited, changed, factor)
    fraction = float(changed[:, factor].to(torch.float64).mean())
    return (values[value] if value is not None and share >= 0.6 else None), share, fraction


@dataclass
class DirectionRecord:
    """What one direction does, measured by the factor reader (:func:`direction_records`).

    The first block is the measurement; the rest is filled in by whoever applied the direction
    (the edit setting it was measured at, the benchmark's validation pick, its gallery strip).
    :meth:`to_json` writes what is set, in the order of the fields.
    """

    index: int
    name: str
    main_factor: str | None = None
    target_value: str | None = None
    """The value the main factor mostly moves to under +scale (None: no clear target)."""
    minus_value: str | None = None
    plus_change: float | None = None
    minus_change: float | None = None
    target_share: float | None = None
    main_change: float | None = None
    purity: float | None = None
    preservation: float | None = None
    effective: bool | None = None
    discovers: bool | None = None
    changes: dict[str, float] | None = None
    main_change_ci: list[float] | None = None
    """95% Wilson interval of ``main_change`` over the images it was measured on."""
    stopped_early: bool | None = None
    """Measured on the first held-out images only: it could not be effective (bench early stop)."""
    # -- the edit setting and context
    scale: float | None = None
    """The raw lambda it was measured at (None when measured at a ``strength``)."""
    edit_strength: float | None = None
    """The calibrated edit strength (percent, :mod:`noiseclr.strength`) it was measured at; not to be
    confused with ``main_change``, the fraction of images whose main factor it changed."""
    start: float | None = None
    end: float | None = None
    images: int | None = None
    label: str | None = None
    validation: dict[str, Any] | None = None
    prompt: str | None = None
    intended_factor: str | None = None
    intended_value: str | None = None
    hit: bool | None = None
    strip: str | None = None
    random: dict[str, Any] | None = None
    """Its verdict against calibrated random directions on the same images (:func:`noiseclr.chance.judge`)."""

    _MEASURED = (
        "main_factor",
        "target_value",
        "minus_value",
        "plus_change",
        "minus_change",
        "target_share",
        "main_change",
        "purity",
        "preservation",
        "effective",
        "discovers",
        "changes",
    )

    def set_edit(
        self, scale: float | None = None, start: float = 0.0, end: float = 1.0, edit_strength: float | None = None
    ) -> DirectionRecord:
        self.scale = None if scale is None else float(scale)
        self.edit_strength = None if edit_strength is None else float(edit_strength)
        self.start, self.end = float(start), float(end)
        return self

    def edit_default(self) -> dict[str, float]:
        """The setting as a directions file's ``edit_defaults`` entry (``strength`` there is the edit strength)."""
        amount = {"strength": self.edit_strength} if self.edit_strength is not None else {"scale": self.scale}
        return {**amount, "start": float(self.start), "end": float(self.end)}

    def amount_text(self) -> str:
        """``±10%`` (a calibrated strength) or ``±12`` (a raw lambda)."""
        return f"±{abs(self.edit_strength):g}%" if self.edit_strength is not None else f"±{abs(self.scale):g}"

    def to_json(self) -> dict[str, Any]:
        """A JSON dict: the measurement (when measured, None values kept) and whatever else is set."""
        measured = self.main_factor is not None
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in ("index", "name")
            or (measured and f.name in self._MEASURED)
            or (f.name not in self._MEASURED and getattr(self, f.name) is not None)
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DirectionRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def direction_records(
    changes: torch.Tensor,
    edited: torch.Tensor,
    changed: torch.Tensor,
    factor_names: Sequence[str],
    factor_values: Sequence[Sequence[str]],
) -> list[DirectionRecord]:
    """One record per direction: main factor, the values it moves to under + and -, main change,
    purity, preservation. ``changes`` [K, F] is the axis change table; ``edited`` and ``changed``
    are per sign, [K, 2, B, F] (sign order :data:`noiseclr.metrics.SIGNS`), or K tensors [2, B_k, F]
    when directions were measured on different numbers of images."""
    metrics = direction_metrics(changes)
    winners = set(discovered_factors(changes).values())
    records = []
    for k in range(changes.shape[0]):
        main = int(metrics.main[k])
        plus, plus_share, plus_change = _target(edited[k][0], changed[k][0], main, factor_values[main])
        minus, minus_share, minus_change = _target(edited[k][1], changed[k][1], main, factor_values[main])
        main_change = float(metrics.main_change[k])
        records.append(
            DirectionRecord(
                index=k,
                name=direction_name(factor_names[main], plus, minus, main_change),
                main_factor=factor_names[main],
                target_value=plus,
                minus_value=minus,
                plus_change=round(plus_change, 4),
                minus_change=round(minus_change, 4),
                target_share=round(plus_share, 4),
                main_change=round(main_change, 4),
                purity=round(float(metrics.purity[k]), 4),
                preservation=round(float(metrics.preservation[k]), 4),
                effective=main_change >= EFFECTIVE_CHANGE - 1e-9,
                discovers=k in winners,
                changes={name: round(float(c), 4) for name, c in zip(factor_names, changes[k])},
            )
        )
    return records


def annotate_directions(
    model: DiffusionModel,
    directions: Directions,
    records: Sequence[DirectionRecord],
    *,
    domain: str,
    source: str,
    protocol: EditProtocol | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Directions:
    """A copy of ``directions`` named after what each moves, with the chosen ``edit_defaults`` (the
    scale and window, and the ``protocol``'s inversion and steps: how it was measured) and the
    per-direction measurements under ``settings['factor_annotations']``."""
    keep = (
        "index",
        "name",
        "main_factor",
        "target_value",
        "minus_value",
        "main_change",
        "purity",
        "preservation",
        "scale",
        "edit_strength",
        "start",
        "end",
        "random",
    )
    annotations = {
        "domain": domain,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **dict(extra or {}),
        "records": [{key: getattr(record, key) for key in keep} for record in records],
    }
    return replace(
        directions,
        model_id=directions.model_id or model.name,
        fingerprint=directions.fingerprint or model.fingerprint(),
        max_length=directions.max_length or model.max_length,
        names=[str(record.name) for record in records],
        domain=directions.domain or domain,
        edit_defaults=[
            {
                **r.edit_default(),
                **({"inversion": protocol.inversion, "steps": protocol.steps} if protocol is not None else {}),
            }
            for r in records
        ],
        settings={**directions.settings, ANNOTATIONS_KEY: annotations},
        path=None,
    )


RENAMED_RECORD_KEYS = {"strength": "main_change", "strength_ci": "main_change_ci"}
"""Record keys of files annotated before 2026-12-07 and their names now (a record's ``strength``
was its measured fraction, never the edit strength: that one is ``edit_strength``)."""


def upgrade_record(record: Any) -> Any:
    """A stored record with its keys under today's names (older files keep working)."""
    if not isinstance(record, dict):
        return record
    return {RENAMED_RECORD_KEYS.get(key, key): value for key, value in record.items()}


def annotations_of(directions: Directions, flag: str, domain: str) -> list[dict[str, Any]]:
    """Per-direction records stored by the bench or the demo; a one-line error if absent."""
    where = directions.path or "directions"
    annotations = directions.settings.get(ANNOTATIONS_KEY) if isinstance(directions.settings, dict) else None
    if not isinstance(annotations, dict) or not isinstance(annotations.get("records"), list):
        raise NoiseCLRError(
            f"{flag} {where}: has no factor annotations; run noiseclr bench --domain {domain} on it first and pass "
            "the annotated copy it writes (OUT/<method>/directions.safetensors)."
        )
    if annotations.get("domain") != domain:
        raise NoiseCLRError(
            f"{flag} {where}: annotated for domain {annotations.get('domain')!r}, not {domain}; pass the {domain} file."
        )
    records = [upgrade_record(record) for record in annotations["records"]]
    if len(records) != directions.count:
        raise NoiseCLRError(
            f"{flag} {where}: {len(records)} annotations for {directions.count} directions; the file is damaged."
        )
    return records
