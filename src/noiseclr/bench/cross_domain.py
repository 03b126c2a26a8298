"""Cross-domain: face and cat directions alone and together on scene renders (OUT/cross-domain/)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..directions import Directions
from ..errors import NoiseCLRError
from ..fileio import atomic_write_json, ensure_output_dir
from ..images import save_image
from ..measure import (
    PixelComparison,
    Split,
    object_region,
    annotations_of,
    prepare_split,
    reader_factor_names,
    render_and_read,
    split_diagnostics,
)
from ..metrics import (
    EFFECTIVE_CHANGE,
    SIGNS,
    alone_interference,
    pair_interference,
    part_changes,
)
from ..model import DiffusionModel
from ..terms import DirectionTerm, EditTerm, stored_defaults
from .evaluate import Twins, overlays, pixel_means, render_twins, strip_image
from .settings import BenchSettings

# ---------------------------------------------------------------------------- cross-domain


def pick_cross_directions(records: Sequence[Mapping[str, Any]], limit: int) -> list[int]:
    """Best direction per factor (by main change * purity; background left out), strongest first, at most ``limit``."""
    best: dict[str, Mapping[str, Any]] = {}
    for record in records:
        factor = record.get("main_factor")
        if factor in (None, "background") or not record.get("main_change"):
            continue
        score = float(record["main_change"]) * float(record["purity"])
        if factor not in best or score > float(best[factor]["main_change"]) * float(best[factor]["purity"]):
            best[factor] = record
    ranked = sorted(best.values(), key=lambda r: (-float(r["main_change"]) * float(r["purity"]), int(r["index"])))
    effective = [r for r in ranked if float(r["main_change"]) >= EFFECTIVE_CHANGE]
    chosen = effective or ranked
    return [int(r["index"]) for r in chosen[:limit]]


def _decode_labels(domain: str, indices: torch.Tensor) -> list[dict[str, str]]:
    from ..world.factors import decode_labels

    return [decode_labels(domain, row) for row in indices.tolist()]


Loaded = dict[str, tuple[Directions, list[dict[str, Any]], list[int]]]
"""``face``/``cat`` -> (directions, their annotation records, the picked indices)."""


def load_cross_files(
    model: DiffusionModel,
    faces_file: str | Path | Directions,
    cats_file: str | Path | Directions,
    settings: BenchSettings,
) -> Loaded:
    """Both files, checked against the model, with their annotations and picked directions."""
    loaded = {}
    for part, domain, given in (("face", "faces", faces_file), ("cat", "cats", cats_file)):
        directions = given if isinstance(given, Directions) else Directions.load(given)
        try:
            directions.check_compatible(model)
        except NoiseCLRError as exc:
            raise NoiseCLRError(f"--cross-domain: {exc}") from None
        records = annotations_of(directions, "--cross-domain", domain)
        picked = pick_cross_directions(records, settings.cross_per_domain)
        if not picked:
            raise NoiseCLRError(
                f"--cross-domain {directions.path or domain}: no direction moves a {part} factor other than the background; "
                "pass a better directions file."
            )
        loaded[part] = (directions, records, picked)
    return loaded


def cross_term(loaded: Loaded, part: str, index: int, sign: float, region: Any = None) -> DirectionTerm:
    """Direction ``index`` of ``part``'s file at its stored edit (strength or scale, window), signed."""
    directions, records, _ = loaded[part]
    record = records[index]
    defaults = stored_defaults(directions, index) or record
    window = (float(defaults.get("start", 0.0)), float(defaults.get("end", 1.0)))
    if defaults.get("strength") is not None and defaults is not record:  # an edit strength (edit_defaults)
        return DirectionTerm(
            directions, index, None, *window, strength=sign * abs(float(defaults["strength"])), region=region
        )
    if defaults.get("edit_strength") is not None:
        return DirectionTerm(
            directions, index, None, *window, strength=sign * abs(float(defaults["edit_strength"])), region=region
        )
    return DirectionTerm(directions, index, sign * abs(float(defaults["scale"])), *window, region=region)


