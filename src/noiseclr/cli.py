"""Command line: parse, call the library, print.

Every subcommand is a thin wrapper over the Python API. User errors (:class:`NoiseCLRError`)
print one line and exit with status 2; Ctrl-C exits with 130 after the library has saved
what it can.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import NoiseCLRError
from .interrupts import Terminated, terminate_as_interrupt
from .options import add_options, field_default, flags, from_args
from .runtime import RuntimeSettings
from .version import __version__

log = logging.getLogger("noiseclr")


# ------------------------------------------------------------------ helpers
def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("noiseclr: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="embedded",
        help="Stable Diffusion 1.x/2.x or XL pipeline: 'embedded' (the shipped base model), a diffusers folder, or a hub id",
    )
    add_options(group, RuntimeSettings, only=("device", "dtype", "threads"))


STORED_PROTOCOL_HELP = {
    "inversion": "as stored with the directions (how they were measured), else ddim",
    "steps": "as stored with the directions, else 50",
}


def _runtime(args: argparse.Namespace) -> RuntimeSettings:
    return from_args(RuntimeSettings, args).validate()


def _seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def _load_model(args: argparse.Namespace):
    return _runtime(args).load(args.model)


# ------------------------------------------------------------------ info/export
def cmd_info(args: argparse.Namespace) -> int:
    from .directions import Directions
    from .terms import stored_defaults

    directions = Directions.load(args.file)
    norms = directions.vectors.norm(dim=1)
    info = {
        "file": str(args.file),
        "source": directions.source,
        "count": directions.count,
        "token_width": directions.width,
        "kind": {"sd": "Stable Diffusion 1.x/2.x", "sdxl": "Stable Diffusion XL"}.get(directions.kind or "", "unknown"),
        "token_widths": directions.token_widths,
        "calibrated": "yes (strengths in % apply)"
        if directions.calibration
        else "no (a % strength is measured on the images edited)",
        "model": directions.model_id or "unknown",
        "domain": directions.domain or "",
        "max_length": directions.max_length,
        "fingerprint": (directions.fingerprint or {}).get("sha256", "none (unverified: imported file)"),
        "vector_norm": {
            "mean": round(float(norms.mean()), 4),
            "min": round(float(norms.min()), 4),
            "max": round(float(norms.max()), 4),
        },
        "settings": directions.settings,
    }
    if args.json:
        info["names"] = directions.names
        info["edit_defaults"] = directions.edit_defaults
        info["calibration"] = directions.calibration
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "settings":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:>12}: {value}")
    if directions.settings:
        from .measure import ANNOTATIONS_KEY

        def short(key: str, value: object) -> str:
            # The per-direction measurements of bench/demo copies: summarised (the lines below show them).
            if key == ANNOTATIONS_KEY and isinstance(value, dict):
                return (
                    f"{key}=({value.get('source', '')}, {len(value.get('records') or [])} directions; --json for all)"
                )
            return f"{key}={value}"

        shown = ", ".join(short(k, v) for k, v in directions.settings.items())
        print(f"{'settings':>12}: {shown}")
    for index in range(directions.count):
        line = f"  [{index:3d}] {directions.names[index] if directions.names else ''}"
        d = stored_defaults(directions, index)
        if d:
            amount = f"strength {d['strength']:g}%" if d.get("strength") is not None else f"scale {d.get('scale')}"
            line += f"  {amount} window {d.get('start', 0)}:{d.get('end', 1)}"
            if d.get("inversion"):
                line += f" ({d['inversion']}, {d.get('steps')} steps)"
        if directions.calibration:
            line += f"  response {directions.response(index):.4g}"
        print(line.rstrip())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .directions import Directions
    from .fileio import ensure_output_dir

    directions = Directions.load(args.file)
    fmt = args.format
    out = Path(args.out) if args.out else Path(args.file).with_name(Path(args.file).stem + f"-{fmt}")
    ensure_output_dir(out)
    written = directions.export(out, fmt)
    kind = f"{directions.kind} " if directions.kind else ""
    print(
        f"wrote {len(written)} files to {out}/ ({directions.count} {kind}directions, format {fmt}; see {out / 'README.txt'})"
    )
    sdxl = directions.kind == "sdxl"
    stem = directions.file_stem(0)
    if fmt in ("textual-inversion", "a1111"):
        print(
            f"  one file per direction; the trigger word is the file name, e.g. {stem}: copy the files into the "
            "tool's embeddings folder (README.txt says how to load them in diffusers)"
        )
    elif fmt == "diffusers":
        where = f"{out}/text_encoder/ and {out}/text_encoder_2/" if sdxl else f"{out}/"
        print(f"  diffusers: pipe.load_textual_inversion(...) on {where}*.safetensors; token <{stem}>")
    else:
        print(
            f"  tokens {directions.token(0)} .. {directions.token(directions.count - 1)} in one file, for the published "
            "NoiseCLR code; for A1111/ComfyUI export with --format textual-inversion"
        )
    return 0


# ------------------------------------------------------------------ discover
def cmd_discover(args: argparse.Namespace) -> int:
    from .discovery import DiscoveryInterrupted, DiscoverySettings, discover

    settings = from_args(DiscoverySettings, args).validate()
    try:
        result = discover(args.model, args.images, args.out, settings, runtime=_runtime(args), resume=args.resume)
    except DiscoveryInterrupted as stop:
        # Discovery has logged the one line: what stopped it, where the checkpoint is, --resume.
        return Terminated.exit_code if stop.terminated else 130
    if not result.is_main_process:
        return 0
    print(
        f"discovered {result.directions.count} directions in {_seconds(result.seconds)} ({result.steps} steps, final loss {result.final_loss:.4f})"
    )
    print(f"  directions: {result.directions_path}")
    print(f"  loss log:   {result.run_dir / 'loss.csv'}")
    print(
        f"  next:       noiseclr explore --model {args.model} --directions {result.directions_path} --images {args.images} --out {result.run_dir / 'gallery'}"
    )
    return 0


# ------------------------------------------------------------------ edit/generate
def _terms(specs: Sequence[str]):
    from .terms import parse_direction_spec

    loaded: dict = {}
    return [parse_direction_spec(spec, loaded) for spec in specs]


def _edit_protocol(args: argparse.Namespace, terms: Sequence, cls: type) -> dict:
    """--inversion/--steps as given, else as stored with the directions, else the settings' defaults."""
    from .terms import EDIT_PROTOCOL_KEYS, edit_protocol, stored_edit_protocol

    given = {name: getattr(args, name) for name in EDIT_PROTOCOL_KEYS}
    return edit_protocol(
        given, stored_edit_protocol(terms), {name: field_default(cls, name) for name in EDIT_PROTOCOL_KEYS}
    )


