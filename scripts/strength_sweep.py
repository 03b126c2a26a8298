#!/usr/bin/env python3
"""Name a directions file's directions at several shared strengths (the demo's naming step).

    python scripts/strength_sweep.py demo-output/run/directions.safetensors --strengths 1 2 3 4 8

For each strength S every direction is applied at +S% and -S% (calibrated: noiseclr.strength) to
the demo's test renders, read by the shipped factor reader, and named as the demo names it; the
table says how many are effective (main factor changed on >= 25% of the images) and how pure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from noiseclr.demo import DemoSettings, name_directions
from noiseclr.directions import Directions
from noiseclr.measure import load_reader
from noiseclr.model import DiffusionModel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directions")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 8.0])
    parser.add_argument("--images", type=int, default=6, help="test renders (the demo's --naming-images)")
    parser.add_argument("--edit-steps", type=int, default=20)
    parser.add_argument("--domain", default="faces")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = DiffusionModel.load(args.model, device="auto", dtype="auto")
    directions = Directions.load(args.directions)
    reader = load_reader(args.domain)
    base = DemoSettings(naming_images=args.images, edit_steps=args.edit_steps, domain=args.domain)
    print("| strength | effective | mean purity (effective) | directions |")
    print("|---:|---:|---:|---|")
    for strength in args.strengths:
        started = time.monotonic()
        records = name_directions(model, directions, reader, replace(base, strength=strength), progress=False)
        effective = [r for r in records if r.effective]
        purity = statistics.fmean(r.purity for r in effective) if effective else float("nan")
        named = "; ".join(f"{r.index}: {r.name} ({r.main_change:.2f}/{r.purity:.2f})" for r in records)
        print(
            f"| {strength:g}% | {len(effective)}/{len(records)} | {purity:.2f} | {named} | ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
