#!/usr/bin/env python3
"""Train the factor readers (one small CNN per domain) and write them into the package.

    python scripts/train_readers.py                          # all domains -> src/noiseclr/assets/readers
    python scripts/train_readers.py --domain scenes --steps 3000
    python scripts/train_readers.py --domain faces --out /tmp/readers --eval-images 200

Each reader trains on a fixed set of renders (seeds READER_TRAIN_SEED_BASE + i), augmented afresh
every step, is written as fp16 safetensors with metadata (domain, factors, architecture, this
command, date, device, time), then re-loaded from that file and evaluated on fresh renders
(seeds EVAL_SEED_BASE + i), clean and blurred (sigma 1.0); the accuracies go into the file's
metadata and are printed as a Markdown table. Seeded; prints the device and the time taken.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from noiseclr.errors import NoiseCLRError
from noiseclr.fileio import ensure_output_dir
from noiseclr.world.factors import DOMAINS
from noiseclr.basemodel.reader_training import ReaderTrainSettings, gaussian_blur, parameter_count, train_reader
from noiseclr.world.readers import ASSETS_DIR, FactorReader, eval_renders, reader_accuracy, to_reader_input
from noiseclr.world.seeds import EVAL_SEED_BASE

# Steps per domain when --steps is not given: scenes have 14 factors on half-size objects.
DEFAULT_STEPS = {"faces": 800, "cats": 600, "scenes": 1600}
EVAL_BLUR_SIGMA = 1.0


def evaluate(reader: FactorReader, count: int) -> dict[str, dict[str, float]]:
    images, labels = eval_renders(reader.domain, count)
    blurred = gaussian_blur(to_reader_input(images), EVAL_BLUR_SIGMA)
    return {"clean": reader_accuracy(reader, images, labels), "blur1": reader_accuracy(reader, blurred, labels)}


def _jpeg(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for image in pixels.add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return to_reader_input(np.stack(out))


def _down_up(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    small = F.interpolate(pixels, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


STRESS = {
    # Harder than the training augmentations, to show where reading breaks down.
    "blur 1.5": lambda x: gaussian_blur(x, 1.5),
    "blur 2.0": lambda x: gaussian_blur(x, 2.0),
    "blur 3.0": lambda x: gaussian_blur(x, 3.0),
    "down/up x0.4": lambda x: _down_up(x, 0.4),
    "down/up x0.25": lambda x: _down_up(x, 0.25),
    "jpeg q30": lambda x: _jpeg(x, 30),
    "noise 0.1": lambda x: (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1),
    "noise 0.2": lambda x: (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1),
    "brightness -10%": lambda x: (x + 1) * 0.9 - 1,
}


def stress_table(reader: FactorReader, count: int) -> str:
    """Minimum accuracy over factors under each degradation (and which factor it is)."""
    images, labels = eval_renders(reader.domain, count)
    pixels = to_reader_input(images)
    lines = [f"| {reader.domain}: degradation ({count} renders) | min accuracy | worst factor |", "|---|---|---|"]
    for name, degrade in STRESS.items():
        accuracy = reader_accuracy(reader, degrade(pixels), labels)
        worst = min(accuracy, key=accuracy.get)
        lines.append(f"| {name} | {100 * accuracy[worst]:.2f}% | {worst if accuracy[worst] < 1.0 else '-'} |")
    return "\n".join(lines)


def markdown_table(domain: str, accuracy: dict[str, dict[str, float]], count: int) -> str:
    lines = [f"| {domain} factor | clean ({count}) | blurred sigma {EVAL_BLUR_SIGMA} |", "|---|---|---|"]
    for name in accuracy["clean"]:
        lines.append(f"| {name} | {100 * accuracy['clean'][name]:.2f}% | {100 * accuracy['blur1'][name]:.2f}% |")
    lines.append(
        f"| **min** | **{100 * min(accuracy['clean'].values()):.2f}%** | **{100 * min(accuracy['blur1'].values()):.2f}%** |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=["all", *DOMAINS], default="all")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default per domain: {DEFAULT_STEPS})")
    parser.add_argument("--batch-size", type=int, default=ReaderTrainSettings.batch_size)
    parser.add_argument("--train-images", type=int, default=ReaderTrainSettings.train_images)
    parser.add_argument("--lr", type=float, default=ReaderTrainSettings.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-images", type=int, default=2000, help="fresh renders per domain for the final evaluation"
    )
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="folder for <domain>.safetensors")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (augmentation always runs on the CPU)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (default 1: the machine is shared)"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate the readers in --out (no training)")
    parser.add_argument(
        "--stress",
        type=int,
        default=0,
        metavar="N",
        help="also print accuracy under harder degradations on N fresh renders",
    )
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.steps is not None and args.steps < 1:
            raise NoiseCLRError(f"--steps {args.steps}: must be at least 1.")
        if args.eval_images < 1:
            raise NoiseCLRError(f"--eval-images {args.eval_images}: must be at least 1.")
        out = ensure_output_dir(args.out)
    except NoiseCLRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s))"
    )
    command = "python scripts/train_readers.py " + shlex.join(sys.argv[1:])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(
        f"device: {device_name}; torch {torch.__version__}; started {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        flush=True,
    )

    domains = list(DOMAINS) if args.domain == "all" else [args.domain]
    tables = []
    total = time.monotonic()
    if args.eval_only:
        for domain in domains:
            try:
                reader = FactorReader.load(domain, out / f"{domain}.safetensors")
            except NoiseCLRError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            tables.append(markdown_table(domain, evaluate(reader, args.eval_images), args.eval_images))
            if args.stress:
                tables.append(stress_table(reader, args.stress))
        print("\n\n".join(tables))
        return 0
    for domain in domains:
        settings = ReaderTrainSettings(
            steps=args.steps or DEFAULT_STEPS[domain],
            batch_size=args.batch_size,
            train_images=args.train_images,
            lr=args.lr,
            seed=args.seed,
        )
        result = train_reader(domain, settings, progress=not args.no_progress, device=device)
        path = out / f"{domain}.safetensors"
        train_info = {
            "steps": settings.steps,
            "batch_size": settings.batch_size,
            "train_images": settings.train_images,
            "lr": settings.lr,
            "seed": settings.seed,
            "seconds": round(result.seconds, 1),
            "render_seconds": round(result.render_seconds, 1),
            "augment": asdict(settings.augment),
            "val_accuracy": result.val_accuracy,
        }
        meta = {
            "command": command,
            "date": date,
            "device": device_name,
            "torch": torch.__version__,
            "train": train_info,
        }
        result.reader.save(path, meta)
        # Evaluate what ships: the fp16 file, loaded back.
        started = time.monotonic()
        reader = FactorReader.load(domain, path)
        accuracy = evaluate(reader, args.eval_images)
        reader.save(path, {"eval": {"images": args.eval_images, "seed_base": EVAL_SEED_BASE, **accuracy}})
        table = markdown_table(domain, accuracy, args.eval_images)
        tables.append(table)
        print(
            f"{domain}: trained {settings.steps} steps in {result.seconds / 60:.1f} min "
            f"(rendering {result.render_seconds:.0f} s), {parameter_count(reader)} parameters, "
            f"{path.stat().st_size / 1024:.0f} KiB -> {path}; evaluated in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        print(table, flush=True)
        print(json.dumps({"domain": domain, **accuracy}), flush=True)
        if args.stress:
            tables.append(stress_table(reader, args.stress))
            print(tables[-1], flush=True)
    print(f"total {(time.monotonic() - total) / 60:.1f} min", flush=True)
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
