"""Explore a directions file: for each direction, a strip of edits over a few images and scales.

Images are inverted once; every direction's edits at every scale are then rendered in batched
passes (one UNet call per denoising step for a whole chunk of directions). The output folder
holds one PNG grid per direction (rows: images; columns: input, then the scales, where scale 0
is the plain reconstruction) and one static ``index.html`` gallery that opens in any browser.

With ``--region auto`` (or a mask image) every edit is localized (:mod:`noiseclr.regions`) and each
strip ends with two more columns at its strongest amount: the same edit applied globally, and the
localized edit's region (the picture dimmed outside it) -- input, global edit, localized edit and
region side by side.
"""

from __future__ import annotations

import html
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .chance import describe
from .directions import Directions
from .editing import EditSettings, render_edits
from .errors import NoiseCLRError
from .fileio import atomic_write_text, ensure_output_dir
from .images import ImageSet, load_image_folder, make_grid, save_image, tensor_to_pil
from .inversion import INVERSION_METHODS, Inversion, check_steps, invert
from .model import DiffusionModel
from .options import check_count, check_inversion, check_max_batch, field_default, option, positive_int, window
from .regions import AutoRegion, Region, as_region, region_overlay
from .strength import repeats
from .terms import EDIT_PROTOCOL_KEYS, DirectionTerm, edit_protocol, stored_defaults


@dataclass
class ExploreSettings:
    """What :func:`explore` renders."""

    scales: tuple[float, ...] | None = option(
        None,
        flag="--scales",
        help="edit scales",
        type=float,
        nargs="+",
        default_text="-2, -1, 0, 1 and 2 times each direction's stored scale, else -6 -3 0 3 6",
    )
    """Raw lambdas, one column each; 0 shows the reconstruction. None (and no ``strengths``): multiples
    of each direction's stored strength or scale (:data:`STORED_MULTIPLES`), or :data:`FALLBACK_SCALES`."""
    strengths: tuple[float, ...] | None = option(
        None,
        flag="--strengths",
        help="calibrated strengths (percent) instead of --scales",
        type=float,
        nargs="+",
        metavar="PERCENT",
        default_text="",
    )
    """Calibrated strengths (percent, :mod:`noiseclr.strength`), one column each, the same for every direction."""
    num_images: int = option(4, flag="--num-images", help="images per strip", type=positive_int)
    """Images per strip (the first ones of the folder, by name)."""
    indices: list[int] | None = option(
        None, flag="--indices", help="only these directions", type=int, nargs="+", default_text=""
    )
    """Directions to show (default: all)."""
    window: tuple[float, float] | None = option(
        None,
        flag="--window",
        help="active part of the schedule",
        type=window,
        metavar="START:END",
        default_text="stored per direction, else 0:1",
    )
    """Active part of the schedule; None uses each direction's stored default, else 0:1."""
    steps: int | None = option(
        None,
        flag="--steps",
        help="inversion and denoising steps",
        type=positive_int,
        default_text="as stored with the directions, else 50",
    )
    inversion: str | None = option(
        None,
        flag="--inversion",
        help="ddim or ddpm",
        choices=list(INVERSION_METHODS),
        default_text="as stored with the directions (how they were measured), else ddim",
    )
    seed: int = option(0, flag="--seed", help="seed of the DDPM inversion's noise", default_text="")
    directions_per_pass: int = option(
        8, flag="--directions-per-pass", help="directions rendered together (memory)", type=positive_int
    )
    """Directions rendered together (memory: E*B trajectories per UNet call)."""
    max_batch: int | None = option(
        None, flag="--max-batch", help="most UNet rows per call (memory cap)", type=positive_int, default_text=""
    )
    region: str | None = option(
        None,
        flag="--region",
        metavar="auto|MASK",
        default_text="none: global edits",
        help="localize every edit (auto, or a mask image: white = region); strips add the global "
        "edit and the region at the strongest amount",
    )
    """``"auto"``, a mask image path, or None (global edits, today's strips)."""
    auto_region: AutoRegion = field(default_factory=AutoRegion)
    """Parameters of auto regions (``--region-top``, ``--region-smoothing``)."""

    def __post_init__(self) -> None:
        if self.scales is not None and not self.scales:
            raise NoiseCLRError("--scales: give at least one scale, e.g. --scales -6 -3 0 3 6.")
        if self.strengths is not None and not self.strengths:
            raise NoiseCLRError("--strengths: give at least one strength, e.g. --strengths -15 0 15.")
        if self.scales is not None and self.strengths is not None:
            raise NoiseCLRError("--scales and --strengths: give one of them (raw lambdas or calibrated percents).")
        check_count(self.num_images, "--num-images", why="must be at least 1.")
        if self.inversion is not None:
            check_inversion(self.inversion)
        if self.steps is not None:
            check_count(self.steps, "--steps", why="must be a whole number of at least 1; 50 is typical.")
        check_count(self.directions_per_pass, "--directions-per-pass", why="must be at least 1.")
        check_max_batch(self.max_batch)
        self.auto_region.validate()


