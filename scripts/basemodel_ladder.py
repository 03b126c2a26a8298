#!/usr/bin/env python3
"""The diagnostic ladder of a base model (issue 20): per factor value, VAE -> text -> UNet -> generation -> probe.

    python scripts/basemodel_ladder.py --threads 1 --out docs/basemodel_ladder          # the shipped model
    python scripts/basemodel_ladder.py --model work/arm-a/export --out work/ladder/arm-a
    python scripts/basemodel_ladder.py --rungs vae text unet --out /tmp/l              # the cheap rungs only

Writes ``<out>.json`` (every number) and ``<out>.md`` (tables); prints the process CPU time of
each rung (the budget figure on shared cores). Sizes: see ``LadderSettings`` (the defaults are
the "small setting" the ablation arms are compared at).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from noiseclr.basemodel import ladder, quality
from noiseclr.fileio import atomic_write_json, atomic_write_text
from noiseclr.model import DiffusionModel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("docs/basemodel_ladder"), help="path stem for .json and .md")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rungs", nargs="+", choices=list(ladder.RUNGS), default=list(ladder.RUNGS))
    parser.add_argument("--vae-images", type=int, default=None)
    parser.add_argument("--unet-images", type=int, default=None)
    parser.add_argument("--samples-per-value", type=int, default=None)
    parser.add_argument("--probe-images", type=int, default=None)
    parser.add_argument("--title", default=None, help="heading of the Markdown report")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = ladder.LadderSettings()
    overrides = {
        k: getattr(args, k) for k in ("vae_images", "unet_images", "samples_per_value") if getattr(args, k) is not None
    }
    settings = replace(settings, **overrides)
    if args.probe_images is not None:
        settings = replace(settings, probe=replace(settings.probe, images=args.probe_images))
    cpu, wall = time.process_time(), time.monotonic()
    model = DiffusionModel.load(args.model, device=args.device, dtype="float32")
    device = (
        torch.cuda.get_device_name(model.device)
        if model.device.type == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    print(f"device: {device}; model {model.name}", flush=True)
    readers = quality.load_readers()
    result = ladder.run_ladder(model, readers, settings, args.rungs, log=lambda m: print(m, flush=True))
    result.update(
        model=str(args.model),
        device=device,
        command=shlex.join(["python", *sys.argv]),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        cpu_minutes=round((time.process_time() - cpu) / 60, 2),
        wall_minutes=round((time.monotonic() - wall) / 60, 2),
    )
    atomic_write_json(args.out.with_suffix(".json"), result)
    title = args.title or f"Diagnostic ladder of `{args.model}`"
    head = (
        f"{title}\n\nMeasured {result['date']} on {device}: {result['cpu_minutes']:.1f} CPU-min "
        f"({result['wall_minutes']:.1f} min wall). Command: `{result['command']}`\n"
    )
    atomic_write_text(args.out.with_suffix(".md"), head + "\n" + ladder.markdown(result) + "\n")
    print(ladder.markdown(result))
    print(f"ladder: {result['cpu_minutes']:.1f} CPU-min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
