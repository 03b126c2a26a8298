"""The main job: discover face-edit directions on the embedded base model, name them, show them.

``noiseclr demo --out demo-output`` (what ``scripts/quickstart.sh`` runs) does, on a fresh install:

1. renders a small set of cartoon faces from the procedural world (``train-images/``, unlabeled:
   only the pixels reach discovery) and a few new ones (``test-images/``);
2. discovers K directions on them with NoiseCLR (``run/``: a normal ``noiseclr discover`` run
   folder, resumable);
3. names each direction by what it does: the test faces are inverted once and regenerated with
   the direction at ``+S%`` and ``-S%`` (one calibrated strength for all, :mod:`noiseclr.strength`;
   ``--scale`` for a raw lambda); the shipped factor reader reads every factor of
   every result and of the unedited reconstruction; a direction is named after the factor it
   changes most under either sign, and the values it moves it to under + and -
   (:func:`noiseclr.measure.direction_records`, the benchmark's own measurement);
4. writes ``directions.safetensors`` (names, the strength as ``edit_defaults``, the
   measurements), a gallery (``gallery/``: one PNG strip per direction and ``index.html``, by
   :func:`noiseclr.explore.explore`) and the summary (``summary.md``, ``summary.json``, printed).

Defaults take about 4.5 minutes on a 2-core CPU with the embedded model (a discovery step of 6
images x 8 directions with backward costs about 1.3 s there); a GPU is used when present.
Running it again in the same folder reuses the finished discovery run.
"""

from __future__ import annotations

import logging
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .directions import Directions
from .discovery import DiscoverySettings
from .terms import DirectionTerm
from .errors import NoiseCLRError
from .fileio import atomic_write_json, atomic_write_text, ensure_output_dir
from .images import ImageSet, save_image
from .inversion import check_steps
from .measure import (
    DirectionRecord,
    EditProtocol,
    annotate_directions,
    direction_records,
    load_reader,
    prepare_split,
    Split,
    read_axis_edits,
    read_factors,
    reader_factor_names,
    render_pixels,
    seeds_for,
)
from .metrics import SIGNS, axis_changed, change_fractions, masked_psnr
from .model import DiffusionModel
from .demo_text import EMBEDDED_NAME, duplicate_note, random_note, summary_table  # noqa: F401 (EMBEDDED_NAME re-exported)
from .demo_text import explanation as _explanation
from .chance import (
    DEFAULT_COUNT,
    SHIPPED_DIR,
    RandomReference,
    ReferenceCache,
    default_cache_dir,
    judge,
    split_reference,
)
from .strength import DEMO_STRENGTH, repeats
from .reuse import discover_or_reuse
from .options import (
    check_choice,
    check_count,
    check_inversion,
    check_positive,
    flags,
    option,
    option_from,
    positive_int,
)

log = logging.getLogger("noiseclr")


DEMO_DISCOVERY: dict[str, Any] = {"micro_batches": 1, "checkpoint_every": 50}
DEMO_DIVERSITY_WEIGHT, DEMO_RESEED = 1.0, 0.8
"""The demo's remedies for repeated directions, chosen by the screen in benchmarks/quality.md."""
"""The demo's discovery knobs that have no flag (the flagged ones are :class:`DemoSettings` fields)."""


