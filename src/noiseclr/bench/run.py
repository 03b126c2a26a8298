"""The benchmark run: every method of a domain, then the cross-domain part; results.json and report.html."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..chance import default_cache_dir
from ..directions import Directions
from ..errors import NoiseCLRError
from ..fileio import atomic_write_json, ensure_output_dir
from ..inversion import check_steps
from ..measure import (
    Split,
    load_reader,
    prepare_split,
    reader_factor_names,
    render_pixels,
    seeds_for,
    split_diagnostics,
)
from ..metrics import (
    DEFINITIONS,
    DISCOVERED_PURITY,
    DISCOVERED_CHANGE,
    EFFECTIVE_CHANGE,
    random_directions,
)
from ..model import DiffusionModel
from ..strength import (
    CALIBRATION_IMAGES,
)
from .cross_domain import run_cross_domain
from .evaluate import evaluate_method
from .methods import (
    MethodDirections,
    _discovered,
    _fingerprint,
    _method_order,
    _variant,
    calibrate_method,
    check_bench_inputs,
    method_dirname,
    prompt_captions,
)
from .report import format_table, write_report
from .settings import DISCOVERY_METHODS, BenchSettings
from .versus_random import apply_random_reference

log = logging.getLogger("noiseclr")


# ------------------------------------------------------------------------------------ runner
@dataclass
class BenchResult:
    out: Path
    results_path: Path
    report_path: Path
    results: dict[str, Any]
    table: str
    seconds: float = 0.0


def _load_given(model: DiffusionModel, files: Mapping[str, Path]) -> dict[str, Directions]:
    """Every directions file, loaded and checked first: a bad file fails before any compute."""
    given: dict[str, Directions] = {}
    for name, path in files.items():
        directions = Directions.load(path)
        directions.check_compatible(model)
        given[name] = directions
    return given


def _reader_for(cache: dict[str, Any], name: str, reader_dir: str | Path | None, model: DiffusionModel) -> Any:
    """The factor reader of domain ``name`` (given, or loaded once)."""
    if name not in cache:
        cache[name] = load_reader(name, reader_dir, device="cuda" if model.device.type == "cuda" else "cpu")
    return cache[name]


def _results_header(model: DiffusionModel, domain: str, settings: BenchSettings, methods: list[str]) -> dict[str, Any]:
    return {
        "benchmark": "noiseclr.bench",
        "domain": domain,
        "model": model.describe(),
        "settings": settings.to_json(),
        "methods_run": methods,
        "definitions": DEFINITIONS,
        "thresholds": {
            "discovered_change": DISCOVERED_CHANGE,
            "discovered_purity": DISCOVERED_PURITY,
            "effective_change": EFFECTIVE_CHANGE,
        },
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "methods": {},
        "cross_domain": None,
    }


def _save_progress(results: dict[str, Any], results_path: Path, report_path: Path) -> None:
    apply_random_reference(results)
    atomic_write_json(results_path, results)
    write_report(report_path, results)


def _prepare_splits(
    model: DiffusionModel,
    reader: Any,
    domain: str,
    settings: BenchSettings,
    factor_names: list[str],
    results: dict[str, Any],
    *,
    progress: bool,
) -> tuple[Split, Split]:
    """The validation and held-out splits (rendered, inverted, read); their baseline and seeds go to ``results``."""
    log.info(
        "%s: rendering and inverting %d validation and %d held-out images (%s, %d steps)",
        domain,
        settings.validation,
        settings.heldout,
        settings.inversion,
        settings.steps,
    )
    protocol = settings.protocol()
    validation = prepare_split(model, reader, domain, "validation", settings.validation, protocol, progress=progress)
    heldout = prepare_split(
        model,
        reader,
        domain,
        "heldout",
        settings.heldout,
        protocol,
        keep_images=settings.strip_images,
        keep_recon_pixels=settings.localized,
        progress=progress,
    )
    results["baseline"] = {
        "heldout": split_diagnostics(heldout, factor_names),
        "validation": split_diagnostics(validation, factor_names),
    }
    results["seeds"] = {
        "heldout": [heldout.seeds[0], heldout.seeds[-1]],
        "validation": [validation.seeds[0], validation.seeds[-1]],
        "discovery": [seeds_for("discovery", settings.discovery_images, settings.seed)[i] for i in (0, -1)],
    }
    return validation, heldout


RESULT_FORMAT = 2
"""Bumped when a result's keys change (2: a direction's measured fraction is ``main_change``, once
``strength``), so that a resumed run measures again instead of misreading an older result."""


def _base_fingerprint(model: DiffusionModel, domain: str, settings: BenchSettings) -> dict[str, Any]:
    return {
        "result_format": RESULT_FORMAT,
        "domain": domain,
        "model": model.fingerprint().get("sha256"),
        # The region keys only when localized: global runs keep the fingerprints of earlier runs.
        "settings": {
            k: v
            for k, v in settings.to_json().items()
            if k
            not in ("methods", "trajectories_per_pass", "max_batch", "decode_batch", "cross_images", "cross_per_domain")
            and (settings.localized or k not in ("region", "auto_region", "compose"))
        },
    }


@dataclass
class _Shared:
    """What the methods of one run share: the discovery renders, the calibration latents, the token sets."""

    discovery_pixels: torch.Tensor | None = None
    calibration_latents: torch.Tensor | None = None  # the first discovery renders: the same for every method
    token_sets: dict[str, Directions] = field(default_factory=dict)


def _random_method(
    model: DiffusionModel, name: str, domain: str, settings: BenchSettings, shared: _Shared
) -> MethodDirections:
    reference_name = next(iter(shared.token_sets), None)
    if reference_name is not None:
        reference = shared.token_sets[reference_name].vectors
        source = f"random Gaussian, count and per-row norms of {reference_name}"
    else:
        reference = torch.full((settings.num_directions, model.token_width), 1.0)
        reference = reference / reference.norm(dim=1, keepdim=True) * model.typical_token_norm()
        source = "random Gaussian, norm = the model's typical token norm (no NoiseCLR set in this run)"
    vectors = random_directions(reference, settings.seed)
    return MethodDirections(
        name,
        source,
        directions=Directions.for_model(
            model, vectors, domain=domain, settings={"baseline": "random", "reference": reference_name}
        ),
    )


def _method_directions(
    model: DiffusionModel,
    name: str,
    domain: str,
    settings: BenchSettings,
    given: Mapping[str, Directions],
    files: Mapping[str, Path],
    out: Path,
    shared: _Shared,
    *,
    resume: bool,
    progress: bool,
) -> MethodDirections:
    """Method ``name``'s directions (a given file, a discovery, random or prompts), calibrated."""
    if name in given:
        method = MethodDirections(name, f"file {files[name]}", directions=given[name])
    elif name in DISCOVERY_METHODS:
        if shared.discovery_pixels is None:
            # Unlabeled: only the pixels of the discovery renders reach the method.
            shared.discovery_pixels = render_pixels(
                domain, seeds_for("discovery", settings.discovery_images, settings.seed), model.resolution
            )[0]
        directions = _discovered(
            model, name, shared.discovery_pixels, out, settings, domain, resume=resume, progress=progress
        )
        source = (
            f"discovered in this run ({_variant(name)}, {settings.discovery_steps} steps, "
            f"{settings.discovery_images} unlabeled renders)"
        )
        method = MethodDirections(name, source, directions=directions)
    elif name == "random":
        method = _random_method(model, name, domain, settings, shared)
    else:
        method = MethodDirections(
            name, "captions of each factor value (supervised reference)", prompts=prompt_captions(domain)
        )
    if method.directions is not None and name != "random":
        shared.token_sets[name] = method.directions
    if shared.calibration_latents is None:
        shared.calibration_latents = model.encode_images(
            render_pixels(domain, seeds_for("discovery", CALIBRATION_IMAGES, settings.seed), model.resolution)[0]
        )
    method.responses = calibrate_method(model, method, shared.calibration_latents)
    return method