FALLBACK_SCALES = (-6.0, -3.0, 0.0, 3.0, 6.0)
"""Columns when neither ``--scales`` nor a stored scale is there."""
STORED_MULTIPLES = (-2.0, -1.0, 0.0, 1.0, 2.0)
"""Columns as multiples of a direction's stored scale (the scale it was measured at)."""


@dataclass
class ExploreResult:
    out: Path
    index_html: Path
    strips: list[Path] = field(default_factory=list)
    seconds: float = 0.0


Column = tuple[float, str]
"""One strip column: an amount and its unit (``scale`` = raw lambda, ``strength`` = percent)."""


def _columns_for(directions: Directions, index: int, settings: ExploreSettings) -> list[Column]:
    if settings.strengths is not None:
        return [(float(v), "strength") for v in settings.strengths]
    if settings.scales is not None:
        return [(float(v), "scale") for v in settings.scales]
    stored = stored_defaults(directions, index)
    for unit in ("strength", "scale"):
        if stored.get(unit):
            magnitude = abs(float(stored[unit]))
            return [(m * magnitude, unit) for m in STORED_MULTIPLES]
    return [(v, "scale") for v in FALLBACK_SCALES]


def _label(column: Column) -> str:
    amount, unit = column
    if amount == 0:
        return "0 (recon)"
    return f"{amount:+g}%" if unit == "strength" else f"{amount:+g}"


def _term(
    directions: Directions, index: int, column: Column, window: tuple[float, float], region: Region | None = None
) -> DirectionTerm:
    amount, unit = column
    if unit == "strength":
        return DirectionTerm(directions, index, None, *window, strength=amount, region=region)
    return DirectionTerm(directions, index, amount, *window, region=region)


def _strongest(columns: Sequence[Column]) -> Column:
    """The column the global comparison and the region are shown at: the largest amount, + before -."""
    return max(columns, key=lambda column: (abs(column[0]), column[0] > 0))


def _explore_region(settings: ExploreSettings) -> Region | None:
    if settings.region is None:
        return None
    try:
        return as_region(settings.region)
    except NoiseCLRError as exc:
        raise NoiseCLRError(f"--region {settings.region}: {exc}") from None


def _window_for(directions: Directions, index: int, settings: ExploreSettings) -> tuple[float, float]:
    if settings.window is not None:
        return settings.window
    stored = stored_defaults(directions, index)
    return float(stored.get("start", 0.0)), float(stored.get("end", 1.0))


