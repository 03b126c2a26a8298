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

from .errors import NoiseCLRError

log = logging.getLogger("noiseclr")


# ------------------------------------------------------------------ helpers
def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("noiseclr: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _window(text: str) -> tuple[float, float]:
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START:END fractions, e.g. 0:0.6") from None
    if not 0.0 <= start < end <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= START < END <= 1")
    return start, end


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="embedded",
        help="Stable Diffusion 1.x/2.x pipeline: 'embedded' (the shipped base model), a diffusers folder, or a hub id",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument(
        "--dtype", default="auto", help="auto (bf16 on GPU, float32 on CPU), float32, float16, bfloat16"
    )


def _seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def _load_model(args: argparse.Namespace):
    from .model import DiffusionModel

    return DiffusionModel.load(args.model, device=args.device, dtype=args.dtype)


# ------------------------------------------------------------------ info/export
def cmd_info(args: argparse.Namespace) -> int:
    from .directions import Directions

    directions = Directions.load(args.file)
    norms = directions.vectors.norm(dim=1)
    info = {
        "file": str(args.file),
        "source": directions.source,
        "count": directions.count,
        "token_width": directions.width,
        "model": directions.model_id or "unknown",
        "domain": directions.domain or "",
        "max_length": directions.max_length,
        "fingerprint": (directions.fingerprint or {}).get("sha256", "none (unverified: imported file)"),
        "vector_norm": {"mean": round(float(norms.mean()), 4), "min": round(float(norms.min()), 4), "max": round(float(norms.max()), 4)},
        "settings": directions.settings,
    }
    if args.json:
        info["names"] = directions.names
        info["edit_defaults"] = directions.edit_defaults
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "settings":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:>12}: {value}")
    if directions.settings:
        from .bench import ANNOTATIONS_KEY

        def short(key: str, value: object) -> str:
            # The per-direction measurements of bench/demo copies: summarised (the lines below show them).
            if key == ANNOTATIONS_KEY and isinstance(value, dict):
                return f"{key}=({value.get('source', '')}, {len(value.get('records') or [])} directions; --json for all)"
            return f"{key}={value}"

        shown = ", ".join(short(k, v) for k, v in directions.settings.items())
        print(f"{'settings':>12}: {shown}")
    for index in range(directions.count):
        line = f"  [{index:3d}] {directions.names[index] if directions.names else ''}"
        if directions.edit_defaults:
            d = directions.edit_defaults[index]
            line += f"  scale {d.get('scale')} window {d.get('start', 0)}:{d.get('end', 1)}"
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
    print(f"wrote {len(written)} files to {out}/ ({directions.count} {kind}directions, format {fmt}; see {out / 'README.txt'})")
    sdxl = directions.kind == "sdxl"
    if fmt == "textual-inversion":
        print(f"  tokens {directions.token(0)} .. {directions.token(directions.count - 1)}")
        where = f"{out}/diffusers/text_encoder*/" if sdxl else f"{out}/diffusers/"
        print(f"  diffusers: pipe.load_textual_inversion(...) on {where}*.safetensors (README.txt has the lines)")
    elif fmt == "a1111":
        print(f"  trigger words are the file names, e.g. {directions.file_stem(0)}; copy the files into the tool's embeddings folder")
    else:
        where = f"{out}/text_encoder/ and {out}/text_encoder_2/" if sdxl else f"{out}/"
        print(f"  diffusers: pipe.load_textual_inversion(...) on {where}*.safetensors; token <{directions.file_stem(0)}>")
    return 0