@dataclass
class DemoSettings:
    """Sizes of the demo; the defaults fit the 10-minute budget on a 2-core CPU."""

    directions: int = option(
        10,
        flag="--num-directions",
        help="directions to discover",
        type=positive_int,
        metavar="K",
        aliases=("--directions",),
    )
    """K, directions discovered."""
    steps: int = option(150, flag="--steps", help="discovery steps", type=positive_int)
    """Discovery optimizer steps (one micro-batch each)."""
    images: int = option(60, flag="--images", help="training images rendered for discovery", type=positive_int)
    """Unlabeled training faces rendered for discovery."""
    batch: int = option(6, flag="--batch", help="images per discovery micro-batch", type=positive_int)
    """Images per discovery micro-batch."""
    negatives: int = 7
    """Other directions per micro-batch (capped at K - 1)."""
    # Discovery's own options (flags, defaults, argparse types), with the demo's help texts.
    lr: float = option_from(DiscoverySettings, "lr", help="discovery's AdamW learning rate")
    magnitude_floor: float = option_from(
        DiscoverySettings,
        "magnitude_floor",
        help="discovery's magnitude floor (0: the paper's objective; see noiseclr discover)",
    )
    init: str = option_from(DiscoverySettings, "init", help="how discovery's rows start (see noiseclr discover)")
    axis_negatives: bool = option_from(
        DiscoverySettings, "axis_negatives", help="discovery's negatives by |cos| (see noiseclr discover)"
    )
    # The remedies the screen kept for the demo (benchmarks/quality.md, issue 21); 0 turns each off.
    diversity_weight: float = option_from(
        DiscoverySettings,
        "diversity_weight",
        default=DEMO_DIVERSITY_WEIGHT,
        help="discovery's decorrelation of the directions' mean changes (0: the paper's objective)",
    )
    reseed_duplicates: float = option_from(
        DiscoverySettings,
        "reseed_duplicates",
        default=DEMO_RESEED,
        help="discovery restarts a direction repeating another above this |cos| (0: off)",
    )
    edit_steps: int = option(
        12, flag="--edit-steps", help="denoising steps for naming and the gallery", type=positive_int
    )
    """Inversion and denoising steps for naming and the gallery."""
    strength: float = option(
        DEMO_STRENGTH,
        flag="--strength",
        metavar="PERCENT",
        help="each direction is tried at +/- this calibrated strength: the percent its term changes "
        "the noise prediction by, the same for every direction",
    )
    """One shared calibrated strength (:mod:`noiseclr.strength`); each direction is tried at +S% and -S%."""
    scale: float | None = option(
        None, flag="--scale", help="a raw lambda for every direction instead of --strength", default_text=""
    )
    naming_images: int = option(
        6, flag="--naming-images", help="new images each direction is measured on", type=positive_int
    )
    """New faces each direction is applied to for naming (and the first --gallery-images of them are shown)."""
    gallery_images: int = option(4, flag="--gallery-images", help="images per gallery strip", type=positive_int)
    domain: str = option("faces", flag="--domain", help="faces or cats")
    random_reference: int = option(
        DEFAULT_COUNT,
        flag="--random-reference",
        metavar="N",
        type=int,
        help="calibrated random directions each direction is compared with on the same test "
        "images (0: none; cached per model in $NOISECLR_CACHE or ~/.cache/noiseclr)",
    )
    """How many random directions make the reference "beats random" is judged against (:mod:`noiseclr.chance`)."""
    inversion: str = "ddpm"
    seed: int = option(0, flag="--seed", help="seed of the renders and of discovery", default_text="")

    def validate(self) -> DemoSettings:
        flag = flags(DemoSettings)
        for name in ("directions", "steps", "images", "batch", "naming_images", "gallery_images", "edit_steps"):
            check_count(getattr(self, name), flag[name])
        check_count(self.negatives, "negatives")
        check_count(self.random_reference, flag["random_reference"], 0, "must be 0 (none) or at least 2, e.g. 20.")
        if self.random_reference == 1:
            raise NoiseCLRError(
                f"{flag['random_reference']} 1: a reference needs at least 2 random directions; use 0 or e.g. 20."
            )
        check_count(self.directions, flag["directions"], 2, "discovery needs at least 2 directions.")
        check_count(self.batch, flag["batch"], 2, "the contrast needs at least 2 images per micro-batch.")
        if self.images < self.batch:
            raise NoiseCLRError(
                f"{flag['images']} {self.images}: fewer than {flag['batch']} {self.batch}; render more faces."
            )
        check_positive(self.strength, flag["strength"], "each direction is tried at +/- it, e.g. 3.")
        check_positive(self.lr, flag["lr"])
        if self.scale is not None:
            check_positive(self.scale, flag["scale"], "each direction is tried at +/- it.")
        check_inversion(self.inversion)
        check_choice(self.domain, ("faces", "cats"), flag["domain"], "the demo runs on faces or cats")
        return self

    def amount(self) -> str:
        """``15%`` or a raw ``12``: how each direction is applied (with both signs)."""
        return f"{self.scale:g}" if self.scale is not None else f"{self.strength:g}%"

    def edit(self) -> dict[str, float]:
        """The edit setting, as :meth:`DirectionRecord.set_edit` takes it."""
        return {"scale": self.scale} if self.scale is not None else {"edit_strength": self.strength}

    def term(self, directions: Directions, index: int, sign: float) -> DirectionTerm:
        if self.scale is not None:
            return DirectionTerm(directions, index, sign * self.scale)
        return DirectionTerm(directions, index, strength=sign * self.strength)

    def protocol(self) -> EditProtocol:
        """How the test images are inverted and edited for naming and the gallery."""
        return EditProtocol(steps=self.edit_steps, inversion=self.inversion, seed=self.seed)

    def discovery(self) -> DiscoverySettings:
        return replace(
            DiscoverySettings(),
            num_directions=self.directions,
            batch_size=self.batch,
            num_negatives=min(self.negatives, self.directions - 1),
            steps=self.steps,
            lr=self.lr,
            magnitude_floor=self.magnitude_floor,
            init=self.init,
            axis_negatives=self.axis_negatives,
            diversity_weight=self.diversity_weight,
            reseed_duplicates=self.reseed_duplicates,
            seed=self.seed,
            domain=self.domain,
            **DEMO_DISCOVERY,
        )