def _previous_result(name: str, done_path: Path, fingerprint: str, resume: bool) -> dict[str, Any] | None:
    """A finished result of method ``name`` in the output folder, if resuming and nothing changed."""
    if resume and done_path.is_file():
        previous = json.loads(done_path.read_text())
        if previous.get("fingerprint") == fingerprint:
            log.info("%s: reusing finished result %s", name, done_path)
            return previous
        log.info("%s: settings or directions changed since %s; measuring again", name, done_path)
    return None


def method_cache_dir() -> Path:
    """Where results that depend on no directions file (the prompt reference) are kept across runs."""
    return default_cache_dir() / "bench"


def _cached_result(name: str, method: Any, fingerprint: str, folder: Path) -> dict[str, Any] | None:
    """A direction-free method's result measured by an earlier run on the same model, settings and
    images (its fingerprint), copied with its strips into ``folder``; None when there is none."""
    if method.directions is not None:
        return None
    cached = method_cache_dir() / fingerprint
    try:
        result = json.loads((cached / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("fingerprint") != fingerprint:
        return None
    shutil.copytree(cached, folder, dirs_exist_ok=True)
    log.info("%s: reusing the result measured by an earlier run on this model (%s)", name, cached)
    return result


def _cache_result(method: Any, fingerprint: str, folder: Path) -> None:
    """Keep a direction-free method's folder for later runs (copied whole, then renamed into place)."""
    if method.directions is not None or not (folder / "result.json").is_file():
        return
    target = method_cache_dir() / fingerprint
    staging = target.with_name(f".{target.name}.{time.monotonic_ns()}")
    shutil.copytree(folder, staging)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _run_methods(
    model: DiffusionModel,
    domain: str,
    methods: list[str],
    settings: BenchSettings,
    reader: Any,
    given: Mapping[str, Directions],
    files: Mapping[str, Path],
    out: Path,
    results: dict[str, Any],
    save: Callable[[], None],
    *,
    resume: bool,
    progress: bool,
    on_method: Callable[[str, dict[str, Any]], None] | None,
) -> None:
    """Every method of the domain in turn, each result saved as it finishes."""
    factor_names = reader_factor_names(reader, domain)
    results["factors"] = factor_names
    validation, heldout = _prepare_splits(model, reader, domain, settings, factor_names, results, progress=progress)
    base_fingerprint = _base_fingerprint(model, domain, settings)
    shared = _Shared()
    for name in methods:
        method = _method_directions(
            model, name, domain, settings, given, files, out, shared, resume=resume, progress=progress
        )
        fingerprint = _fingerprint(
            {
                **base_fingerprint,
                "method": name,
                "source": method.source,
                "vectors": hashlib.sha256(method.directions.vectors.numpy().tobytes()).hexdigest()
                if method.directions is not None
                else None,
            }
        )
        folder = out / method_dirname(name)
        result = _previous_result(name, folder / "result.json", fingerprint, resume)
        if result is None:
            result = _cached_result(name, method, fingerprint, folder)
        if result is None:
            result = evaluate_method(
                model,
                reader,
                method,
                validation,
                heldout,
                settings,
                out,
                factor_names=factor_names,
                fingerprint=fingerprint,
                progress=progress,
            )
            _cache_result(method, fingerprint, folder)
        results["methods"][name] = result
        save()
        if on_method is not None:
            on_method(name, result)


def run_bench(
    model: DiffusionModel,
    domain: str,
    out: str | Path,
    settings: BenchSettings | None = None,
    *,
    directions_files: Mapping[str, str | Path] | None = None,
    cross_domain: tuple[str | Path | Directions, str | Path | Directions] | None = None,
    readers: Mapping[str, Any] | None = None,
    reader_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_method: Callable[[str, dict[str, Any]], None] | None = None,
) -> BenchResult:
    """Run the benchmark of ``domain`` (``faces``/``cats``; ``scenes`` = only the cross-domain part).

    ``directions_files``: method name -> directions file (a ``noiseclr-all``/``noiseclr-single`` entry
    replaces that discovery). ``readers``: domain -> reader object (default: the shipped readers,
    or ``reader_dir/<domain>.safetensors``). ``resume``: reuse finished methods and discovery runs
    in ``out``. ``on_method(name, result)`` is called as each method finishes.
    """
    started = time.monotonic()
    settings = settings or BenchSettings()
    files = {name: Path(path) for name, path in (directions_files or {}).items()}
    check_bench_inputs(domain, settings, files, cross_domain)
    check_steps(model, settings.steps)
    out = Path(out)
    if (out / "settings.json").is_file() and not resume:
        raise NoiseCLRError(
            f"--out {out}: already holds a benchmark; pass --resume to reuse its finished parts or pick another folder."
        )
    ensure_output_dir(out)
    given = _load_given(model, files)
    methods = _method_order(settings.methods, files) if domain != "scenes" else []
    reader_cache = dict(readers or {})
    results = _results_header(model, domain, settings, methods)
    atomic_write_json(
        out / "settings.json",
        {k: results[k] for k in ("domain", "model", "settings", "methods_run", "started")}
        | {"directions_files": {n: str(p) for n, p in files.items()}},
    )
    results_path = out / "results.json"
    report_path = out / "report.html"

    def save() -> None:
        _save_progress(results, results_path, report_path)

    if methods:
        _run_methods(
            model,
            domain,
            methods,
            settings,
            _reader_for(reader_cache, domain, reader_dir, model),
            given,
            files,
            out,
            results,
            save,
            resume=resume,
            progress=progress,
            on_method=on_method,
        )
    if cross_domain is not None:
        results["cross_domain"] = run_cross_domain(
            model,
            cross_domain[0],
            cross_domain[1],
            out,
            settings,
            _reader_for(reader_cache, "scenes", reader_dir, model),
            progress=progress,
        )
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["seconds"] = round(time.monotonic() - started, 1)
    save()
    return BenchResult(
        out=out,
        results_path=results_path,
        report_path=report_path,
        results=results,
        table=format_table(results),
        seconds=time.monotonic() - started,
    )