def cross_edits(
    loaded: Loaded, alone: Sequence[tuple[str, int]], pairs: Sequence[tuple[int, int]], region: Any = None
) -> list[list[EditTerm]]:
    """Every edit at both signs (pairs share the sign), as in the per-domain benchmark; in a
    localized pair each direction has its own region: ``region`` for both, or per part
    (``{"face": ..., "cat": ...}``)."""

    def of(part: str) -> Any:
        return region.get(part) if isinstance(region, Mapping) else region

    edits: list[list[EditTerm]] = [[cross_term(loaded, part, k, sign, of(part))] for part, k in alone for sign in SIGNS]
    edits += [
        [cross_term(loaded, "face", f, sign, of("face")), cross_term(loaded, "cat", c, sign, of("cat"))]
        for f, c in pairs
        for sign in SIGNS
    ]
    return edits


def _main_of(loaded: Loaded, part: str, k: int) -> str:
    return str(loaded[part][1][k]["main_factor"])


def _per_part(
    read: torch.Tensor, e: int, recon_labels: list[dict[str, str]]
) -> dict[str, tuple[list[str], torch.Tensor]]:
    """Changes of edit ``e`` under either sign, per scene object."""
    result = {}
    for part in ("face", "cat"):
        signed = [
            part_changes(_decode_labels("scenes", read[len(SIGNS) * e + s]), recon_labels, part)
            for s in range(len(SIGNS))
        ]
        result[part] = (signed[0][0], torch.stack([changed for _, changed in signed]).any(dim=0))
    return result


def _versus(read: torch.Tensor, e: int, reference: int, part: str) -> tuple[list[str], torch.Tensor]:
    """Where ``part`` differs between edit ``e`` and edit ``reference``, sign by sign, under either sign."""
    signed = [
        part_changes(
            _decode_labels("scenes", read[len(SIGNS) * e + s]),
            _decode_labels("scenes", read[len(SIGNS) * reference + s]),
            part,
        )
        for s in range(len(SIGNS))
    ]
    return signed[0][0], torch.stack([changed for _, changed in signed]).any(dim=0)