def _auto_region(args: argparse.Namespace):
    from .regions import AutoRegion

    return from_args(AutoRegion, args).validate()


def _check_masks(specs: Sequence[str], terms: Sequence, images: Sequence[Path]) -> None:
    """Mask files must have their images' aspect ratio and boxes must fit in every image: refused
    before the model loads."""
    from .images import display_size
    from .regions import check_box_fits, check_mask_aspect

    regions = [getattr(term, "region", None) for term in terms]
    if not any(getattr(r, "size", None) or getattr(r, "boxes", None) for r in regions):
        return
    sizes = {}
    for path in images:
        try:
            sizes[Path(path).name] = display_size(Path(path))
        except (OSError, ValueError, SyntaxError):
            continue  # load_image_files names unreadable images
    for spec, region in zip(specs, regions):
        check_mask_aspect(region, sizes, f"--direction {spec}")
        for name, frame in sizes.items() if region is not None and region.boxes and region.frames is None else ():
            for box in region.boxes:
                check_box_fits(box, frame, f"--direction {spec} on {name}")


def cmd_edit(args: argparse.Namespace) -> int:
    from .editing import EditSettings, edit
    from .fileio import check_output_dir, ensure_output_dir
    from .images import check_image_files, load_image_files, save_image

    started = time.monotonic()
    runtime = _runtime(args)
    terms = _terms(args.direction)
    settings = from_args(
        EditSettings, args, **_edit_protocol(args, terms, EditSettings), auto_region=_auto_region(args)
    )
    check_image_files(
        args.image, max_pixels=runtime.max_pixels
    )  # before the model load; --out is created once there is a result
    _check_masks(args.direction, terms, args.image)
    out = check_output_dir(args.out)
    model = runtime.load(args.model)
    images = load_image_files(args.image, model.resolution, max_pixels=runtime.max_pixels)
    result = edit(model, images, terms, settings)
    ensure_output_dir(out)
    regions = result.region_images()
    for index, path in enumerate(images.paths):
        save_image(result.edited[index], out / f"{path.stem}-edited.png")
        save_image(result.reconstruction[index], out / f"{path.stem}-reconstruction.png")
        if regions is not None:
            save_image(regions[index], out / f"{path.stem}-region.png")
    save_image(result.grid(), out / "comparison.png")
    print(
        f"edited {len(images)} image(s) with {len(terms)} direction(s) in {_seconds(time.monotonic() - started)} "
        f"({settings.inversion.upper()} inversion, {settings.steps} steps)"
    )
    for term in terms:
        print(f"  {term.describe()}")
    if any(term.strength is not None and term.scale is not None for term in terms):
        print(
            "  (x...) after a strength: the raw guidance scale lambda that gives this direction that strength "
            "(from its calibrated response; directions respond differently, so equal strengths need different lambdas)"
        )
    if regions is not None:
        for line in _coverage_lines(terms, result):
            print(line)
        print(
            f"  results: {out}/  (*-edited.png, *-reconstruction.png, *-region.png: the edit dimmed outside its region, "
            "comparison.png: input | reconstruction | edited | region)"
        )
    else:
        print(
            f"  results: {out}/  (*-edited.png, *-reconstruction.png, comparison.png: input | reconstruction | edited)"
        )
    return 0