def _stored_protocol(directions: Directions, indices: Sequence[int], settings: ExploreSettings) -> tuple[str, int]:
    """Inversion and steps: as given, else as stored with the directions (how they were measured)."""
    stored: dict = {}
    for index in indices:
        stored = {
            k: v for k, v in stored_defaults(directions, index).items() if k in EDIT_PROTOCOL_KEYS and v is not None
        }
        if stored:
            break
    given = {"inversion": settings.inversion or None, "steps": settings.steps or None}
    protocol = edit_protocol(given, stored, {key: field_default(EditSettings, key) for key in EDIT_PROTOCOL_KEYS})
    return protocol["inversion"], int(protocol["steps"])


def explore(
    model: DiffusionModel,
    directions: Directions | str | Path,
    images: ImageSet | str | Path,
    out: str | Path,
    settings: ExploreSettings | None = None,
    *,
    progress: bool = True,
) -> ExploreResult:
    """Render a strip per direction and an HTML gallery into ``out``."""
    started = time.monotonic()
    settings = settings or ExploreSettings()
    if not isinstance(directions, Directions):
        directions = Directions.load(directions)
    directions.check_compatible(model)
    indices = list(range(directions.count)) if settings.indices is None else list(settings.indices)
    for index in indices:
        directions.check_index(index)
    region = _explore_region(settings)
    inversion_method, steps = _stored_protocol(directions, indices, settings)
    check_steps(model, steps)
    out = ensure_output_dir(out)
    if not isinstance(images, ImageSet):
        images = load_image_folder(images, model.resolution, min_count=1)
    count = min(settings.num_images, len(images))
    pixels = images.pixels[:count]
    names = [p.name for p in images.paths[:count]]
    columns_of = {index: _columns_for(directions, index, settings) for index in indices}

    latents = model.encode_images(pixels)
    inversion = invert(
        model,
        latents,
        inversion_method,
        steps,
        generator=torch.Generator().manual_seed(settings.seed),
        progress=progress,
    )
    needs_reconstruction = any(amount == 0 for columns in columns_of.values() for amount, _ in columns)
    reconstruction = render_edits(model, inversion, [[]], progress=False)[0] if needs_reconstruction else None

    strips: list[Path] = []
    cards: dict[int, str] = {}
    chunks = [
        indices[i : i + settings.directions_per_pass] for i in range(0, len(indices), settings.directions_per_pass)
    ]
    for chunk in chunks:
        pairs, compared, rendered, regions = _render_chunk(
            model, inversion, directions, chunk, columns_of, settings, region, progress
        )
        for index in chunk:
            columns, labels = _strip_columns(
                index, pixels, reconstruction, (pairs, compared, rendered, regions), columns_of[index]
            )
            rows = [[tensor_to_pil(column[b]) for column in columns] for b in range(count)]
            start, end = _window_for(directions, index, settings)
            where = f", localized: {region.label()}" if region is not None else ""
            title = f"{directions.label(index)}   (window {start:g}:{end:g}, {inversion_method} inversion{where})"
            grid = make_grid(rows, column_labels=labels, title=title)
            path = save_image(grid, out / f"direction-{index:03d}.png")
            strips.append(path)
            stored = settings.scales is None and settings.strengths is None
            commands = edit_commands(
                model,
                directions,
                index,
                images.paths[0] if images.paths else None,
                out,
                columns_of[index],
                (start, end),
                inversion_method,
                steps,
                stored,
                region=settings.region,
            )
            cards[index] = _card(directions, index, path.name, commands, _verdict(directions, index))
    page = _page(
        directions,
        model,
        names,
        _grouped(directions, cards),
        inversion_method,
        steps,
        settings.scales is None and settings.strengths is None,
        region=region,
    )
    index_html = atomic_write_text(out / "index.html", page)
    return ExploreResult(out=out, index_html=index_html, strips=strips, seconds=time.monotonic() - started)