@dataclass
class DemoResult:
    out: Path
    directions_path: Path
    gallery: Path
    summary_md: Path
    summary_json: Path
    rows: list[DirectionRecord]
    text: str
    """What the CLI prints: what the images are, the table, where the files are, what to try next."""
    seconds: float
    named: bool
    """False when no factor reader was available (directions are then unnamed)."""
    timings: dict[str, float] = field(default_factory=dict)


def _save_renders(pixels: torch.Tensor, folder: Path, prefix: str) -> list[Path]:
    return [save_image(pixels[i], folder / f"{prefix}-{i:03d}.png") for i in range(pixels.shape[0])]


def _discovery(
    model: DiffusionModel, pixels: torch.Tensor, run: Path, settings: DemoSettings, progress: bool
) -> Directions:
    return discover_or_reuse(model, pixels, run, settings.discovery(), resume=None, progress=progress)


def name_directions(
    model: DiffusionModel,
    directions: Directions,
    reader: Any,
    settings: DemoSettings,
    *,
    progress: bool = True,
    return_changes: bool = False,
    test: Split | None = None,
) -> list[DirectionRecord] | tuple[list[DirectionRecord], torch.Tensor]:
    """Apply every direction at +scale and -scale to the test faces (``test``, else prepared here),
    read them, and describe each.

    Returns one record per direction, measured as an axis like the benchmark does (a factor
    counts as changed on an image if either sign changed it): ``name``, ``main_factor``, the
    values it moves to under + and - (``target_value``, ``minus_value``), ``main change``,
    ``purity``, ``changes``, ``edit_strength`` (or ``scale``), ``start``, ``end``. With
    ``return_changes`` also the bool [K, 2, B, F] table: factor f of test image b changed under sign s.
    """
    from .world.factors import domain_factors

    protocol = settings.protocol()
    factor_names = reader_factor_names(reader, settings.domain)
    values = [factor.values for factor in domain_factors(settings.domain)]
    if test is None:
        test = prepare_split(
            model, reader, settings.domain, "demo-test", settings.naming_images, protocol, progress=progress
        )
    edits = [[settings.term(directions, k, sign)] for k in range(directions.count) for sign in SIGNS]
    edited, changed = read_axis_edits(
        model, test, reader, edits, protocol.passes, desc="naming directions", progress=progress
    )
    records = direction_records(change_fractions(axis_changed(changed)), edited, changed, factor_names, values)
    for record in records:
        record.set_edit(**settings.edit())
        record.images = test.count
    return (records, changed) if return_changes else records


