"""One method on one domain: select each direction's edit on validation images, measure it on
held-out images (globally and, with ``--region``, localized), write OUT/<method>/."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_json, ensure_output_dir
from ..images import make_grid, save_image, tensor_to_pil
from ..measure import (
    PixelComparison,
    Split,
    annotate_directions,
    direction_records,
    render_and_read,
)
from ..metrics import (
    EFFECTIVE_CHANGE,
    SIGNS,
    EditConfig,
    axis_changed,
    change_fractions,
    changed_mask,
    clearly_ineffective,
    screen_settings,
    select_edit,
    summarize_changes,
    target_comparison,
    wilson_interval,
)
from ..model import DiffusionModel
from ..regions import region_overlay
from ..terms import EditTerm
from .methods import MethodDirections, method_dirname
from .settings import BenchSettings

log = logging.getLogger("noiseclr")


def strip_image(
    inputs: torch.Tensor,
    recon: torch.Tensor,
    edited: Sequence[torch.Tensor],
    title: str,
    *,
    labels: Sequence[str] = ("-scale", "+scale"),
):
    """Rows input / recon / each edit, one column per image."""
    rows = [[tensor_to_pil(t[i]) for i in range(t.shape[0])] for t in (inputs, recon, *edited)]
    return make_grid(rows, row_labels=["input", "recon", *labels], title=title)


def overlays(pixels: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """[n, 3, S, S] edits dimmed outside their regions [n, h, w] (the strips' "region" row)."""
    return torch.stack([region_overlay(pixels[i], inside[i].float()) for i in range(pixels.shape[0])])


def _mean(values: torch.Tensor) -> float | None:
    """Mean of the finite entries (None if there are none), rounded for JSON."""
    finite = values[torch.isfinite(values)]
    return round(float(finite.mean()), 4) if finite.numel() else None


PIXEL_KEYS = ("region_fraction", "psnr_outside_global", "psnr_outside_local", "psnr_global", "psnr_local")
"""Per (edit, image) pixel measures of localized twins (:class:`Twins`)."""


@dataclass
class Twins:
    """Edits rendered globally and with regions on the same images: the localized side of them."""

    edited: torch.Tensor
    """[E, B, F] read factor values of the localized edits."""
    kept: torch.Tensor | None
    """[E, keep, 3, S, S] the first localized images (strips)."""
    inside: torch.Tensor
    """[E, B, h, w] bool: each localized edit's final region."""
    pixels: dict[str, torch.Tensor]
    """:data:`PIXEL_KEYS` -> [E, B] float64 (NaN where undefined): the region's share of the latent grid,
    PSNR against the reconstruction outside the localized region (global and localized edit on the
    same pixels) and over the whole image."""


def render_twins(
    model: DiffusionModel,
    reader: Any,
    split: Split,
    edits: Sequence[Sequence[EditTerm]],
    local_edits: Sequence[Sequence[EditTerm]],
    images: Sequence[int],
    settings: BenchSettings,
    *,
    keep: int,
    desc: str,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, Twins]:
    """``edits`` and their localized twins on ``images`` of ``split``: (global reads [E, B, F], global kept,
    :class:`Twins`). The localized ones go first: their regions are where the global edits' pixels are
    compared too."""
    assert split.recon_small is not None, "prepare the split with keep_recon_pixels"
    passes = settings.protocol().passes
    inversion = split.inversion.select(list(images))
    recon = split.recon_small[torch.as_tensor(list(images), dtype=torch.long)]
    local = PixelComparison(recon, len(local_edits), len(images))
    local_read, local_kept = render_and_read(
        model,
        inversion,
        reader,
        local_edits,
        passes,
        keep_images=keep,
        desc=f"{desc} (localized)",
        progress=progress,
        auto_region=settings.auto_region,
        on_chunk=local,
        compose=settings.compose,
    )
    assert local.inside is not None
    other = PixelComparison(recon, len(edits), len(images), inside=local.inside)
    edited, kept = render_and_read(
        model, inversion, reader, edits, passes, keep_images=keep, desc=desc, progress=progress, on_chunk=other
    )
    pixels = {
        "region_fraction": local.region,
        "psnr_outside_global": other.psnr_outside,
        "psnr_outside_local": local.psnr_outside,
        "psnr_global": other.psnr,
        "psnr_local": local.psnr,
    }
    return edited, kept, Twins(local_read, local_kept, local.inside, pixels)


def pixel_means(pixels: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    """Mean of each pixel measure over its finite entries."""
    return {key: _mean(values) for key, values in pixels.items()}


def localized_result(
    changes: torch.Tensor,
    local_edited: Sequence[torch.Tensor],
    local_pixels: Sequence[Mapping[str, torch.Tensor]],
    heldout: Split,
    settings: BenchSettings,
    factor_names: Sequence[str],
    values: Sequence[Sequence[str]],
) -> dict[str, Any]:
    """The ``localized`` block of a method. ``local_edited[k]`` [2, B_k, F] and ``local_pixels[k]``
    (measures [2, B_k]) are direction k's localized twins on the first B_k held-out images (as its
    global measurement). Reports their own summary and, per direction and on average over the
    effective global directions, target main change, preservation and pixels, global vs localized."""
    local_changed = [changed_mask(read, heldout.recon_indices[: read.shape[1]]) for read in local_edited]
    local_changes = torch.stack([change_fractions(axis_changed(changed)) for changed in local_changed])
    records = direction_records(local_changes, local_edited, local_changed, factor_names, values)
    compared = target_comparison(changes, local_changes)
    directions = []
    for k, record in enumerate(records):
        row = {
            key: value
            for key, value in record.to_json().items()
            if key in ("index", "name", "main_factor", "main_change", "purity", "preservation", "changes")
        }
        row["target_factor"] = factor_names[int(compared["target"][k])]
        row["target_change_global"] = round(float(compared["main_change_global"][k]), 4)
        row["target_change_local"] = round(float(compared["main_change_local"][k]), 4)
        row["preservation_global"] = round(float(compared["preservation_global"][k]), 4)
        row["preservation_local"] = round(float(compared["preservation_local"][k]), 4)
        row["images"] = int(local_edited[k].shape[1])
        row.update(pixel_means(local_pixels[k]))
        directions.append(row)
    effective = [
        k for k in range(changes.shape[0]) if float(compared["main_change_global"][k]) >= EFFECTIVE_CHANGE - 1e-9
    ]
    picked = torch.as_tensor(effective, dtype=torch.long)

    def mean(key: str) -> float | None:
        return _mean(compared[key][picked].to(torch.float64)) if effective else None

    comparison: dict[str, Any] = {
        "directions": len(effective),
        "target_change_global": mean("main_change_global"),
        "target_change_local": mean("main_change_local"),
        "preservation_global": mean("preservation_global"),
        "preservation_local": mean("preservation_local"),
    }
    if effective:
        comparison.update(
            pixel_means({key: torch.cat([local_pixels[k][key].flatten() for k in effective]) for key in PIXEL_KEYS})
        )
        comparison["target_change_drop"] = round(
            comparison["target_change_global"] - comparison["target_change_local"], 4
        )
    return {
        "region": settings.region,
        "auto_region": asdict(settings.auto_region),
        "comparison": comparison,
        "summary": summarize_changes(local_changes, factor_names),
        "directions": directions,
    }


def _axis_changes(
    model: DiffusionModel,
    reader: Any,
    split: Split,
    edits: list[list[EditTerm]],
    images: list[int],
    desc: str,
    settings: BenchSettings,
    *,
    progress: bool,
    keep: int = 0,
    local_edits: list[list[EditTerm]] | None = None,
):
    """Read every edit (both signs adjacent) on ``images`` of ``split``: changes [E/2, F], edited, changed, kept,
    and with ``local_edits`` (their localized twins) the :class:`Twins` (else None)."""
    twins = None
    if local_edits is None:
        inversion = split.inversion.select(images)
        edited, kept = render_and_read(
            model, inversion, reader, edits, settings.protocol().passes, keep_images=keep, desc=desc, progress=progress
        )
    else:
        edited, kept, twins = render_twins(
            model, reader, split, edits, local_edits, images, settings, keep=keep, desc=desc, progress=progress
        )
    edited = edited.view(len(edits) // len(SIGNS), len(SIGNS), *edited.shape[1:])
    changed = changed_mask(edited, split.recon_indices[images])
    return change_fractions(axis_changed(changed)), edited, changed, kept, twins


def _localized_edits(
    method: MethodDirections, selections: Sequence[Any], settings: BenchSettings, directions: Sequence[int]
) -> list[list[EditTerm]] | None:
    """The held-out picks of ``directions`` with regions (--region), or None when not localized."""
    if not settings.localized:
        return None
    return [[method.term(k, selections[k].config, sign, region=settings.region)] for k in directions for sign in SIGNS]


@dataclass
class Selection:
    """Step 1 of a method: every direction's pick on the validation images."""

    selections: list[Any]
    validation_changes: torch.Tensor
    survivors: list[list[int]]
    screened: int


def select_method_edits(
    model: DiffusionModel,
    reader: Any,
    method: MethodDirections,
    validation: Split,
    settings: BenchSettings,
    grid: list[EditConfig],
    *,
    progress: bool,
) -> Selection:
    """The grid, at both signs, on validation images only: every setting on a first slice
    (screening), the best keep_settings per direction on the rest; then each direction's pick."""
    count = method.count
    screened = min(validation.count, max(4, math.ceil(settings.screen_fraction * validation.count)))
    first, rest = list(range(screened)), list(range(screened, validation.count))
    edits = [[method.term(k, config, sign)] for k in range(count) for config in grid for sign in SIGNS]
    screen, *_ = _axis_changes(
        model, reader, validation, edits, first, f"{method.name}: validation grid", settings, progress=progress
    )
    screen = screen.view(count, len(grid), -1)
    survivors = (
        screen_settings(screen, settings.keep_settings, settings.min_preservation)
        if rest
        else [list(range(len(grid)))] * count
    )
    validation_changes = screen.clone()
    if rest:
        edits = [[method.term(k, grid[g], sign)] for k in range(count) for g in survivors[k] for sign in SIGNS]
        more, *_ = _axis_changes(
            model,
            reader,
            validation,
            edits,
            rest,
            f"{method.name}: validation, kept settings",
            settings,
            progress=progress,
        )
        cursor = 0
        for k in range(count):
            for g in survivors[k]:
                validation_changes[k, g] = (screen[k, g] * len(first) + more[cursor] * len(rest)) / validation.count
                cursor += 1
    selections = []
    for k in range(count):
        pick = select_edit(
            validation_changes[k, survivors[k]], [grid[g] for g in survivors[k]], settings.min_preservation
        )
        selections.append(replace(pick, index=survivors[k][pick.index]))
    return Selection(selections, validation_changes, survivors, screened)


@dataclass
class Measurement:
    """Step 2 of a method: the picks measured on the held-out images."""

    changes: torch.Tensor
    edited: list[torch.Tensor]
    changed: list[torch.Tensor]
    kept: torch.Tensor | None
    twins: Twins | None
    local_edited: list[torch.Tensor] | None
    local_pixels: list[dict[str, torch.Tensor]] | None
    stopped: torch.Tensor
    head_count: int


def measure_method_edits(
    model: DiffusionModel,
    reader: Any,
    method: MethodDirections,
    heldout: Split,
    settings: BenchSettings,
    selections: Sequence[Any],
    *,
    progress: bool,
) -> Measurement:
    """The picks, at both signs, on held-out images: a first slice for every direction; the rest
    only for directions that could still be effective (95% upper bound of every factor's
    change at or above the effective main change). With --region, each also localized, on the
    same images."""
    count = method.count
    head_count = heldout.count if not settings.early_stop else min(heldout.count, max(20, math.ceil(heldout.count / 4)))
    head, tail = list(range(head_count)), list(range(head_count, heldout.count))
    edits = [[method.term(k, selection.config, sign)] for k, selection in enumerate(selections) for sign in SIGNS]
    changes, edited_head, changed_head, kept, twins = _axis_changes(
        model,
        reader,
        heldout,
        edits,
        head,
        f"{method.name}: held-out",
        settings,
        progress=progress,
        keep=settings.strip_images,
        local_edits=_localized_edits(method, selections, settings, range(count)),
    )
    local_edited = None if twins is None else [twins.edited[2 * k : 2 * k + 2] for k in range(count)]
    local_pixels = (
        None
        if twins is None
        else [{key: v[2 * k : 2 * k + 2] for key, v in twins.pixels.items()} for k in range(count)]
    )
    stopped = clearly_ineffective(changes, head_count) if tail else torch.zeros(count, dtype=torch.bool)
    going = [k for k in range(count) if not bool(stopped[k])]
    edited: list[torch.Tensor] = list(edited_head)
    changed: list[torch.Tensor] = list(changed_head)
    if tail and going:
        edits = [[method.term(k, selections[k].config, sign)] for k in going for sign in SIGNS]
        _, edited_tail, changed_tail, _, twins_tail = _axis_changes(
            model,
            reader,
            heldout,
            edits,
            tail,
            f"{method.name}: held-out, rest",
            settings,
            progress=progress,
            local_edits=_localized_edits(method, selections, settings, going),
        )
        for position, k in enumerate(going):
            edited[k] = torch.cat([edited_head[k], edited_tail[position]], dim=1)
            changed[k] = torch.cat([changed_head[k], changed_tail[position]], dim=1)
            changes[k] = change_fractions(axis_changed(changed[k]))
            if local_edited is not None and local_pixels is not None and twins_tail is not None:
                rows = slice(2 * position, 2 * position + 2)
                local_edited[k] = torch.cat([local_edited[k], twins_tail.edited[rows]], dim=1)
                local_pixels[k] = {
                    key: torch.cat([v, twins_tail.pixels[key][rows]], dim=1) for key, v in local_pixels[k].items()
                }
    return Measurement(changes, edited, changed, kept, twins, local_edited, local_pixels, stopped, head_count)


def _save_strip(
    k: int, record: Any, selection: Any, measured: Measurement, heldout: Split, folder: Path, out: Path
) -> None:
    """Direction ``k``'s strip (held-out images, both signs, and with --region its localized twins)."""
    kept, twins = measured.kept, measured.twins
    assert kept is not None and heldout.recon_kept is not None
    keep = kept.shape[1]
    title = f"{k}: {record.name} ({selection.config.describe()})"
    magnitude = f"{abs(selection.config.scale):g}{'%' if selection.config.unit == 'strength' else ''}"
    rows, labels = [kept[2 * k + 1], kept[2 * k]], [f"-{magnitude}", f"+{magnitude}"]
    if twins is not None and twins.kept is not None:
        rows += [twins.kept[2 * k + 1], twins.kept[2 * k], overlays(twins.kept[2 * k], twins.inside[2 * k, :keep])]
        labels += [f"local -{magnitude}", f"local +{magnitude}", "region +"]
    grid_image = strip_image(heldout.pixels[:keep], heldout.recon_kept[:keep], rows, title, labels=labels)
    path = save_image(grid_image, folder / "strips" / f"direction-{k:03d}.png")
    record.strip = str(path.relative_to(out))


def method_records(
    method: MethodDirections,
    selection: Selection,
    measured: Measurement,
    heldout: Split,
    factor_names: Sequence[str],
    values: Sequence[Sequence[str]],
    folder: Path,
    out: Path,
) -> list[Any]:
    """Per-direction records of the held-out measurement, with their picks, labels and strips."""
    changes, changed, stopped = measured.changes, measured.changed, measured.stopped
    records = direction_records(changes, measured.edited, changed, factor_names, values)
    for k, (record, pick) in enumerate(zip(records, selection.selections)):
        images = int(changed[k].shape[1])
        main = factor_names.index(record.main_factor)
        record.images = images
        record.main_change_ci = [round(v, 4) for v in wilson_interval(float(changes[k, main]) * images, images)]
        record.stopped_early = bool(stopped[k])
        record.set_edit(**pick.config.to_json())
        record.label = method.label(k)
        record.validation = pick.to_json(factor_names)
        if method.prompts is not None:
            factor, value, caption = method.prompts[k]
            record.prompt, record.intended_factor, record.intended_value = caption, factor, value
            record.hit = record.main_factor == factor
        if measured.kept is not None and heldout.recon_kept is not None:
            _save_strip(k, record, pick, measured, heldout, folder, out)
    return records


def method_summary(
    method: MethodDirections, changes: torch.Tensor, records: Sequence[Any], factor_names: Sequence[str]
) -> dict[str, Any]:
    """The method's summary: the changes' summary, duplicate pairs, median response, prompt hit rate."""
    count = method.count
    summary = summarize_changes(changes, factor_names)
    if method.duplicates is not None:
        involved = {int(i) for pair in method.duplicates for i in pair[:2]}
        summary["duplicate_pairs"] = method.duplicates
        summary["duplicate_fraction"] = len(involved) / max(1, count)
    if method.responses is not None:
        summary["response_median"] = float(torch.tensor(method.responses).median())
    if method.prompts is not None:
        summary["intended_hit_rate"] = sum(bool(r.hit) for r in records) / max(1, len(records))
    return summary


def write_method_result(
    model: DiffusionModel,
    method: MethodDirections,
    validation: Split,
    heldout: Split,
    settings: BenchSettings,
    grid: list[EditConfig],
    selection: Selection,
    measured: Measurement,
    records: list[Any],
    summary: dict[str, Any],
    factor_names: Sequence[str],
    values: Sequence[Sequence[str]],
    *,
    folder: Path,
    out: Path,
    fingerprint: str,
    started: float,
) -> dict[str, Any]:
    """Step 3 of a method: its annotated directions file and OUT/<method>/result.json; the result."""
    count = method.count
    directions_file = None
    if method.directions is not None:
        annotated = annotate_directions(
            model,
            method.directions,
            records,
            domain=heldout.domain,
            source=f"noiseclr bench ({method.name})",
            protocol=settings.protocol(),
            extra={
                "reader": "bench",
                "heldout_images": heldout.count,
                "steps": settings.steps,
                "inversion": settings.inversion,
            },
        )
        directions_file = str(annotated.save(folder / "directions.safetensors").relative_to(out))
    stopped = measured.stopped
    result = {
        "method": method.name,
        "source": method.source,
        "fingerprint": fingerprint,
        "summary": summary,
        "directions_file": directions_file,
        "grid": [config.to_json() for config in grid],
        "validation_seeds": [validation.seeds[0], validation.seeds[-1]],
        "heldout_seeds": [heldout.seeds[0], heldout.seeds[-1]],
        "validation_changes": [
            [[round(float(v), 4) for v in row] for row in table] for table in selection.validation_changes
        ],
        "validation_survivors": selection.survivors,
        "screening": {
            "validation_images": selection.screened,
            "heldout_head": measured.head_count,
            "stopped_early": [k for k in range(count) if bool(stopped[k])],
        },
        "directions": [record.to_json() for record in records],
        "seconds": round(time.monotonic() - started, 1),
    }
    if measured.local_edited is not None and measured.local_pixels is not None:
        result["localized"] = localized_result(
            measured.changes, measured.local_edited, measured.local_pixels, heldout, settings, factor_names, values
        )
    atomic_write_json(folder / "result.json", result)
    return result


def evaluate_method(
    model: DiffusionModel,
    reader: Any,
    method: MethodDirections,
    validation: Split,
    heldout: Split,
    settings: BenchSettings,
    out: Path,
    *,
    factor_names: Sequence[str],
    fingerprint: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Select each direction's edit on ``validation``, measure it on ``heldout``, write OUT/<method>/."""
    from ..world.factors import domain_factors

    started = time.monotonic()
    grid = settings.grid()
    folder = ensure_output_dir(out / method_dirname(method.name))
    log.info(
        "%s: %d directions x %d edit settings on %d validation images",
        method.name,
        method.count,
        len(grid),
        validation.count,
    )
    selection = select_method_edits(model, reader, method, validation, settings, grid, progress=progress)
    measured = measure_method_edits(model, reader, method, heldout, settings, selection.selections, progress=progress)
    values = [factor.values for factor in domain_factors(heldout.domain)]
    records = method_records(method, selection, measured, heldout, factor_names, values, folder, out)
    summary = method_summary(method, measured.changes, records, factor_names)
    return write_method_result(
        model,
        method,
        validation,
        heldout,
        settings,
        grid,
        selection,
        measured,
        records,
        summary,
        factor_names,
        values,
        folder=folder,
        out=out,
        fingerprint=fingerprint,
        started=started,
    )