# ------------------------------------------------------------------ discover
def cmd_discover(args: argparse.Namespace) -> int:
    from .discovery import DiscoveryInterrupted, DiscoverySettings, discover

    settings = DiscoverySettings(
        num_directions=args.directions,
        batch_size=args.batch,
        num_negatives=args.negatives,
        micro_batches=args.micro_batches,
        steps=args.steps,
        lr=args.lr,
        temperature=args.temperature,
        seed=args.seed,
        hflip=not args.no_hflip,
        timestep_range=args.timesteps,
        checkpoint_every=args.checkpoint_every,
        domain=args.domain,
        device=args.device,
        dtype=args.dtype,
        gradient_checkpointing=args.gradient_checkpointing,
        channels_last=args.channels_last,
        compile=args.compile,
        **({"loss_variant": args.loss} if args.loss else {}),
    )
    settings.validate()
    try:
        result = discover(args.model, args.images, args.out, settings, resume=args.resume)
    except DiscoveryInterrupted as stop:
        if stop.checkpoint is not None:
            print(f"noiseclr: interrupted at step {stop.step}; checkpoint {stop.checkpoint}; add --resume to continue", file=sys.stderr)
        return 130
    if not result.is_main_process:
        return 0
    print(f"discovered {result.directions.count} directions in {_seconds(result.seconds)} ({result.steps} steps, final loss {result.final_loss:.4f})")
    print(f"  directions: {result.directions_path}")
    print(f"  loss log:   {result.run_dir / 'loss.csv'}")
    print(f"  next:       noiseclr explore --model {args.model} --directions {result.directions_path} --images {args.images} --out {result.run_dir / 'gallery'}")
    return 0


# ------------------------------------------------------------------ edit/generate
def _terms(specs: Sequence[str]):
    from .editing import parse_direction_spec

    loaded: dict = {}
    return [parse_direction_spec(spec, loaded) for spec in specs]