VISIBLE_LEVELS = 10
"""A pixel counts as visibly changed when a channel moved by more than this many of 255 levels."""


@dataclass
class TryEdit:
    """The first edit the demo suggests, as measured by running it the way ``noiseclr edit`` does."""

    image: Path
    index: int
    sign: float
    factor: str
    before: str
    after: str
    visible: float
    """Fraction of the image's pixels that changed by more than :data:`VISIBLE_LEVELS` of 255."""

    def amount(self, settings: DemoSettings) -> str:
        return (
            f"{self.sign * settings.scale:g}" if settings.scale is not None else f"{self.sign * settings.strength:g}%"
        )


def pick_try_edit(
    model: DiffusionModel,
    directions: Directions,
    reader: Any,
    rows: Sequence[DirectionRecord],
    changes: torch.Tensor,
    images: Sequence[Path],
    settings: DemoSettings,
    candidates: int = 3,
) -> TryEdit | None:
    """An image, direction and sign whose edit a user will see, chosen from the naming table and
    checked by running that very edit (stored protocol, ``--seed 0``, the saved PNG) and reading it.

    Candidates are the clearest directions (changed x purity) on an image where naming saw their
    factor change under that sign; the first whose checked edit changes the factor wins, else the
    one that moved the most pixels. None when nothing moved at all."""
    from .editing import EditSettings, edit
    from .images import load_image_files
    from .world.factors import domain_factors

    factors = domain_factors(settings.domain)
    names = [factor.name for factor in factors]
    ranked = sorted(
        (row for row in rows if row.main_factor in names),
        key=lambda row: -(row.main_change or 0.0) * (row.purity or 0.0),
    )[:candidates]
    tried: list[TryEdit] = []
    for row in ranked:
        f = names.index(row.main_factor)
        sign_index, image_index = _first_change(changes[row.index, :, : len(images), f])
        sign = SIGNS[sign_index]
        pixels = load_image_files([images[image_index]], model.resolution)
        protocol = EditSettings(steps=settings.edit_steps, inversion=settings.inversion, seed=0)
        result = edit(model, pixels, [settings.term(directions, row.index, sign)], protocol, progress=False)
        before, after = (read_factor_values(reader, t, factors)[0][f] for t in (result.reconstruction, result.edited))
        moved = (result.edited - result.reconstruction).abs().amax(dim=1) * 127.5 > VISIBLE_LEVELS
        tried.append(
            TryEdit(images[image_index], row.index, sign, row.main_factor, before, after, float(moved.float().mean()))
        )
        if before != after:
            return tried[-1]
    best = max(tried, key=lambda t: t.visible, default=None)
    return best if best is not None and best.visible > 0 else None


def _first_change(changed: torch.Tensor) -> tuple[int, int]:
    """(sign, image) of the first True in [2, B] (image-major: an image the user sees first), else (0, 0)."""
    hits = changed.t().nonzero()
    return (int(hits[0, 1]), int(hits[0, 0])) if len(hits) else (0, 0)


def read_factor_values(reader: Any, pixels: torch.Tensor, factors: Sequence[Any]) -> list[list[str]]:
    """The reader's value names per image and factor, for pixels [B, 3, S, S] in [-1, 1]."""
    indices = read_factors(reader, pixels)
    return [[factor.values[int(i)] for factor, i in zip(factors, row)] for row in indices]