def _coverage_lines(terms: Sequence, result) -> list[str]:
    """Per term, the share of the latent grid its own region covered (per image); then the union."""

    def shares(values) -> str:
        return "/".join(f"{100 * v:.0f}%" for v in values)

    lines = ["  regions (share of the latent grid each term's own region covered, per image):"]
    for number, (term, covered) in enumerate(zip(terms, result.coverage()), start=1):
        where = "global" if term.region is None else f"#{term.region.label()}"
        lines.append(f"    term {number} ({where}): {shares(covered)}")
    union = [float(r.mean()) for r in result.region]
    lines.append(f"    all terms together: {shares(union)}; outside that the images are the reconstruction")
    return lines


def cmd_generate(args: argparse.Namespace) -> int:
    from .fileio import check_output_dir, ensure_output_dir
    from .generation import GenerateSettings, generate
    from .images import save_image

    started = time.monotonic()
    settings = from_args(GenerateSettings, args, auto_region=_auto_region(args))
    terms = _terms(args.direction)
    out = check_output_dir(args.out)
    model = _load_model(args)
    result = generate(model, args.prompt, terms, settings, compare=bool(terms))
    ensure_output_dir(out)
    for p in range(len(result)):
        save_image(result.images[p], out / f"{p:03d}.png")
        if result.plain is not None:
            save_image(result.plain[p], out / f"{p:03d}-plain.png")
    save_image(result.grid(), out / "comparison.png")
    print(f"generated {len(result)} image(s) in {_seconds(time.monotonic() - started)} -> {out}/")
    return 0


# ------------------------------------------------------------------ explore
def cmd_explore(args: argparse.Namespace) -> int:
    from .explore import ExploreSettings, explore
    from .images import check_image_folder, load_image_folder

    runtime = _runtime(args)
    settings = from_args(ExploreSettings, args, auto_region=_auto_region(args))
    check_image_folder(args.images, max_pixels=runtime.max_pixels)  # before the model load
    model = runtime.load(args.model)
    images = load_image_folder(args.images, model.resolution, min_count=1, max_pixels=runtime.max_pixels)
    result = explore(model, args.directions, images, args.out, settings)
    print(f"rendered {len(result.strips)} direction strip(s) in {_seconds(result.seconds)}")
    print(f"  gallery: {result.index_html}")
    return 0


