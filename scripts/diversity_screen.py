"""Issue 21's remedy screen: the demo's discovery budget, one remedy per arm, judged the same way.

    python scripts/diversity_screen.py --domain faces --out work/screen/faces-base
    python scripts/diversity_screen.py --domain faces --out work/screen/faces-div1 --diversity-weight 1
    python scripts/diversity_screen.py --table work/screen/*/result.json

Each arm discovers K directions on the demo's training renders (seed 0, batch 6, one micro-batch
per step, the demo's 7 negatives unless --negatives), then applies each at +/- the demo's 3%
calibrated strength to ``--test-images`` held-out demo-test renders (DDPM, 20 steps) and reads them.
It reports the clean directions (main factor changed on >= half the images, purity >= 0.5), the
distinct factors among them, the duplicate pairs of the end-of-discovery calibration (|cos| >= 0.9),
and how many beat the random reference (``noiseclr.chance``: 20 calibrated random directions on the
same images; cached in ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from noiseclr.chance import ReferenceCache, judge, split_reference
from noiseclr.discovery import DiscoverySettings, discover
from noiseclr.fileio import atomic_write_json
from noiseclr.measure import (
    EditProtocol,
    direction_records,
    load_reader,
    prepare_split,
    reader_factor_names,
    render_and_read,
)
from noiseclr.measure import render_pixels, seeds_for
from noiseclr.metrics import SIGNS, axis_changed, change_fractions, changed_mask
from noiseclr.model import DiffusionModel
from noiseclr.terms import DirectionTerm
from noiseclr.world.factors import domain_factors

CLEAN_STRENGTH, CLEAN_PURITY = 0.5, 0.5


def run_arm(args: argparse.Namespace) -> dict:
    started = time.process_time()
    model = DiffusionModel.load(args.model, device="cpu")
    pixels, _ = render_pixels(args.domain, seeds_for("demo-train", args.images, 0), model.resolution)
    settings = DiscoverySettings(
        num_directions=args.directions, steps=args.steps, batch_size=6, micro_batches=1,
        num_negatives=min(args.negatives, args.directions - 1), seed=0, domain=args.domain, checkpoint_every=100,
        diversity_weight=args.diversity_weight, reseed_duplicates=args.reseed_duplicates,
        magnitude_floor=args.magnitude_floor, axis_negatives=args.axis_negatives,
    )  # fmt: skip
    found = discover(model, pixels, args.out / "run", settings, resume=True, progress=False).directions
    discovery_minutes = (time.process_time() - started) / 60

    reader = load_reader(args.domain)
    names = reader_factor_names(reader, args.domain)
    protocol = EditProtocol(steps=20, inversion="ddpm")
    split = prepare_split(model, reader, args.domain, "demo-test", args.test_images, protocol, progress=False)
    edits = [
        [DirectionTerm(found, k, None, strength=sign * args.strength)] for k in range(found.count) for sign in SIGNS
    ]
    read, _ = render_and_read(model, split.inversion, reader, edits, protocol.passes, progress=False)
    edited = read.view(found.count, len(SIGNS), *read.shape[1:])
    changed = changed_mask(edited, split.recon_indices)
    changes = change_fractions(axis_changed(changed))
    records = direction_records(changes, edited, changed, names, [f.values for f in domain_factors(args.domain)])
    reference, cached = split_reference(model, reader, split, names, args.strength, protocol=protocol,
                                        cache=ReferenceCache(args.cache), progress=False)  # fmt: skip
    verdicts = judge(changes, reference)
    clean = [r for r in records if r.strength >= CLEAN_STRENGTH - 1e-9 and r.purity >= CLEAN_PURITY - 1e-9]
    duplicates = (found.calibration or {}).get("duplicates", [])
    random_wins = judge(reference.changes, reference)  # the reference against itself (not leave-one-out)
    return {
        "arm": args.out.name,
        "domain": args.domain,
        "settings": {
            k: getattr(settings, k)
            for k in (
                "num_directions",
                "steps",
                "num_negatives",
                "diversity_weight",
                "reseed_duplicates",
                "magnitude_floor",
                "axis_negatives",
            )
        },  # fmt: skip
        "clean": len(clean),
        "distinct_clean_factors": sorted({r.main_factor for r in clean}),
        "duplicate_pairs": duplicates,
        "beats_random": sum(v["beats_random"] for v in verdicts),
        "beats_random_and_clean_factors": sorted(
            {v["factor"] for v, r in zip(verdicts, records) if v["beats_random"] and r in clean}
        ),  # fmt: skip
        "random_threshold": round(reference.threshold(), 4),
        "random_self_wins": sum(v["beats_random"] for v in random_wins),
        "reference_cached": cached,
        "directions": [{**r.to_json(), "random": v} for r, v in zip(records, verdicts)],
        "discovery_cpu_minutes": round(discovery_minutes, 1),
        "cpu_minutes": round((time.process_time() - started) / 60, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(paths: list[Path]) -> str:
    lines = ["| domain | arm | clean | distinct clean factors | duplicate pairs | beat random | discovery CPU-min |",
             "|---|---|---:|---|---:|---:|---:|"]  # fmt: skip
    for path in paths:
        r = json.loads(path.read_text())
        factors = ", ".join(r["distinct_clean_factors"]) or "-"
        lines.append(f"| {r['domain']} | {r['arm']} | {r['clean']}/{r['settings']['num_directions']} | "
                     f"{len(r['distinct_clean_factors'])}: {factors} | {len(r['duplicate_pairs'])} | "
                     f"{r['beats_random']} | {r['discovery_cpu_minutes']} |")  # fmt: skip
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
    result = run_arm(args)
    atomic_write_json(args.out / "result.json", result)
    print(table([args.out / "result.json"]))


if __name__ == "__main__":
    main()
