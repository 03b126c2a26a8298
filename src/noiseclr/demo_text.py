"""What the demo prints and writes around its table: the table itself, what its columns mean,
the notes under it (random reference, repeats) and the newcomer's explanation."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chance import RandomReference
    from .directions import Directions
    from .measure import DirectionRecord
    from .model import DiffusionModel

EMBEDDED_NAME = "noiseclr/embedded-base"
"""``DiffusionModel.name`` of the shipped model."""

DemoSettings = TryEdit = Any  # noiseclr.demo's classes (that module imports this one, not the other way)


def _also(record: DirectionRecord, limit: int = 2) -> str:
    others = sorted(
        ((name, value) for name, value in record.changes.items() if name != record.main_factor and value > 0),
        key=lambda item: -item[1],
    )
    return ", ".join(f"{name} {value:.2f}" for name, value in others[:limit]) or "-"


def _versus_random(row: DirectionRecord) -> str:
    if row.random is None:
        return "-"
    return "beats" if row.random["beats_random"] else "no"


def summary_table(
    rows: Sequence[DirectionRecord], *, markdown: bool = False, repeated: Mapping[int, tuple[int, float]] | None = None
) -> str:
    """The per-direction table (plain text or markdown); ``repeated`` marks a direction that repeats an
    earlier one (:func:`repeats`)."""
    repeated = repeated or {}
    header = [
        "#",
        "name (what it changes)",
        "strength",
        "changed",
        "purity",
        "vs random",
        "repeats",
        "also changes",
        "strip",
    ]
    body = [
        [
            str(row.index),
            str(row.name),
            row.amount_text(),
            f"{row.main_change:.2f}" if row.main_change is not None else "-",
            f"{row.purity:.2f}" if row.purity is not None else "-",
            _versus_random(row),
            f"{repeated[row.index][0]} ({repeated[row.index][1]:+.2f})" if row.index in repeated else "-",
            _also(row) if row.changes else "-",
            str(row.strip or ""),
        ]
        for row in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(header[i]), *(len(cells[i]) for cells in body)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i in (1, 5, 6, 7, 8) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*cells) for cells in body]
    )


def random_note(rows: Sequence[DirectionRecord], reference: RandomReference | None) -> str:
    """What 'vs random' means and how many beat it, or ''."""
    if reference is None:
        return ""
    wins = sum(bool(row.random and row.random["beats_random"]) for row in rows)
    return (
        f"{wins} of {len(rows)} directions beat random: their biggest change is above what 95% of {reference.count} "
        f"calibrated random directions do to that factor on the same images, by more than "
        f"{reference.threshold():.2f} (the margin random directions themselves reach 1 time in 20; noiseclr.chance). "
        "The others change no more than a random token would."
    )


def duplicate_note(directions: Directions) -> str:
    """One line naming the directions that are one axis twice (from the calibration), or ''."""
    pairs = (directions.calibration or {}).get("duplicates") or []
    if not pairs:
        return ""
    listed = "; ".join(f"{int(i)} and {int(j)} (cos {c:+.2f})" for i, j, c in pairs)
    return (
        f"One axis twice: directions {listed} make the same change on the same images "
        "(a negative cosine: with opposite signs), so one of each pair adds nothing."
    )


def _columns(settings: DemoSettings) -> str:
    """What the table's columns mean, one short line each (a terminal is about 100 characters wide)."""
    amount = (
        "the calibrated strength, the same for every direction: its term changes the model's noise prediction by "
        "that percent of its norm, tried with both signs (stored as the direction's default)"
        if settings.scale is None
        else "the raw lambda, tried with both signs (stored as the direction's default)"
    )
    entries = [
        (
            "name",
            "the factor it changes; +value: what + moves it to, -value: what - moves it to; ±value: both signs "
            "move it there; '(mixed)': no single value",
        ),
        ("strength" if settings.scale is None else "scale", amount),
        (
            "changed",
            "fraction of the test images where that factor changed, under either sign, vs. the unedited reconstruction",
        ),
        ("purity", "that change over all changes (1.00 = nothing else changed)"),
        (
            "vs random",
            "beats: it changes its factor more than calibrated random directions at the same strength do "
            "on the same images (see below the table)",
        ),
        ("repeats", "the earlier direction it repeats (noise-change cosine; negative: the opposite sign), if any"),
        ("also changes", "other factors it moved"),
        ("strip", "its gallery image"),
    ]
    lines = ["Columns:"]
    for name, meaning in entries:
        lines += textwrap.wrap(meaning, width=98, initial_indent=f"  {name:<13} ", subsequent_indent=" " * 16)
    return "\n".join(lines)