# ------------------------------------------------------------------ bench/demo
def _methods(text: str | None, has_files: bool) -> tuple[str, ...]:
    from .bench import DEFAULT_METHODS

    if text is None:
        return ("random", "prompt") if has_files else DEFAULT_METHODS
    return tuple(part.strip() for part in text.split(",") if part.strip() and part.strip() != "none")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, check_bench_inputs, parse_directions_args, run_bench

    files = parse_directions_args(args.directions)
    settings = from_args(
        BenchSettings, args, methods=_methods(args.methods, bool(files)), auto_region=_auto_region(args)
    )
    cross = tuple(args.cross_domain) if args.cross_domain else None
    check_bench_inputs(args.domain, settings, files, cross)
    model = _load_model(args)
    result = run_bench(
        model,
        args.domain,
        args.out,
        settings,
        directions_files=files,
        cross_domain=cross,
        reader_dir=args.readers,
        resume=args.resume,
    )
    print(result.table)
    print(f"benchmark finished in {_seconds(result.seconds)}")
    print(f"  results: {result.results_path}")
    print(f"  report:  {result.report_path}")
    for name, method in result.results["methods"].items():
        if method.get("directions_file"):
            print(f"  {name}: annotated directions {Path(args.out) / method['directions_file']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo

    settings = from_args(DemoSettings, args).validate()
    print(
        f"noiseclr demo: discover edit directions on {args.model} without any text, name them, show them "
        "(default sizes: about 4.5 min on a 2-core CPU)",
        flush=True,
    )  # before the libraries' loading bars
    model = _load_model(args)
    print(
        f"  model {model.name} on {model.device} ({str(model.dtype).replace('torch.', '')}), writing to {args.out}/",
        flush=True,
    )
    result = run_demo(model, args.out, settings, reader_dir=args.readers, say=lambda text: print(text, flush=True))
    print()
    print(result.text)
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The command line. Every option of a settings class comes from that class's fields
    (:func:`noiseclr.options.add_options`): flags, defaults and help live in one place."""
    parser = argparse.ArgumentParser(
        prog="noiseclr",
        description="Discover edit directions in Stable Diffusion models from unlabeled images (NoiseCLR), and edit images with them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("--version", action="version", version=f"noiseclr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _discover_parser,
        _edit_parser,
        _generate_parser,
        _explore_parser,
        _bench_parser,
        _demo_parser,
        _info_parser,
        _export_parser,
    ):
        add(sub)
    return parser


DIRECTION_HELP = (
    "FILE:INDEX=SCALE[@START:END][#auto|#MASK] (repeatable; any mix of files, e.g. faces.safetensors:3=4@0:0.6; "
    "#auto or #mask.png localizes the direction)"
)


def _discover_parser(sub: Any) -> None:
    from .discovery import DiscoverySettings

    p = sub.add_parser("discover", help="learn K edit directions from a folder of unlabeled images")
    _add_model_args(p)
    p.add_argument("--images", required=True, type=Path, help="folder of images of one domain (about 100)")
    p.add_argument(
        "--out", required=True, type=Path, help="run folder: directions.safetensors, settings, loss log, checkpoints"
    )
    add_options(p.add_argument_group("method"), DiscoverySettings, exclude=("checkpoint_every",))
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    add_options(g, DiscoverySettings, only=("checkpoint_every",))
    add_options(g, RuntimeSettings, only=("gradient_checkpointing", "channels_last", "compile", "max_megapixels"))
    p.set_defaults(func=cmd_discover)


def _edit_parser(sub: Any) -> None:
    from .editing import EditSettings
    from .regions import AutoRegion

    p = sub.add_parser("edit", help="edit real images with directions (inversion, then guided denoising)")
    _add_model_args(p)
    p.add_argument("--image", required=True, nargs="+", type=Path, help="image file(s)")
    p.add_argument("--direction", required=True, action="append", help=DIRECTION_HELP)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_options(p, EditSettings, defaults={"inversion": None, "steps": None}, default_texts=STORED_PROTOCOL_HELP)
    add_options(p, RuntimeSettings, only=("max_megapixels",))
    add_options(p.add_argument_group("auto regions (#auto)"), AutoRegion)
    p.set_defaults(func=cmd_edit)


def _generate_parser(sub: Any) -> None:
    from .generation import GenerateSettings
    from .regions import AutoRegion

    p = sub.add_parser("generate", help="text-to-image with directions added")
    _add_model_args(p)
    p.add_argument("--prompt", required=True, action="append", help="prompt (repeatable; '' for unconditional)")
    p.add_argument("--direction", action="append", default=[], help=DIRECTION_HELP)
    p.add_argument("--out", required=True, type=Path)
    add_options(p, GenerateSettings)
    add_options(p.add_argument_group("auto regions (#auto)"), AutoRegion)
    p.set_defaults(func=cmd_generate)


def _explore_parser(sub: Any) -> None:
    from .explore import ExploreSettings
    from .regions import AutoRegion

    p = sub.add_parser("explore", help="render each direction over a few images and scales, with an HTML gallery")
    _add_model_args(p)
    p.add_argument("--directions", required=True, type=Path, help="directions .safetensors")
    p.add_argument("--images", required=True, type=Path, help="folder of images (the first --num-images are used)")
    p.add_argument("--out", required=True, type=Path, help="output folder (PNG strips + index.html)")
    add_options(p, ExploreSettings)
    add_options(p, RuntimeSettings, only=("max_megapixels",))
    add_options(p.add_argument_group("auto regions (--region auto)"), AutoRegion)
    p.set_defaults(func=cmd_explore)


def _bench_parser(sub: Any) -> None:
    from .bench import DEFAULT_METHODS, METHODS, BenchSettings
    from .regions import AutoRegion

    p = sub.add_parser("bench", help="measure what directions change, with the factor readers (ground-truth benchmark)")
    _add_model_args(p)
    p.add_argument(
        "--domain", required=True, help="faces or cats; scenes runs only the cross-domain part (needs --cross-domain)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output folder: results.json, report.html, one folder per method"
    )
    p.add_argument(
        "--directions",
        nargs="+",
        default=[],
        metavar="[NAME=]FILE",
        help="directions files to evaluate (any noiseclr or textual-inversion file); NAME=FILE with NAME "
        "noiseclr-all or noiseclr-single replaces that discovery",
    )
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma list of {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)}; "
        "with --directions: random,prompt; 'none' for only the files)",
    )
    p.add_argument(
        "--cross-domain",
        nargs=2,
        metavar=("FACES_FILE", "CATS_FILE"),
        default=None,
        help="annotated faces and cats directions (OUT/<method>/directions.safetensors of earlier bench runs) "
        "applied together on scene renders",
    )
    p.add_argument(
        "--readers",
        type=Path,
        default=None,
        help="folder with <domain>.safetensors reader weights (default: the shipped ones)",
    )
    p.add_argument("--resume", action="store_true", help="reuse finished methods and discovery runs in --out")
    discovery_fields = [f for f in flags(BenchSettings) if f.startswith("discovery_") or f == "num_directions"]
    add_options(
        p.add_argument_group("discovery (noiseclr-all / noiseclr-single)"), BenchSettings, only=discovery_fields
    )
    add_options(p.add_argument_group("evaluation"), BenchSettings, exclude=discovery_fields)
    add_options(p.add_argument_group("auto regions (--region auto)"), AutoRegion)
    p.set_defaults(func=cmd_bench)


def _demo_parser(sub: Any) -> None:
    from .demo import DemoSettings

    p = sub.add_parser(
        "demo",
        help="the main job: discover, name and show face-edit directions on the embedded model (~4.5 min on a 2-core CPU)",
    )
    _add_model_args(p)
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    add_options(p, DemoSettings)
    p.add_argument("--readers", type=Path, default=None, help="folder with reader weights (default: the shipped ones)")
    p.set_defaults(func=cmd_demo)


def _info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a directions file")
    p.add_argument("file", type=Path, help="directions .safetensors (or a textual-inversion .bin/.safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export directions as textual-inversion embeddings for other tools")
    p.add_argument("file", type=Path, help="directions .safetensors (or any file 'info' accepts)")
    p.add_argument(
        "--format",
        choices=[
            "textual-inversion",
            "a1111",
            "diffusers",
            "noiseclr-published",
        ],  # directions.EXPORT_FORMATS (no torch import here)
        default="textual-inversion",
        help="textual-inversion (default): one embedding file per direction that AUTOMATIC1111, ComfyUI and diffusers "
        "all read; a1111: one per direction in kohya's layout (emb_params, or clip_l/clip_g for SDXL) for A1111, ComfyUI, "
        "InvokeAI; diffusers: one {token: vector} file per direction (and per text encoder for SDXL) for "
        "pipe.load_textual_inversion; noiseclr-published: all directions in one learned_embeds.bin/.safetensors, the "
        "published NoiseCLR code's layout (not for an embeddings folder: tools read only its first direction)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: FILE-FORMAT/ beside FILE)")
    p.set_defaults(func=cmd_export)


def _root_parser() -> argparse.ArgumentParser:
    """Only the options that need no subcommand: answers ``--version`` before the settings
    classes (and torch, which their modules import) are loaded."""
    parser = argparse.ArgumentParser(prog="noiseclr", add_help=False)
    parser.add_argument("--version", action="version", version=f"noiseclr {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--version" in argv[:1]:
        _root_parser().parse_args(argv[:1])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        # SIGTERM (Slurm, Kubernetes, timeout) is handled like Ctrl-C: checkpoints are written.
        with terminate_as_interrupt():
            return int(args.func(args) or 0)
    except NoiseCLRError as exc:
        print(f"noiseclr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        # Discovery (also inside demo/bench) reports SIGTERM on its own exception, and has logged its line.
        terminated = isinstance(stop, Terminated) or getattr(stop, "terminated", False)
        if not getattr(stop, "logged", False):
            what = "terminated (SIGTERM); finished parts are saved, rerun to continue" if terminated else "interrupted"
            print(f"noiseclr: {what}", file=sys.stderr)
        return Terminated.exit_code if terminated else 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