def cmd_edit(args: argparse.Namespace) -> int:
    from .editing import EditSettings, edit
    from .fileio import ensure_output_dir
    from .images import load_image_files, save_image

    started = time.monotonic()
    settings = EditSettings(steps=args.steps, inversion=args.inversion, seed=args.seed, max_batch=args.max_batch)
    terms = _terms(args.direction)
    out = ensure_output_dir(args.out)
    model = _load_model(args)
    images = load_image_files(args.image, model.resolution)
    result = edit(model, images, terms, settings)
    for index, path in enumerate(images.paths):
        save_image(result.edited[index], out / f"{path.stem}-edited.png")
        save_image(result.reconstruction[index], out / f"{path.stem}-reconstruction.png")
    save_image(result.grid(), out / "comparison.png")
    print(f"edited {len(images)} image(s) with {len(terms)} direction(s) in {_seconds(time.monotonic() - started)}")
    for term in terms:
        print(f"  {term.describe()}")
    print(f"  results: {out}/  (*-edited.png, *-reconstruction.png, comparison.png: input | reconstruction | edited)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .editing import generate_latents
    from .fileio import ensure_output_dir
    from .images import make_grid, save_image, tensor_to_pil

    started = time.monotonic()
    terms = _terms(args.direction)
    out = ensure_output_dir(args.out)
    model = _load_model(args)
    prompts = [prompt for prompt in args.prompt for _ in range(args.num_images)]
    variants = [[], terms] if terms else [[]]
    latents = generate_latents(model, prompts, variants, guidance_scale=args.guidance, steps=args.steps, seed=args.seed)
    pixels = model.decode_latents(latents.reshape(-1, *latents.shape[2:])).cpu().view(*latents.shape[:2], 3, model.resolution, model.resolution)
    for p in range(len(prompts)):
        save_image(pixels[-1, p], out / f"{p:03d}.png")
        if terms:
            save_image(pixels[0, p], out / f"{p:03d}-plain.png")
    rows = [[tensor_to_pil(pixels[v, p]) for v in range(len(variants))] for p in range(len(prompts))]
    labels = ["plain", "with directions"] if terms else ["generated"]
    save_image(make_grid(rows, column_labels=labels, row_labels=[p[:24] or "(empty)" for p in prompts]), out / "comparison.png")
    print(f"generated {len(prompts)} image(s) in {_seconds(time.monotonic() - started)} -> {out}/")
    return 0


# ------------------------------------------------------------------ explore
def cmd_explore(args: argparse.Namespace) -> int:
    from .explore import ExploreSettings, explore

    settings = ExploreSettings(
        scales=tuple(args.scales),
        num_images=args.num_images,
        indices=args.indices,
        window=args.window,
        steps=args.steps,
        inversion=args.inversion,
        seed=args.seed,
        directions_per_pass=args.directions_per_pass,
        max_batch=args.max_batch,
    )
    model = _load_model(args)
    result = explore(model, args.directions, args.images, args.out, settings)
    print(f"rendered {len(result.strips)} direction strip(s) in {_seconds(result.seconds)}")
    print(f"  gallery: {result.index_html}")
    return 0


# ------------------------------------------------------------------ bench/demo
def _methods(text: str | None, has_files: bool) -> tuple[str, ...]:
    from .bench import METHODS

    if text is None:
        return ("random", "prompt") if has_files else METHODS
    return tuple(part.strip() for part in text.split(",") if part.strip() and part.strip() != "none")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, check_bench_inputs, parse_directions_args, run_bench

    files = parse_directions_args(args.directions)
    settings = BenchSettings(
        methods=_methods(args.methods, bool(files)),
        num_directions=args.num_directions,
        discovery_steps=args.discovery_steps,
        discovery_images=args.discovery_images,
        discovery_batch=args.discovery_batch,
        discovery_negatives=args.discovery_negatives,
        discovery_micro_batches=args.discovery_micro_batches,
        discovery_lr=args.discovery_lr,
        heldout=args.heldout,
        validation=args.validation,
        steps=args.steps,
        inversion=args.inversion,
        scales=tuple(args.scales),
        windows=tuple(args.windows),
        min_preservation=args.min_preservation,
        strip_images=args.strip_images,
        seed=args.seed,
        trajectories_per_pass=args.trajectories_per_pass,
        max_batch=args.max_batch,
        cross_images=args.cross_images,
        cross_per_domain=args.cross_per_domain,
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

    settings = DemoSettings(
        directions=args.directions,
        steps=args.steps,
        images=args.images,
        batch=args.batch,
        naming_images=args.naming_images,
        gallery_images=args.gallery_images,
        scale=args.scale,
        edit_steps=args.edit_steps,
        seed=args.seed,
        domain=args.domain,
    ).validate()
    print(f"noiseclr demo: discover edit directions on {args.model} without any text, name them, show them (default sizes: about 3 min on a 2-core CPU)")
    model = _load_model(args)
    print(f"  model {model.name} on {model.device} ({str(model.dtype).replace('torch.', '')}), writing to {args.out}/", flush=True)
    result = run_demo(model, args.out, settings, reader_dir=args.readers, say=lambda text: print(text, flush=True))
    print()
    print(result.text)
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noiseclr",
        description="Discover edit directions in Stable Diffusion models from unlabeled images (NoiseCLR), and edit images with them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("discover", help="learn K edit directions from a folder of unlabeled images")
    _add_model_args(p)
    p.add_argument("--images", required=True, type=Path, help="folder of images of one domain (about 100)")
    p.add_argument("--out", required=True, type=Path, help="run folder: directions.safetensors, settings, loss log, checkpoints")
    g = p.add_argument_group("method")
    g.add_argument("--directions", type=int, default=100, metavar="K", help="number of directions (default 100)")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    g.add_argument("--batch", type=int, default=6, metavar="N", help="images per micro-batch per process (default 6)")
    g.add_argument("--negatives", type=int, default=None, metavar="M", help="other directions per micro-batch (default min(20, K-1))")
    g.add_argument("--micro-batches", type=int, default=4, help="micro-batches per optimizer step (default 4)")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    g.add_argument("--temperature", type=float, default=0.5, help="contrastive temperature tau (default 0.5)")
    g.add_argument("--loss", choices=["all-anchors", "single-anchor"], default=None, help="loss variant (default: the library default)")
    g.add_argument("--timesteps", type=_window, default=(0.0, 1.0), metavar="LO:HI", help="timestep range as fractions of T (default 0:1)")
    g.add_argument("--no-hflip", action="store_true", help="do not mirror training images")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--domain", default="", help="label stored with the directions (faces, cats, ...)")
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    g.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (default 200)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute UNet activations (saves memory)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (GPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPU)")
    p.set_defaults(func=cmd_discover)

    direction_help = "FILE:INDEX=SCALE[@START:END] (repeatable; any mix of files, e.g. faces.safetensors:3=4@0:0.6)"
    p = sub.add_parser("edit", help="edit real images with directions (inversion, then guided denoising)")
    _add_model_args(p)
    p.add_argument("--image", required=True, nargs="+", type=Path, help="image file(s)")
    p.add_argument("--direction", required=True, action="append", help=direction_help)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--inversion", choices=["ddim", "ddpm"], default="ddim", help="ddim (default) or ddpm (edit-friendly, exact reconstruction)")
    p.add_argument("--steps", type=_positive_int, default=50, help="inversion and denoising steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the DDPM inversion's noise")
    p.add_argument("--max-batch", type=_positive_int, default=None, help="most UNet rows per call (memory cap)")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("generate", help="text-to-image with directions added")
    _add_model_args(p)
    p.add_argument("--prompt", required=True, action="append", help="prompt (repeatable; '' for unconditional)")
    p.add_argument("--direction", action="append", default=[], help=direction_help)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num-images", type=_positive_int, default=1, help="images per prompt")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("explore", help="render each direction over a few images and scales, with an HTML gallery")
    _add_model_args(p)
    p.add_argument("--directions", required=True, type=Path, help="directions .safetensors")
    p.add_argument("--images", required=True, type=Path, help="folder of images (the first --num-images are used)")
    p.add_argument("--out", required=True, type=Path, help="output folder (PNG strips + index.html)")
    p.add_argument("--scales", type=float, nargs="+", default=[-6.0, -3.0, 0.0, 3.0, 6.0], help="edit scales (default -6 -3 0 3 6)")
    p.add_argument("--num-images", type=_positive_int, default=4)
    p.add_argument("--indices", type=int, nargs="+", default=None, help="only these directions")
    p.add_argument("--window", type=_window, default=None, metavar="START:END", help="active part of the schedule (default: stored per direction, else 0:1)")
    p.add_argument("--inversion", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--directions-per-pass", type=_positive_int, default=8, help="directions rendered together (memory)")
    p.add_argument("--max-batch", type=_positive_int, default=None)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("bench", help="measure what directions change, with the factor readers (ground-truth benchmark)")
    _add_model_args(p)
    p.add_argument("--domain", required=True, help="faces or cats; scenes runs only the cross-domain part (needs --cross-domain)")
    p.add_argument("--out", required=True, type=Path, help="output folder: results.json, report.html, one folder per method")
    p.add_argument("--directions", nargs="+", default=[], metavar="[NAME=]FILE",
                   help="directions files to evaluate (any noiseclr or textual-inversion file); NAME=FILE with NAME "
                        "noiseclr-all or noiseclr-single replaces that discovery")  # fmt: skip
    p.add_argument("--methods", default=None, help="comma list of noiseclr-all, noiseclr-single, random, prompt "
                   "(default: all four; with --directions: random,prompt; 'none' for only the files)")  # fmt: skip
    p.add_argument("--cross-domain", nargs=2, metavar=("FACES_FILE", "CATS_FILE"), default=None,
                   help="annotated faces and cats directions (OUT/<method>/directions.safetensors of earlier bench runs) "
                        "applied together on scene renders")  # fmt: skip
    p.add_argument("--readers", type=Path, default=None, help="folder with <domain>.safetensors reader weights (default: the shipped ones)")
    p.add_argument("--resume", action="store_true", help="reuse finished methods and discovery runs in --out")
    g = p.add_argument_group("discovery (noiseclr-all / noiseclr-single)")
    g.add_argument("--num-directions", type=_positive_int, default=20, metavar="K", help="directions per method (default 20)")
    g.add_argument("--discovery-steps", type=_positive_int, default=500, help="optimizer steps (default 500)")
    g.add_argument("--discovery-images", type=_positive_int, default=100, help="unlabeled renders to learn from (default 100)")
    g.add_argument("--discovery-batch", type=_positive_int, default=6, help="images per micro-batch (default 6)")
    g.add_argument("--discovery-negatives", type=_positive_int, default=None, help="other directions per micro-batch (default min(9, K-1))")
    g.add_argument("--discovery-micro-batches", type=_positive_int, default=2, help="micro-batches per step (default 2)")
    g.add_argument("--discovery-lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--heldout", type=_positive_int, default=200, help="held-out renders every number is measured on (default 200)")
    g.add_argument("--validation", type=_positive_int, default=40, help="validation renders that pick scale and window (default 40)")
    g.add_argument("--steps", type=_positive_int, default=25, help="inversion and denoising steps per edit (default 25)")
    g.add_argument("--inversion", default="ddpm", help="ddpm (default: exact reconstruction) or ddim (the paper's)")
    g.add_argument("--scales", type=float, nargs="+", default=[3.0, 6.0], help="scale magnitudes, each tried with both signs (default 3 6)")
    g.add_argument("--windows", type=_window, nargs="+", default=[(0.0, 1.0), (0.0, 0.5), (0.3, 1.0)], metavar="START:END",
                   help="windows tried per direction (default 0:1 0:0.5 0.3:1)")  # fmt: skip
    g.add_argument("--min-preservation", type=float, default=0.8, help="selection constraint on preservation (default 0.8)")
    g.add_argument("--strip-images", type=int, default=4, help="held-out images per direction strip in the report (default 4)")
    g.add_argument("--seed", type=int, default=0, help="0..4: fresh image sets and seeds for discovery/random/inversion")
    g.add_argument("--cross-images", type=_positive_int, default=100, help="scene renders for --cross-domain (default 100)")
    g.add_argument("--cross-per-domain", type=_positive_int, default=4, help="directions taken from each file for --cross-domain (default 4)")
    g.add_argument("--trajectories-per-pass", type=_positive_int, default=128, help="edited images rendered together (memory)")
    g.add_argument("--max-batch", type=_positive_int, default=None, help="most UNet rows per call (memory)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the main job: discover, name and show face-edit directions on the embedded model (~3 min on a CPU)")
    _add_model_args(p)
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    p.add_argument("--directions", type=_positive_int, default=10, metavar="K", help="directions to discover (default 10)")
    p.add_argument("--steps", type=_positive_int, default=200, help="discovery steps (default 200)")
    p.add_argument("--images", type=_positive_int, default=60, help="training images rendered for discovery (default 60)")
    p.add_argument("--batch", type=_positive_int, default=6, help="images per discovery micro-batch (default 6)")
    p.add_argument("--edit-steps", type=_positive_int, default=20, help="denoising steps for naming and the gallery (default 20)")
    p.add_argument("--scale", type=float, default=12.0, help="each direction is tried at +/- this scale (default 12; the embedded model needs larger scales than SD)")
    p.add_argument("--naming-images", type=_positive_int, default=6, help="new images each direction is measured on (default 6)")
    p.add_argument("--gallery-images", type=_positive_int, default=4, help="images per gallery strip (default 4)")
    p.add_argument("--domain", default="faces", help="faces (default) or cats")
    p.add_argument("--readers", type=Path, default=None, help="folder with reader weights (default: the shipped ones)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="describe a directions file")
    p.add_argument("file", type=Path, help="directions .safetensors (or a textual-inversion .bin/.safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="export directions as textual-inversion embeddings for other tools")
    p.add_argument("file", type=Path, help="directions .safetensors (or any file 'info' accepts)")
    p.add_argument(
        "--format",
        choices=["textual-inversion", "a1111", "diffusers"],  # noiseclr.directions.EXPORT_FORMATS (kept lazy: no torch import)
        default="textual-inversion",
        help="textual-inversion (default): learned_embeds.bin/.safetensors with all tokens + diffusers files; "
        "a1111: one embedding per direction for AUTOMATIC1111, ComfyUI, InvokeAI (emb_params, or clip_l/clip_g for SDXL); "
        "diffusers: one {token: vector} file per direction (and per text encoder for SDXL) for pipe.load_textual_inversion",
    )
    p.add_argument("--out", type=Path, help="output folder (default: FILE-FORMAT/ beside FILE)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except NoiseCLRError as exc:
        print(f"noiseclr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noiseclr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