def explanation(
    model: DiffusionModel,
    settings: DemoSettings,
    out: Path,
    rows: Sequence[DirectionRecord],
    named: bool,
    why_unnamed: str,
    try_edit: TryEdit | None = None,
    vae_psnr: float | None = None,
) -> tuple[str, str]:
    """(intro, next steps) text around the table."""
    subject = "faces" if settings.domain == "faces" else "cats"
    scale = settings.amount()
    embedded = model.name == EMBEDDED_NAME
    what = (
        "the embedded base model, a small Stable-Diffusion-architecture model trained from scratch on a procedural world "
        "of cartoon faces, cats and scenes whose factors are known"
        if embedded
        else f"model {model.name}"
    )
    model_flag = "" if embedded else f" --model {model.name}"
    intro = [
        f"What you are looking at: {what}.",
        f"NoiseCLR saw {settings.images} cartoon {subject} ({out / 'train-images'}) WITHOUT any text or labels and learned "
        f"{settings.directions} directions: each is a new token embedding that, added while the model redraws an image, makes "
        "the same kind of change on every image. Nobody told it what to change.",
    ]
    if named:
        intro.append(
            f"To name them, each direction was applied at +{scale} and -{scale} to {settings.naming_images} new {subject} "
            f"({out / 'test-images'}); a small classifier (the factor reader) read every factor (hair colour, glasses, "
            "smile, ...) before and after, and each direction is named after the factor it changed most and the values it "
            "moved it to."
        )
        intro.append(_columns(settings))
    else:
        intro.append(f"The directions are unnamed: {why_unnamed}")
    if vae_psnr is not None:
        intro.append(
            f"The '0' column is the unedited reconstruction: DDPM inversion gives back the image's latents exactly, but "
            f"the VAE's round trip costs detail (PSNR {vae_psnr:.1f} dB against the test {subject}: small features such "
            "as open mouths and curls come back softer)."
        )
    if try_edit is not None:
        image, first, amount = try_edit.image, try_edit.index, f"={try_edit.amount(settings)}"
        if try_edit.before != try_edit.after:
            seen = f"{try_edit.factor} {try_edit.before} -> {try_edit.after}"
        else:
            seen = f"{try_edit.factor} looks unchanged to the reader"
        measured = f"measured: {seen}, {100 * try_edit.visible:.0f}% of the pixels change visibly"
    else:
        # Unnamed: the clearest guess is the first direction and image with the stored setting.
        image, first, amount, measured = out / "test-images" / (subject[:-1] + "-000.png"), 0, "", "not measured"
    files = [
        f"Files in {out}/:",
        f"  gallery/index.html       open in a browser: one strip per direction (rows: test {subject}; columns: input, "
        f"-{scale}, 0 = unedited reconstruction, +{scale})",
        "  directions.safetensors   the directions with their names and default scales (noiseclr info FILE)",
        "  summary.md, summary.json this table",
        "  train-images/, test-images/   the rendered images; run/: the discovery run (loss.csv, checkpoints)",
        "Try next:",
        f"  noiseclr edit{model_flag} --image {image} --direction {out / 'directions.safetensors'}:{first}{amount} "
        f"--out {out / 'edited'}",
        f"      ({measured}; {settings.inversion.upper()} inversion and {settings.edit_steps} steps as stored: what the table measured)",
        f"  noiseclr explore{model_flag} --directions {out / 'directions.safetensors'} --images {out / 'test-images'} "
        f"--out {out / 'explore'}   (0, ±1 and ±2 times the stored scale; {settings.inversion.upper()}, {settings.edit_steps} steps, as stored)",
        f"  noiseclr demo{model_flag} --out {out} --steps {settings.steps * 2}   (continues this discovery run for longer)",
        f"  noiseclr bench{model_flag} --domain {settings.domain} --out bench-{settings.domain}   "
        "(the measured benchmark; hours on a CPU)",
    ]
    # Paragraphs wrapped to a terminal's width; the columns block is wrapped already.
    paragraphs = [p if p.startswith("Columns:") else textwrap.fill(p, width=100) for p in intro]
    return "\n".join(paragraphs), "\n".join(files)
