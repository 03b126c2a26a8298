#!/usr/bin/env python3
"""Do fewer denoising steps measure the same? Change tables of a directions file at several step counts.

    python scripts/bench_steps_check.py demo-output/run/directions.safetensors --strength 3 --images 12 --steps 8 12 25

Every direction at +-STRENGTH% on the same validation renders, edit-friendly DDPM inversion at each
step count (which reconstructs exactly at any count), read by the shipped reader; prints each
direction's main factor, strength and purity per step count, and how much the tables differ.
"""

from __future__ import annotations

import argparse
import time

import torch

from noiseclr.directions import Directions
from noiseclr.terms import DirectionTerm
from noiseclr.measure import EditProtocol, load_reader, prepare_split, render_and_read
from noiseclr.metrics import SIGNS, axis_changed, change_fractions, changed_mask, direction_metrics
from noiseclr.model import DiffusionModel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directions")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--domain", default="faces")
    parser.add_argument("--strength", type=float, default=3.0)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 12, 25])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = DiffusionModel.load(args.model)
    directions = Directions.load(args.directions)
    reader = load_reader(args.domain)
    tables = {}
    for steps in args.steps:
        started = time.monotonic()
        protocol = EditProtocol(steps=steps, inversion="ddpm", seed=0)
        split = prepare_split(model, reader, args.domain, "validation", args.images, protocol, progress=False)
        edits = [
            [DirectionTerm(directions, k, strength=sign * args.strength)]
            for k in range(directions.count)
            for sign in SIGNS
        ]
        edited, _ = render_and_read(model, split.inversion, reader, edits, protocol.passes, progress=False)
        edited = edited.view(directions.count, len(SIGNS), *edited.shape[1:])
        tables[steps] = change_fractions(axis_changed(changed_mask(edited, split.recon_indices)))
        m = direction_metrics(tables[steps])
        cells = ", ".join(f"{int(f)}:{s:.2f}/{p:.2f}" for f, s, p in zip(m.main, m.main_change, m.purity))
        print(f"{steps} steps ({time.monotonic() - started:.0f} s): main factor:strength/purity {cells}", flush=True)
    for a in args.steps:
        for b in args.steps:
            if a < b:
                ma, mb = direction_metrics(tables[a]), direction_metrics(tables[b])
                print(
                    f"{a} vs {b} steps: same main factor {float((ma.main == mb.main).double().mean()):.2f}; "
                    f"mean |main change diff| {float((ma.main_change - mb.main_change).abs().mean()):.3f}; "
                    f"mean |purity diff| {float((ma.purity - mb.purity).abs().mean()):.3f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