def _render_chunk(
    model: DiffusionModel,
    inversion: Inversion,
    directions: Directions,
    chunk: list[int],
    columns_of: dict[int, list[Column]],
    settings: ExploreSettings,
    region: Region | None,
    progress: bool,
) -> tuple[list, list[int], torch.Tensor | None, torch.Tensor | None]:
    """Every non-zero column of the chunk's directions in one batched pass: (pairs, compared, images, regions)."""
    pairs = [(index, column) for index in chunk for column in columns_of[index] if column[0] != 0]
    edits = [
        [_term(directions, index, column, _window_for(directions, index, settings), region)] for index, column in pairs
    ]
    # Localized strips: the strongest column once more, globally, to compare with.
    compared = [index for index in chunk if region is not None and _strongest(columns_of[index])[0] != 0]
    edits += [
        [_term(directions, index, _strongest(columns_of[index]), _window_for(directions, index, settings))]
        for index in compared
    ]
    shown = ", ".join(str(index) for index in chunk)
    rendered, regions = (
        render_edits(
            model,
            inversion,
            edits,
            max_batch=settings.max_batch,
            progress=progress,
            auto_region=settings.auto_region,
            return_regions=True,
            desc=f"strips of direction{'s' if len(chunk) > 1 else ''} {shown}",
        )
        if edits
        else (None, None)
    )
    return pairs, compared, rendered, regions


def _strip_columns(
    index: int,
    pixels: torch.Tensor,
    reconstruction: torch.Tensor | None,
    chunk_render: tuple,
    columns: list[Column],
) -> tuple[list[torch.Tensor], list[str]]:
    """One strip's image columns and labels: input, each strength, and for a localized strip the
    strongest column global and its region overlay."""
    pairs, compared, rendered, regions = chunk_render
    count = pixels.shape[0]
    images: list[torch.Tensor] = [pixels]
    labels = ["input"] + [_label(c) for c in columns]
    for column in columns:
        images.append(reconstruction if column[0] == 0 else rendered[pairs.index((index, column))])
    if index in compared:
        strongest = _strongest(columns)
        local = pairs.index((index, strongest))
        images.append(rendered[len(pairs) + compared.index(index)])
        images.append(torch.stack([region_overlay(rendered[local][b], regions[local][b]) for b in range(count)]))
        labels += [f"{_label(strongest)} global", f"{_label(strongest)} region"]
    return images, labels


def edit_commands(
    model: DiffusionModel,
    directions: Directions,
    index: int,
    image: Path | None,
    gallery: Path,
    columns: Sequence[Column],
    window: tuple[float, float],
    inversion: str,
    steps: int,
    stored_setting: bool,
    region: str | None = None,
) -> list[str]:
    """``noiseclr edit`` commands that apply direction ``index`` as its strip does (its strongest
    column, or the stored setting; with its region), with + and with -, runnable from the gallery
    folder (paths relative to it)."""

    def here(path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), Path(gallery).resolve())

    source = here(directions.path) if directions.path else "directions.safetensors"
    stored = stored_defaults(directions, index)
    window_part = f"@{window[0]:g}:{window[1]:g}" if window != (0.0, 1.0) else ""
    if stored_setting and stored:
        amount, unit = (
            (stored["strength"], "strength") if stored.get("strength") is not None else (stored.get("scale"), "scale")
        )
        specs = [
            f"{source}:{index}"
        ]  # the stored setting itself; its opposite below (an amount drops the stored window)
        if amount is not None:
            specs.append(f"{source}:{index}={-float(amount):g}{'%' if unit == 'strength' else ''}{window_part}")
    else:
        amount, unit = max(columns, key=lambda column: abs(column[0]))
        specs = [
            f"{source}:{index}={sign * abs(amount):g}{'%' if unit == 'strength' else ''}{window_part}"
            for sign in (1, -1)
        ]
    if region is not None:
        mark = "#auto" if region == "auto" else f"#{here(Path(region))}"
        specs = [spec + mark for spec in specs]
    parts = ["noiseclr edit"]
    if model.name != "noiseclr/embedded-base":
        parts.append(f"--model {shlex.quote(model.name)}")
    parts.append(f"--image {shlex.quote(here(image)) if image else 'IMAGE.png'}")
    tail = [f"--inversion {inversion}", f"--steps {steps}", "--out edited"]
    # Both signs: a direction is an axis, and one sign may already be where an image is.
    return [" ".join([*parts, f"--direction {shlex.quote(spec)}", *tail]) for spec in specs]


