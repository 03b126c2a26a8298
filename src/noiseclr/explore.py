"""Explore a directions file: for each direction, a strip of edits over a few images and scales.

Images are inverted once; every direction's edits at every scale are then rendered in batched
passes (one UNet call per denoising step for a whole chunk of directions). The output folder
holds one PNG grid per direction (rows: images; columns: input, then the scales, where scale 0
is the plain reconstruction) and one static ``index.html`` gallery that opens in any browser.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .directions import Directions
from .editing import DirectionTerm, render_edits
from .errors import NoiseCLRError
from .fileio import atomic_write_text, ensure_output_dir
from .images import ImageSet, load_image_folder, make_grid, save_image, tensor_to_pil
from .inversion import INVERSION_METHODS, check_steps, invert
from .model import DiffusionModel
from .options import check_count, check_inversion, check_max_batch, option, positive_int, window


@dataclass
class ExploreSettings:
    """What :func:`explore` renders."""

    scales: tuple[float, ...] = option((-6.0, -3.0, 0.0, 3.0, 6.0), flag="--scales", help="edit scales", type=float, nargs="+")
    """Edit strengths, one column each; 0 shows the reconstruction."""
    num_images: int = option(4, flag="--num-images", help="images per strip", type=positive_int)
    """Images per strip (the first ones of the folder, by name)."""
    indices: list[int] | None = option(None, flag="--indices", help="only these directions", type=int, nargs="+", default_text="")
    """Directions to show (default: all)."""
    window: tuple[float, float] | None = option(
        None, flag="--window", help="active part of the schedule", type=window, metavar="START:END",
        default_text="stored per direction, else 0:1",
    )  # fmt: skip
    """Active part of the schedule; None uses each direction's stored default, else 0:1."""
    steps: int = option(50, flag="--steps", help="inversion and denoising steps", type=positive_int)
    inversion: str = option("ddim", flag="--inversion", help="ddim or ddpm", choices=list(INVERSION_METHODS))
    seed: int = option(0, flag="--seed", help="seed of the DDPM inversion's noise", default_text="")
    directions_per_pass: int = option(8, flag="--directions-per-pass", help="directions rendered together (memory)",
                                      type=positive_int)  # fmt: skip
    """Directions rendered together (memory: E*B trajectories per UNet call)."""
    max_batch: int | None = option(None, flag="--max-batch", help="most UNet rows per call (memory cap)", type=positive_int,
                                   default_text="")  # fmt: skip

    def __post_init__(self) -> None:
        if not self.scales:
            raise NoiseCLRError("--scales: give at least one scale, e.g. --scales -6 -3 0 3 6.")
        check_count(self.num_images, "--num-images", why="must be at least 1.")
        check_inversion(self.inversion)
        check_count(self.directions_per_pass, "--directions-per-pass", why="must be at least 1.")
        check_max_batch(self.max_batch)


@dataclass
class ExploreResult:
    out: Path
    index_html: Path
    strips: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _window_for(directions: Directions, index: int, settings: ExploreSettings) -> tuple[float, float]:
    if settings.window is not None:
        return settings.window
    if directions.edit_defaults:
        default = directions.edit_defaults[index]
        return float(default.get("start", 0.0)), float(default.get("end", 1.0))
    return 0.0, 1.0


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
    check_steps(model, settings.steps)
    out = ensure_output_dir(out)
    if not isinstance(images, ImageSet):
        images = load_image_folder(images, model.resolution, min_count=1)
    count = min(settings.num_images, len(images))
    pixels = images.pixels[:count]
    names = [p.name for p in images.paths[:count]]

    latents = model.encode_images(pixels)
    inversion = invert(
        model, latents, settings.inversion, settings.steps, generator=torch.Generator().manual_seed(settings.seed), progress=progress
    )
    nonzero = [s for s in settings.scales if s != 0]
    reconstruction = render_edits(model, inversion, [[]], progress=False)[0] if len(nonzero) < len(settings.scales) else None

    strips: list[Path] = []
    cards: list[str] = []
    chunks = [indices[i : i + settings.directions_per_pass] for i in range(0, len(indices), settings.directions_per_pass)]
    for chunk in chunks:
        edits = [
            [DirectionTerm(directions, index, scale, *_window_for(directions, index, settings))]
            for index in chunk
            for scale in nonzero
        ]
        rendered = render_edits(model, inversion, edits, max_batch=settings.max_batch, progress=progress) if edits else None
        for position, index in enumerate(chunk):
            columns: list[torch.Tensor] = [pixels]
            cursor = position * len(nonzero)
            for scale in settings.scales:
                if scale == 0:
                    columns.append(reconstruction)
                else:
                    columns.append(rendered[cursor])
                    cursor += 1
            rows = [[tensor_to_pil(column[b]) for column in columns] for b in range(count)]
            start, end = _window_for(directions, index, settings)
            title = f"{directions.label(index)}   (window {start:g}:{end:g}, {settings.inversion} inversion)"
            grid = make_grid(
                rows,
                column_labels=["input"] + [f"{s:+g}" if s else "0 (recon)" for s in settings.scales],
                title=title,
            )
            path = save_image(grid, out / f"direction-{index:03d}.png")
            strips.append(path)
            cards.append(_card(directions, index, path.name, start, end, settings))
    index_html = atomic_write_text(out / "index.html", _page(directions, model, names, cards, settings))
    return ExploreResult(out=out, index_html=index_html, strips=strips, seconds=time.monotonic() - started)


def _card(directions: Directions, index: int, image: str, start: float, end: float, settings: ExploreSettings) -> str:
    source = directions.path.name if directions.path else "directions.safetensors"
    strongest = max(settings.scales, key=abs)
    spec = f"{source}:{index}={strongest:g}" + (f"@{start:g}:{end:g}" if (start, end) != (0.0, 1.0) else "")
    return (
        f'<figure id="d{index}"><figcaption><b>{html.escape(directions.label(index))}</b> '
        f"<code>--direction {html.escape(spec)}</code></figcaption>"
        f'<a href="{html.escape(image)}"><img src="{html.escape(image)}" loading="lazy" alt="direction {index}"></a></figure>'
    )


def _page(directions: Directions, model: DiffusionModel, names: Sequence[str], cards: list[str], settings: ExploreSettings) -> str:
    title = f"NoiseCLR directions: {directions.path.name if directions.path else 'directions'}"
    scales = ", ".join(f"{s:g}" for s in settings.scales)
    intro = (
        f"{directions.count} directions{f' for {html.escape(directions.domain)}' if directions.domain else ''}, "
        f"model <code>{html.escape(model.name)}</code>. Each strip: one row per image "
        f"({html.escape(', '.join(names))}); columns are the input, then edit scales {scales} "
        "(0 = the image inverted and regenerated without any direction, so differences from it are the edit). "
        f"{settings.steps} steps, {settings.inversion.upper()} inversion. "
        "Copy a <code>--direction</code> spec into <code>noiseclr edit</code> to apply one."
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