def vae_round_trip_psnr(model: DiffusionModel, pixels: torch.Tensor) -> float:
    """Mean PSNR (dB) of images against their VAE round trip decode(encode(x)): what every edit's
    "unedited reconstruction" costs even when the inversion is exact in the latents."""
    with torch.no_grad():
        recon = model.decode_latents(model.encode_images(pixels)).float().cpu().clamp(-1, 1)
    return float(masked_psnr(recon, pixels).mean())


def compare_with_random(
    model: DiffusionModel,
    reader: Any,
    test: Split,
    rows: Sequence[DirectionRecord],
    changed: torch.Tensor,
    settings: DemoSettings,
    *,
    say: Callable[[str], None],
    progress: bool = True,
) -> RandomReference | None:
    """Judge every direction against calibrated random directions at the same strength on the same
    test images (:mod:`noiseclr.chance`; the reference is cached per model, images and protocol):
    sets each row's ``random``. None when off (``--random-reference 0``) or with a raw ``--scale``."""
    if not settings.random_reference or settings.scale is not None:
        return None
    names = reader_factor_names(reader, settings.domain)
    reference, cached = split_reference(
        model,
        reader,
        test,
        names,
        settings.strength,
        protocol=settings.protocol(),
        cache=ReferenceCache(default_cache_dir(), shipped=[SHIPPED_DIR]),
        count=settings.random_reference,
        seed=settings.seed,
        progress=progress,
    )
    say(
        f"      compared with {reference.count} random directions at ±{settings.amount()} on the same {settings.domain}"
        + (" (from the cache)" if cached else "")
    )
    for row, verdict in zip(rows, judge(change_fractions(axis_changed(changed)), reference)):
        row.random = verdict
    return reference


def is_clean(row: DirectionRecord) -> bool:
    """Its main factor changed on at least half the images and is at least half of all changes."""
    return row.main_change is not None and row.main_change >= 0.5 - 1e-9 and (row.purity or 0) >= 0.5 - 1e-9


def clean_factors(rows: Sequence[DirectionRecord]) -> list[str]:
    """Distinct main factors of the clean directions (:func:`is_clean`)."""
    return sorted({str(r.main_factor) for r in rows if is_clean(r)})


def _demo_reader(
    model: DiffusionModel, settings: DemoSettings, readers: Mapping[str, Any] | None, reader_dir: str | Path | None
) -> tuple[Any, str]:
    """The factor reader of the demo's domain, or None and why not (the directions stay unnamed)."""
    reader = (readers or {}).get(settings.domain)
    if reader is not None:
        return reader, ""
    try:
        return load_reader(settings.domain, reader_dir, device="cuda" if model.device.type == "cuda" else "cpu"), ""
    except NoiseCLRError as exc:
        log.warning("cannot name the directions: %s", exc)
        return None, str(exc)


@dataclass
class Named:
    """What naming found: one record per direction, the per-image changes, the random reference and
    the annotated directions to save."""

    rows: list[DirectionRecord]
    changes: torch.Tensor | None
    reference: RandomReference | None
    annotated: Directions