def cross_rows(
    read: torch.Tensor,
    loaded: Loaded,
    alone: Sequence[tuple[str, int]],
    pairs: Sequence[tuple[int, int]],
    recon_labels: list[dict[str, str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The alone and pair rows of one rendering (global or localized) of every edit."""
    alone_rows = []
    for e, (part, k) in enumerate(alone):
        other = "cat" if part == "face" else "face"
        changes = _per_part(read, e, recon_labels)
        numbers = alone_interference(changes[part], changes[other], _main_of(loaded, part, k))
        alone_rows.append(
            {
                "part": part,
                "index": k,
                "name": loaded[part][1][k].get("name"),
                "main_factor": _main_of(loaded, part, k),
                **numbers,
            }
        )
    pair_rows = []
    alone_edit = {key: e for e, key in enumerate(alone)}
    for p, (f, c) in enumerate(pairs):
        changes = _per_part(read, len(alone) + p, recon_labels)
        versus_alone = {
            part: _versus(read, len(alone) + p, alone_edit[(part, k)], part) for part, k in (("face", f), ("cat", c))
        }
        pair_rows.append(
            {
                "face": {
                    "index": f,
                    "name": loaded["face"][1][f].get("name"),
                    "main_factor": _main_of(loaded, "face", f),
                },
                "cat": {"index": c, "name": loaded["cat"][1][c].get("name"), "main_factor": _main_of(loaded, "cat", c)},
                **pair_interference(
                    changes["face"],
                    changes["cat"],
                    _main_of(loaded, "face", f),
                    _main_of(loaded, "cat", c),
                    versus_alone["face"],
                    versus_alone["cat"],
                ),
            }
        )
    return alone_rows, pair_rows


def _row_mean(rows: list[dict[str, Any]], key: str) -> float | None:
    return round(sum(float(r[key]) for r in rows) / len(rows), 4) if rows else None


def cross_summary(alone_rows: list[dict[str, Any]], pair_rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pairs": len(pair_rows),
        "mean_face_change": _row_mean(pair_rows, "face_change"),
        "mean_cat_change": _row_mean(pair_rows, "cat_change"),
        "mean_both_changed": _row_mean(pair_rows, "both_changed"),
        "interference": _row_mean(pair_rows, "interference"),
        "interference_alone": _row_mean(alone_rows, "interference"),
        "off_target": _row_mean(pair_rows, "off_target"),
    }


def save_pair_strips(
    pair_rows: list[dict[str, Any]],
    first: int,
    kept: torch.Tensor | None,
    twins: Twins | None,
    scenes: Split,
    folder: Path,
    out: Path,
) -> None:
    """Each pair's strip (scene images, both signs, and with --region the localized twins); pair
    ``p`` is edit ``first + p``."""
    for p, row in enumerate(pair_rows):
        e = first + p
        if kept is not None and scenes.recon_kept is not None:
            keep = kept.shape[1]
            title = f"face {row['face']['index']}: {row['face']['name']}  +  cat {row['cat']['index']}: {row['cat']['name']}"
            rows, labels = [kept[2 * e + 1], kept[2 * e]], ["both -", "both +"]
            if twins is not None and twins.kept is not None:
                rows += [
                    twins.kept[2 * e + 1],
                    twins.kept[2 * e],
                    overlays(twins.kept[2 * e], twins.inside[2 * e, :keep]),
                ]
                labels += ["local both -", "local both +", "regions +"]
            image = strip_image(scenes.pixels[:keep], scenes.recon_kept[:keep], rows, title, labels=labels)
            row["strip"] = str(save_image(image, folder / f"pair-{p:02d}.png").relative_to(out))


def _pixels_of(twins: Twins, edits: range) -> dict[str, float | None]:
    return pixel_means({key: values[edits.start : edits.stop] for key, values in twins.pixels.items()})


def cross_localized(
    twins: Twins,
    loaded: Loaded,
    alone: Sequence[tuple[str, int]],
    pairs: Sequence[tuple[int, int]],
    recon_labels: list[dict[str, str]],
    settings: BenchSettings,
) -> dict[str, Any]:
    """The ``localized`` block: the localized twins' rows, summary and pixel measures."""
    local_alone, local_pairs = cross_rows(twins.edited, loaded, alone, pairs, recon_labels)
    for e, row in enumerate(local_alone + local_pairs):
        row.update(_pixels_of(twins, range(len(SIGNS) * e, len(SIGNS) * (e + 1))))
    return {
        "region": settings.region,
        "auto_region": asdict(settings.auto_region),
        "summary": {
            **cross_summary(local_alone, local_pairs),
            **_pixels_of(twins, range(len(SIGNS) * len(alone), len(SIGNS) * (len(alone) + len(pairs)))),
        },
        "alone": local_alone,
        "pairs": local_pairs,
    }


def cross_modes(
    model: DiffusionModel,
    reader: Any,
    scenes: Split,
    loaded: Loaded,
    alone: Sequence[tuple[str, int]],
    pairs: Sequence[tuple[int, int]],
    recon_labels: list[dict[str, str]],
    settings: BenchSettings,
    *,
    progress: bool,
) -> dict[str, Any]:
    """Every pair and single edit in each ``--cross-regions`` mode: auto, the box a user would draw
    around each term's object (``measure.object_region``), auto kept in that box. Per mode the rows,
    the summary, and over the pair edits the region's share of the grid and PSNR outside it."""
    assert scenes.recon_small is not None, "prepare the scenes with keep_recon_pixels"
    first, count = len(SIGNS) * len(alone), len(SIGNS) * len(pairs)
    modes = {}
    for mode in settings.cross_regions:
        regions = {part: object_region(mode, scenes.seeds, scenes.labels, part) for part in ("face", "cat")}
        edits = cross_edits(loaded, alone, pairs, regions)
        measured = PixelComparison(scenes.recon_small, len(edits), scenes.count)
        read, _ = render_and_read(
            model,
            scenes.inversion,
            reader,
            edits,
            settings.protocol().passes,
            desc=f"cross-domain ({mode})",
            progress=progress,
            auto_region=settings.auto_region,
            on_chunk=measured,
            compose=settings.compose,
        )
        alone_rows, pair_rows = cross_rows(read, loaded, alone, pairs, recon_labels)
        pixels = {"region_fraction": measured.region, "psnr_outside": measured.psnr_outside, "psnr": measured.psnr}
        modes[mode] = {
            "summary": {
                **cross_summary(alone_rows, pair_rows),
                **pixel_means({key: values[first : first + count] for key, values in pixels.items()}),
            },
            "alone": alone_rows,
            "pairs": pair_rows,
        }
    return modes


def run_cross_domain(
    model: DiffusionModel,
    faces_file: str | Path | Directions,
    cats_file: str | Path | Directions,
    out: Path,
    settings: BenchSettings,
    reader: Any,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Face and cat directions alone and together on scene renders; writes OUT/cross-domain/."""
    started = time.monotonic()
    folder = ensure_output_dir(out / "cross-domain")
    loaded = load_cross_files(model, faces_file, cats_file, settings)
    reader_names = reader_factor_names(reader, "scenes")
    scenes = prepare_split(
        model,
        reader,
        "scenes",
        "scenes",
        settings.cross_images,
        settings.protocol(),
        keep_images=settings.strip_images,
        keep_recon_pixels=settings.localized or bool(settings.cross_regions),
        progress=progress,
    )
    recon_labels = _decode_labels("scenes", scenes.recon_indices)
    faces, cats = loaded["face"][2], loaded["cat"][2]
    pairs = [(faces[i % len(faces)], cats[i % len(cats)]) for i in range(max(len(faces), len(cats)))]
    alone = [("face", k) for k in faces] + [("cat", k) for k in cats]

    twins: Twins | None = None
    if settings.localized:
        edited, kept, twins = render_twins(
            model,
            reader,
            scenes,
            cross_edits(loaded, alone, pairs, None),
            cross_edits(loaded, alone, pairs, settings.region),
            range(scenes.count),
            settings,
            keep=settings.strip_images,
            desc="cross-domain",
            progress=progress,
        )
    else:
        edited, kept = render_and_read(
            model,
            scenes.inversion,
            reader,
            cross_edits(loaded, alone, pairs, None),
            settings.protocol().passes,
            keep_images=settings.strip_images,
            desc="cross-domain",
            progress=progress,
        )
    alone_rows, pair_rows = cross_rows(edited, loaded, alone, pairs, recon_labels)
    save_pair_strips(pair_rows, len(alone), kept, twins, scenes, folder, out)
    localized = None if twins is None else cross_localized(twins, loaded, alone, pairs, recon_labels, settings)
    result = {
        "faces_file": str(loaded["face"][0].path or ""),
        "cats_file": str(loaded["cat"][0].path or ""),
        "images": scenes.count,
        "seeds": [scenes.seeds[0], scenes.seeds[-1]],
        "reader_factors": reader_names,
        "baseline": split_diagnostics(scenes, reader_names),
        "summary": cross_summary(alone_rows, pair_rows),
        "alone": alone_rows,
        "pairs": pair_rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    if localized is not None:
        result["localized"] = localized
    if settings.cross_regions:
        result["modes"] = {
            "global": {"summary": result["summary"]},
            **cross_modes(model, reader, scenes, loaded, alone, pairs, recon_labels, settings, progress=progress),
        }
        result["seconds"] = round(time.monotonic() - started, 1)
    atomic_write_json(folder / "result.json", result)
    return result
