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
    annotations_of,
    prepare_split,
    reader_factor_names,
    render_and_read,
    split_diagnostics,
)
from ..metrics import (
    EFFECTIVE_STRENGTH,
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
    """Best direction per factor (by strength * purity; background left out), strongest first, at most ``limit``."""
    best: dict[str, Mapping[str, Any]] = {}
    for record in records:
        factor = record.get("main_factor")
        if factor in (None, "background") or not record.get("strength"):
            continue
        score = float(record["strength"]) * float(record["purity"])
        if factor not in best or score > float(best[factor]["strength"]) * float(best[factor]["purity"]):
            best[factor] = record
    ranked = sorted(best.values(), key=lambda r: (-float(r["strength"]) * float(r["purity"]), int(r["index"])))
    effective = [r for r in ranked if float(r["strength"]) >= EFFECTIVE_STRENGTH]
    chosen = effective or ranked
    return [int(r["index"]) for r in chosen[:limit]]


def _decode_labels(domain: str, indices: torch.Tensor) -> list[dict[str, str]]:
    from ..world.factors import decode_labels

    return [decode_labels(domain, row) for row in indices.tolist()]


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
    reader_names = reader_factor_names(reader, "scenes")
    scenes = prepare_split(model, reader, "scenes", "scenes", settings.cross_images, settings.protocol(),
                           keep_images=settings.strip_images, keep_recon_pixels=settings.localized, progress=progress)  # fmt: skip
    recon_labels = _decode_labels("scenes", scenes.recon_indices)

    def term(part: str, index: int, sign: float, region: str | None = None) -> DirectionTerm:
        directions, records, _ = loaded[part]
        record = records[index]
        defaults = stored_defaults(directions, index) or record
        window = (float(defaults.get("start", 0.0)), float(defaults.get("end", 1.0)))
        if defaults.get("strength") is not None and defaults is not record:  # an edit strength (edit_defaults)
            return DirectionTerm(directions, index, None, *window, strength=sign * abs(float(defaults["strength"])), region=region)
        if defaults.get("edit_strength") is not None:
            return DirectionTerm(directions, index, None, *window, strength=sign * abs(float(defaults["edit_strength"])),
                                 region=region)  # fmt: skip
        return DirectionTerm(directions, index, sign * abs(float(defaults["scale"])), *window, region=region)

    faces, cats = loaded["face"][2], loaded["cat"][2]
    pairs = [(faces[i % len(faces)], cats[i % len(cats)]) for i in range(max(len(faces), len(cats)))]
    alone = [("face", k) for k in faces] + [("cat", k) for k in cats]

    def edits_with(region: str | None) -> list[list[EditTerm]]:
        # Every edit at both signs (pairs share the sign), as in the per-domain benchmark; in a
        # localized pair each direction has its own auto region.
        edits: list[list[EditTerm]] = [[term(part, k, sign, region)] for part, k in alone for sign in SIGNS]
        edits += [[term("face", f, sign, region), term("cat", c, sign, region)] for f, c in pairs for sign in SIGNS]
        return edits

    twins: Twins | None = None
    if settings.localized:
        edited, kept, twins = render_twins(model, reader, scenes, edits_with(None), edits_with(settings.region),
                                           range(scenes.count), settings, keep=settings.strip_images, desc="cross-domain",
                                           progress=progress)  # fmt: skip
    else:
        edited, kept = render_and_read(model, scenes.inversion, reader, edits_with(None), settings.protocol().passes,
                                       keep_images=settings.strip_images, desc="cross-domain", progress=progress)  # fmt: skip

    def main_of(part: str, k: int) -> str:
        return str(loaded[part][1][k]["main_factor"])

    def rows_of(read: torch.Tensor) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The alone and pair rows of one rendering (global or localized) of every edit."""

        def per_part(e: int) -> dict[str, tuple[list[str], torch.Tensor]]:
            """Changes of edit ``e`` under either sign, per scene object."""
            result = {}
            for part in ("face", "cat"):
                signed = [part_changes(_decode_labels("scenes", read[len(SIGNS) * e + s]), recon_labels, part) for s in range(len(SIGNS))]
                result[part] = (signed[0][0], torch.stack([changed for _, changed in signed]).any(dim=0))
            return result

        alone_rows = []
        for e, (part, k) in enumerate(alone):
            other = "cat" if part == "face" else "face"
            changes = per_part(e)
            numbers = alone_interference(changes[part], changes[other], main_of(part, k))
            alone_rows.append({"part": part, "index": k, "name": loaded[part][1][k].get("name"),
                               "main_factor": main_of(part, k), **numbers})  # fmt: skip
        pair_rows = []
        for p, (f, c) in enumerate(pairs):
            changes = per_part(len(alone) + p)
            pair_rows.append({
                "face": {"index": f, "name": loaded["face"][1][f].get("name"), "main_factor": main_of("face", f)},
                "cat": {"index": c, "name": loaded["cat"][1][c].get("name"), "main_factor": main_of("cat", c)},
                **pair_interference(changes["face"], changes["cat"], main_of("face", f), main_of("cat", c)),
            })  # fmt: skip
        return alone_rows, pair_rows

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(float(r[key]) for r in rows) / len(rows), 4) if rows else None

    def summary_of(alone_rows: list[dict[str, Any]], pair_rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "pairs": len(pair_rows),
            "mean_face_change": mean(pair_rows, "face_change"),
            "mean_cat_change": mean(pair_rows, "cat_change"),
            "mean_both_changed": mean(pair_rows, "both_changed"),
            "interference": mean(pair_rows, "interference"),
            "interference_alone": mean(alone_rows, "interference"),
        }

    alone_rows, pair_rows = rows_of(edited)
    for p, row in enumerate(pair_rows):
        e = len(alone) + p
        if kept is not None and scenes.recon_kept is not None:
            keep = kept.shape[1]
            title = f"face {row['face']['index']}: {row['face']['name']}  +  cat {row['cat']['index']}: {row['cat']['name']}"
            rows, labels = [kept[2 * e + 1], kept[2 * e]], ["both -", "both +"]
            if twins is not None and twins.kept is not None:
                rows += [twins.kept[2 * e + 1], twins.kept[2 * e], overlays(twins.kept[2 * e], twins.inside[2 * e, :keep])]
                labels += ["local both -", "local both +", "regions +"]
            image = strip_image(scenes.pixels[:keep], scenes.recon_kept[:keep], rows, title, labels=labels)
            row["strip"] = str(save_image(image, folder / f"pair-{p:02d}.png").relative_to(out))

    localized = None
    if twins is not None:
        local_alone, local_pairs = rows_of(twins.edited)

        def pixels_of(edits: range) -> dict[str, float | None]:
            return pixel_means({key: values[edits.start : edits.stop] for key, values in twins.pixels.items()})

        for e, row in enumerate(local_alone + local_pairs):
            row.update(pixels_of(range(len(SIGNS) * e, len(SIGNS) * (e + 1))))
        localized = {
            "region": settings.region,
            "auto_region": asdict(settings.auto_region),
            "summary": {**summary_of(local_alone, local_pairs),
                        **pixels_of(range(len(SIGNS) * len(alone), len(SIGNS) * (len(alone) + len(pairs))))},  # fmt: skip
            "alone": local_alone,
            "pairs": local_pairs,
        }

    result = {
        "faces_file": str(loaded["face"][0].path or ""),
        "cats_file": str(loaded["cat"][0].path or ""),
        "images": scenes.count,
        "seeds": [scenes.seeds[0], scenes.seeds[-1]],
        "reader_factors": reader_names,
        "baseline": split_diagnostics(scenes, reader_names),
        "summary": summary_of(alone_rows, pair_rows),
        "alone": alone_rows,
        "pairs": pair_rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    if localized is not None:
        result["localized"] = localized
    atomic_write_json(folder / "result.json", result)
    return result