def _name_stage(
    model: DiffusionModel,
    directions: Directions,
    reader: Any,
    settings: DemoSettings,
    reader_dir: str | Path | None,
    *,
    say: Callable[[str], None],
    progress: bool,
) -> Named:
    """[3/4]: name every direction on the test images and judge it against random, or (no reader)
    keep them unnamed with the demo's edit setting as their defaults."""
    protocol = settings.protocol()
    if reader is None:
        say("[3/4] naming skipped (no factor reader)")
        rows = [
            DirectionRecord(index=k, name=f"direction {k}").set_edit(**settings.edit()) for k in range(directions.count)
        ]
        directions.edit_defaults = [
            {**row.edit_default(), "inversion": protocol.inversion, "steps": protocol.steps} for row in rows
        ]
        return Named(rows, None, None, directions)
    say(
        f"[3/4] naming each direction: +/-{settings.amount()} on {settings.naming_images} test {settings.domain}, read by the factor reader"
    )
    test = prepare_split(
        model, reader, settings.domain, "demo-test", settings.naming_images, protocol, progress=progress
    )
    rows, changes = name_directions(
        model, directions, reader, settings, progress=progress, return_changes=True, test=test
    )
    reference = compare_with_random(model, reader, test, rows, changes, settings, say=say, progress=progress)
    annotated = annotate_directions(
        model,
        directions,
        rows,
        domain=settings.domain,
        source="noiseclr demo",
        protocol=protocol,
        extra={
            "reader": "shipped" if reader_dir is None else str(reader_dir),
            "images": settings.naming_images,
            "steps": settings.edit_steps,
            "inversion": settings.inversion,
        },
    )
    return Named(rows, changes, reference, annotated)


def _gallery(
    model: DiffusionModel,
    named_file: Directions,
    test_pixels: torch.Tensor,
    test_paths: list[Path],
    out: Path,
    settings: DemoSettings,
    progress: bool,
) -> Any:
    """[4/4]: the explore gallery of every direction at -S, 0, +S on the first test images."""
    from .explore import ExploreSettings, explore

    count = min(settings.gallery_images, settings.naming_images)
    amounts = (
        {"scales": (-settings.scale, 0.0, settings.scale)}
        if settings.scale is not None
        else {"strengths": (-settings.strength, 0.0, settings.strength)}
    )
    explore_settings = ExploreSettings(
        num_images=count,
        window=(0.0, 1.0),
        steps=settings.edit_steps,
        inversion=settings.inversion,
        seed=settings.seed,
        **amounts,
    )
    return explore(
        model,
        named_file,
        ImageSet(test_pixels[:count], test_paths[:count]),
        out / "gallery",
        explore_settings,
        progress=progress,
    )


def reference_summary(reference: RandomReference | None, rows: Sequence[DirectionRecord]) -> dict[str, Any] | None:
    """summary.json's ``random_reference`` block (None when no reference was measured)."""
    if reference is None:
        return None
    return {
        "count": reference.count,
        "strength": reference.strength,
        "images": reference.images,
        "threshold": round(reference.threshold(), 4),
        "random_p95": {name: round(float(q), 4) for name, q in zip(reference.factor_names, reference.percentiles())},
        "beats_random": sum(bool(row.random and row.random["beats_random"]) for row in rows),
        "definition": "noiseclr.chance: beats random when max_f (change_f - random 95th percentile_f) exceeds the "
        "95th percentile of that margin over the random directions (leave-one-out)",
    }


def _write_summaries(
    out: Path,
    model: DiffusionModel,
    settings: DemoSettings,
    named: Named,
    named_file: Directions,
    directions_path: Path,
    named_ok: bool,
    gallery: str,
    try_edit: TryEdit | None,
    vae_psnr: float,
    timings: dict[str, float],
    seconds: float,
    intro: str,
    files: str,
) -> tuple[str, Path, Path]:
    """The printed text, summary.md and summary.json."""
    rows = named.rows
    repeated = repeats((named_file.calibration or {}).get("duplicates") or [])
    notes = "\n".join(
        textwrap.fill(note, width=100)
        for note in (random_note(rows, named.reference), duplicate_note(named_file))
        if note
    )
    table = summary_table(rows, repeated=repeated) + (f"\n{notes}" if notes else "")
    text = f"{intro}\n\n{table}\n\n{files}\n\nDone in {seconds / 60:.1f} min."
    summary_md = atomic_write_text(
        out / "summary.md",
        f"# NoiseCLR demo\n\n{intro}\n\n{summary_table(rows, markdown=True, repeated=repeated)}\n\n{notes}\n\n```\n{files}\n```\n",
    )
    summary_json = atomic_write_json(
        out / "summary.json",
        {
            "model": model.describe(),
            "settings": asdict(settings),
            "named": named_ok,
            "directions_file": str(directions_path),
            "duplicates": (named_file.calibration or {}).get("duplicates", []),
            "clean_factors": clean_factors(rows) if named_ok else None,
            "random_reference": reference_summary(named.reference, rows),
            "vae_round_trip_psnr_db": round(vae_psnr, 2),
            "try_edit": None if try_edit is None else {**asdict(try_edit), "image": str(try_edit.image)},
            "gallery": gallery,
            "directions": [row.to_json() for row in rows],
            "timings_seconds": timings,
            "seconds": round(seconds, 1),
        },
    )
    return text, summary_md, summary_json


