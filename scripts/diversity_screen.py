"""Issue 21's remedy screen: the demo's discovery budget, one remedy per arm, judged the same way.

    python scripts/diversity_screen.py --domain faces --out work/screen/faces-base
    python scripts/diversity_screen.py --domain faces --out work/screen/faces-div1 --diversity-weight 1
    python scripts/diversity_screen.py --table work/screen/*/result.json

Each arm is the demo (``noiseclr.demo``: its discovery, naming and random reference) with the
arm's discovery knobs, which default to off here (the paper's objective) rather than to the demo's
remedies, and ``--test-images`` naming renders.
It reports the clean directions (main factor changed on >= half the images, purity >= 0.5), the
distinct factors among them, the duplicate pairs of the end-of-discovery calibration (|cos| >= 0.8),
and how many beat the random reference (``noiseclr.chance``: 20 calibrated random directions on the
same images; cached in ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from noiseclr.chance import judge
from noiseclr.demo import DemoSettings, clean_factors, compare_with_random, is_clean, name_directions
from noiseclr.discovery import discover
from noiseclr.fileio import atomic_write_json
from noiseclr.measure import load_reader, prepare_split, render_pixels, seeds_for
from noiseclr.model import DiffusionModel


def run_arm(args: argparse.Namespace) -> dict:
    """One arm: the demo's discovery with this arm's knobs, then the demo's naming and random reference."""
    started = time.process_time()
    model = DiffusionModel.load(args.model, device="cpu")
    demo = DemoSettings(
        directions=args.directions,
        steps=args.steps,
        images=args.images,
        negatives=args.negatives,
        magnitude_floor=args.magnitude_floor,
        axis_negatives=args.axis_negatives,
        diversity_weight=args.diversity_weight,
        reseed_duplicates=args.reseed_duplicates,
        domain=args.domain,
        strength=args.strength,
        naming_images=args.test_images,
    ).validate()
    pixels, _ = render_pixels(args.domain, seeds_for("demo-train", args.images, demo.seed), model.resolution)
    found = discover(model, pixels, args.out / "run", demo.discovery(), resume=True, progress=False).directions
    discovery_minutes = (time.process_time() - started) / 60

    reader = load_reader(args.domain)
    test = prepare_split(model, reader, args.domain, "demo-test", args.test_images, demo.protocol(), progress=False)
    records, changed = name_directions(model, found, reader, demo, progress=False, return_changes=True, test=test)
    reference = compare_with_random(model, reader, test, records, changed, demo, say=lambda _: None, progress=False)
    random_wins = judge(reference.changes, reference)  # the reference against itself (not leave-one-out)
    settings = demo.discovery()
    knobs = (
        "num_directions",
        "steps",
        "num_negatives",
        "diversity_weight",
        "reseed_duplicates",
        "magnitude_floor",
        "axis_negatives",
    )
    return {
        "arm": args.out.name,
        "domain": args.domain,
        "settings": {k: getattr(settings, k) for k in knobs},
        "clean": sum(is_clean(r) for r in records),
        "distinct_clean_factors": clean_factors(records),
        "duplicate_pairs": (found.calibration or {}).get("duplicates", []),
        "beats_random": sum(r.random["beats_random"] for r in records),
        "random_threshold": round(reference.threshold(), 4),
        "random_self_wins": sum(v["beats_random"] for v in random_wins),
        "directions": [r.to_json() for r in records],
        "discovery_cpu_minutes": round(discovery_minutes, 1),
        "cpu_minutes": round((time.process_time() - started) / 60, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(paths: list[Path]) -> str:
    lines = [
        "| domain | arm | clean | distinct clean factors | duplicate pairs | beat random | discovery CPU-min |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for path in paths:
        r = json.loads(path.read_text())
        factors = ", ".join(r["distinct_clean_factors"]) or "-"
        lines.append(
            f"| {r['domain']} | {r['arm']} | {r['clean']}/{r['settings']['num_directions']} | "
            f"{len(r['distinct_clean_factors'])}: {factors} | {len(r['duplicate_pairs'])} | "
            f"{r['beats_random']} | {r['discovery_cpu_minutes']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", nargs="+", type=Path, help="print the table of these result.json files and stop")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--domain", default="faces", choices=["faces", "cats"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("work/screen/cache"))
    parser.add_argument("--directions", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--test-images", type=int, default=12)
    parser.add_argument("--strength", type=float, default=3.0)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--diversity-weight", type=float, default=0.0)
    parser.add_argument("--reseed-duplicates", type=float, default=0.0)
    parser.add_argument("--magnitude-floor", type=float, default=0.0)
    parser.add_argument("--axis-negatives", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.out is None:
        parser.error("--out is required")
    torch.set_num_threads(args.threads)
    os.environ["NOISECLR_CACHE"] = str(args.cache)  # the random reference's cache (noiseclr.chance)
    result = run_arm(args)
    atomic_write_json(args.out / "result.json", result)
    print(table([args.out / "result.json"]))


if __name__ == "__main__":
    main()
