"""The benchmark run: every method of a domain, then the cross-domain part; results.json and report.html."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..directions import Directions
from ..errors import NoiseCLRError
from ..fileio import atomic_write_json, ensure_output_dir
from ..inversion import check_steps
from ..measure import (
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
    DISCOVERED_STRENGTH,
    EFFECTIVE_STRENGTH,
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
from .settings import DISCOVERY_METHODS, BenchSettings

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
    from .report import format_table, write_report

    started = time.monotonic()
    settings = settings or BenchSettings()
    files = {name: Path(path) for name, path in (directions_files or {}).items()}
    check_bench_inputs(domain, settings, files, cross_domain)
    check_steps(model, settings.steps)
    out = Path(out)
    if (out / "settings.json").is_file() and not resume:
        raise NoiseCLRError(f"--out {out}: already holds a benchmark; pass --resume to reuse its finished parts or pick another folder.")
    ensure_output_dir(out)

    # Load every directions file first: a bad file fails before any compute.
    given: dict[str, Directions] = {}
    for name, path in files.items():
        directions = Directions.load(path)
        directions.check_compatible(model)
        given[name] = directions
    methods = _method_order(settings.methods, files) if domain != "scenes" else []

    reader_cache = dict(readers or {})

    def reader_for(name: str) -> Any:
        if name not in reader_cache:
            reader_cache[name] = load_reader(name, reader_dir, device="cuda" if model.device.type == "cuda" else "cpu")
        return reader_cache[name]

    results: dict[str, Any] = {
        "benchmark": "noiseclr.bench",
        "domain": domain,
        "model": model.describe(),
        "settings": settings.to_json(),
        "methods_run": methods,
        "definitions": DEFINITIONS,
        "thresholds": {"discovered_strength": DISCOVERED_STRENGTH, "discovered_purity": DISCOVERED_PURITY,
                       "effective_strength": EFFECTIVE_STRENGTH},  # fmt: skip
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "methods": {},
        "cross_domain": None,
    }
    atomic_write_json(out / "settings.json", {k: results[k] for k in ("domain", "model", "settings", "methods_run", "started")}
                      | {"directions_files": {n: str(p) for n, p in files.items()}})  # fmt: skip
    results_path = out / "results.json"
    report_path = out / "report.html"

    def save_progress() -> None:
        atomic_write_json(results_path, results)
        write_report(report_path, results)

    if methods:
        reader = reader_for(domain)
        factor_names = reader_factor_names(reader, domain)
        results["factors"] = factor_names
        log.info("%s: rendering and inverting %d validation and %d held-out images (%s, %d steps)",
                 domain, settings.validation, settings.heldout, settings.inversion, settings.steps)  # fmt: skip
        protocol = settings.protocol()
        validation = prepare_split(model, reader, domain, "validation", settings.validation, protocol, progress=progress)
        heldout = prepare_split(model, reader, domain, "heldout", settings.heldout, protocol,
                                keep_images=settings.strip_images, keep_recon_pixels=settings.localized, progress=progress)  # fmt: skip
        results["baseline"] = {"heldout": split_diagnostics(heldout, factor_names),
                               "validation": split_diagnostics(validation, factor_names)}  # fmt: skip
        results["seeds"] = {
            "heldout": [heldout.seeds[0], heldout.seeds[-1]],
            "validation": [validation.seeds[0], validation.seeds[-1]],
            "discovery": [seeds_for("discovery", settings.discovery_images, settings.seed)[i] for i in (0, -1)],
        }
        base_fingerprint = {
            "domain": domain,
            "model": model.fingerprint().get("sha256"),
            # The region keys only when localized: global runs keep the fingerprints of earlier runs.
            "settings": {k: v for k, v in settings.to_json().items()
                         if k not in ("methods", "trajectories_per_pass", "max_batch", "decode_batch", "cross_images", "cross_per_domain")
                         and (settings.localized or k not in ("region", "auto_region"))},
        }  # fmt: skip
        discovery_pixels: torch.Tensor | None = None
        calibration_latents: torch.Tensor | None = None  # the first discovery renders: the same for every method
        token_sets: dict[str, Directions] = {}
        for name in methods:
            # Each method's directions.
            if name in given:
                method = MethodDirections(name, f"file {files[name]}", directions=given[name])
            elif name in DISCOVERY_METHODS:
                if discovery_pixels is None:
                    # Unlabeled: only the pixels of the discovery renders reach the method.
                    discovery_pixels = render_pixels(domain, seeds_for("discovery", settings.discovery_images, settings.seed),
                                                     model.resolution)[0]  # fmt: skip
                directions = _discovered(model, name, discovery_pixels, out, settings, domain, resume=resume, progress=progress)
                source = (f"discovered in this run ({_variant(name)}, {settings.discovery_steps} steps, "
                          f"{settings.discovery_images} unlabeled renders)")  # fmt: skip
                method = MethodDirections(name, source, directions=directions)
            elif name == "random":
                reference_name = next(iter(token_sets), None)
                if reference_name is not None:
                    reference = token_sets[reference_name].vectors
                    source = f"random Gaussian, count and per-row norms of {reference_name}"
                else:
                    reference = torch.full((settings.num_directions, model.token_width), 1.0)
                    reference = reference / reference.norm(dim=1, keepdim=True) * model.typical_token_norm()
                    source = "random Gaussian, norm = the model's typical token norm (no NoiseCLR set in this run)"
                vectors = random_directions(reference, settings.seed)
                method = MethodDirections(name, source, directions=Directions.for_model(
                    model, vectors, domain=domain, settings={"baseline": "random", "reference": reference_name}))  # fmt: skip
            else:
                method = MethodDirections(name, "captions of each factor value (supervised reference)", prompts=prompt_captions(domain))
            if method.directions is not None and name != "random":
                token_sets[name] = method.directions
            if calibration_latents is None:
                calibration_latents = model.encode_images(render_pixels(
                    domain, seeds_for("discovery", CALIBRATION_IMAGES, settings.seed), model.resolution)[0])  # fmt: skip
            method.responses = calibrate_method(model, method, calibration_latents)
            fingerprint = _fingerprint({**base_fingerprint, "method": name, "source": method.source,
                                        "vectors": hashlib.sha256(method.directions.vectors.numpy().tobytes()).hexdigest()
                                        if method.directions is not None else None})  # fmt: skip
            done_path = out / method_dirname(name) / "result.json"
            result = None
            if resume and done_path.is_file():
                previous = json.loads(done_path.read_text())
                if previous.get("fingerprint") == fingerprint:
                    log.info("%s: reusing finished result %s", name, done_path)
                    result = previous
                else:
                    log.info("%s: settings or directions changed since %s; measuring again", name, done_path)
            if result is None:
                result = evaluate_method(model, reader, method, validation, heldout, settings, out,
                                         factor_names=factor_names, fingerprint=fingerprint, progress=progress)  # fmt: skip
            results["methods"][name] = result
            save_progress()
            if on_method is not None:
                on_method(name, result)

    if cross_domain is not None:
        results["cross_domain"] = run_cross_domain(model, cross_domain[0], cross_domain[1], out, settings,
                                                   reader_for("scenes"), progress=progress)  # fmt: skip
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["seconds"] = round(time.monotonic() - started, 1)
    save_progress()
    return BenchResult(
        out=out,
        results_path=results_path,
        report_path=report_path,
        results=results,
        table=format_table(results),
        seconds=time.monotonic() - started,
    )