def run_demo(
    model: DiffusionModel,
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    readers: Mapping[str, Any] | None = None,
    reader_dir: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> DemoResult:
    """Render, discover, name and show directions; see the module docstring. ``say`` prints stage lines."""
    started = time.monotonic()
    settings = (settings or DemoSettings()).validate()
    check_steps(model, settings.edit_steps, "--edit-steps")
    say = say or (lambda text: log.info("%s", text))
    out = ensure_output_dir(out)
    timings: dict[str, float] = {}
    subject = "face" if settings.domain == "faces" else "cat"

    def stage(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 1)
        return now

    say(
        f"[1/4] rendering {settings.images} training {settings.domain} and {settings.naming_images} test {settings.domain}"
    )
    clock = time.monotonic()
    train_pixels, _ = render_pixels(
        settings.domain, seeds_for("demo-train", settings.images, settings.seed), model.resolution
    )
    test_pixels, _ = render_pixels(
        settings.domain, seeds_for("demo-test", settings.naming_images, settings.seed), model.resolution
    )
    _save_renders(train_pixels, out / "train-images", subject)
    test_paths = _save_renders(test_pixels, out / "test-images", subject)
    clock = stage("render", clock)

    say(f"[2/4] discovering {settings.directions} directions ({settings.steps} steps; labels are never shown to it)")
    directions = _discovery(model, train_pixels, out / "run", settings, progress)
    clock = stage("discovery", clock)

    reader, why_unnamed = _demo_reader(model, settings, readers, reader_dir)
    named = _name_stage(model, directions, reader, settings, reader_dir, say=say, progress=progress)
    clock = stage("naming", clock)
    directions_path = named.annotated.save(out / "directions.safetensors")
    named_file = Directions.load(directions_path)

    say(
        f"[4/4] drawing the gallery ({settings.gallery_images} test {settings.domain} x -{settings.amount()}, 0, +{settings.amount()})"
    )
    gallery = _gallery(model, named_file, test_pixels, test_paths, out, settings, progress)
    rows = named.rows
    for row, strip in zip(rows, gallery.strips):
        row.strip = str(strip.relative_to(out))
    try_edit = (
        pick_try_edit(model, named_file, reader, rows, named.changes, test_paths, settings)
        if reader is not None
        else None
    )
    vae_psnr = vae_round_trip_psnr(model, test_pixels)
    stage("gallery", clock)

    seconds = time.monotonic() - started
    intro, files = _explanation(model, settings, out, rows, reader is not None, why_unnamed, try_edit, vae_psnr)
    text, summary_md, summary_json = _write_summaries(
        out,
        model,
        settings,
        named,
        named_file,
        directions_path,
        reader is not None,
        f"{gallery.index_html}",
        try_edit,
        vae_psnr,
        timings,
        seconds,
        intro,
        files,
    )
    return DemoResult(
        out=out,
        directions_path=directions_path,
        gallery=gallery.index_html,
        summary_md=summary_md,
        summary_json=summary_json,
        rows=rows,
        text=text,
        seconds=seconds,
        named=reader is not None,
        timings=timings,
    )