def _records(directions: Directions) -> list[dict] | None:
    """The per-direction measurements a demo or bench stored in the file (None without them)."""
    annotations = directions.settings.get("factor_annotations") if isinstance(directions.settings, dict) else None
    records = annotations.get("records") if isinstance(annotations, dict) else None
    return records if isinstance(records, list) and len(records) == directions.count else None


def _verdict(directions: Directions, index: int) -> str:
    """`` · beats random`` / `` · within chance`` from the stored comparison, and the repeat it is."""
    parts = []
    records = _records(directions)
    random = records[index].get("random") if records and isinstance(records[index], dict) else None
    if isinstance(random, dict) and "beats_random" in random:
        parts.append(describe(random))
    repeated = repeats((directions.calibration or {}).get("duplicates") or []).get(index)
    if repeated is not None:
        parts.append(f"repeats direction {repeated[0]} (cos {repeated[1]:+.2f})")
    return "".join(f" · {part}" for part in parts)


def _grouped(directions: Directions, cards: dict[int, str]) -> list[str]:
    """Cards grouped by the factor each direction moves (from the stored measurements), so repeats
    sit side by side; in index order without measurements."""
    records = _records(directions)
    if records is None:
        return [cards[index] for index in cards]
    groups: dict[str, list[int]] = {}
    for index in cards:
        factor = records[index].get("main_factor") if isinstance(records[index], dict) else None
        groups.setdefault(str(factor or "unnamed"), []).append(index)
    out = []
    for factor, members in groups.items():
        out.append(f"<h2>{html.escape(factor)}: {len(members)} direction{'s' if len(members) > 1 else ''}</h2>")
        out += [cards[index] for index in members]
    return out


def _card(directions: Directions, index: int, image: str, commands: Sequence[str], verdict: str = "") -> str:
    shown = "<br>".join(f"<code>{html.escape(command)}</code>" for command in commands)
    return (
        f'<figure id="d{index}"><figcaption><b>{html.escape(directions.label(index))}</b>{html.escape(verdict)}<br>'
        f"{shown}</figcaption>"
        f'<a href="{html.escape(image)}"><img src="{html.escape(image)}" loading="lazy" alt="direction {index}"></a></figure>'
    )


def _page(
    directions: Directions,
    model: DiffusionModel,
    names: Sequence[str],
    cards: list[str],
    inversion: str,
    steps: int,
    stored: bool,
    region: Region | None = None,
) -> str:
    title = f"NoiseCLR directions: {directions.path.name if directions.path else 'directions'}"
    columns = (
        "-2, -1, 0, +1 and +2 times each direction's stored strength (or scale)"
        if stored
        else "the edits in the column heads (a % is a calibrated strength, a plain number a raw scale)"
    )
    intro = (
        f"{directions.count} directions{f' for {html.escape(directions.domain)}' if directions.domain else ''}, "
        f"model <code>{html.escape(model.name)}</code>. Each strip: one row per image "
        f"({html.escape(', '.join(names))}); columns are the input, then {columns} "
        "(0 = the image inverted and regenerated without any direction, so differences from it are the edit). "
        f"{steps} steps, {inversion.upper()} inversion. "
        + (
            f"Every edit is localized ({html.escape(region.label())} regions); the last two columns are the strongest "
            "edit applied globally and the localized edit's region (dimmed outside). "
            if region is not None
            else ""
        )
        + "Each command below applies the direction as its strip does; run it from this folder."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
figure {{ margin: 0 0 2rem 0; }} figcaption {{ margin-bottom: .4rem; }}
img {{ max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }}
code {{ background: #f3f3f3; padding: 0 .3em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{intro}</p>
{chr(10).join(cards)}
</body></html>
"""
