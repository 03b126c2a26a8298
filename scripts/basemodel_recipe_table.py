#!/usr/bin/env python3
"""The ablation table of issue 20 from ``scripts/basemodel_ablation.sh``'s folders.

    python scripts/basemodel_recipe_table.py work/abl --arms control a b c abc > table.md

One row per arm: steps, process CPU minutes of training (``runs.json``) and of its ladder, and the
ladder's per-domain means plus the small faces factors; then one per-factor row block per arm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from noiseclr.basemodel import ladder  # noqa: E402

SMALL = ("glasses", "mustache", "mouth", "lipstick")


def arm_row(folder: Path) -> dict:
    runs = json.loads((folder / "runs.json").read_text())
    train = [r for r in runs if "diffusion" in r["stages"]]
    result = json.loads((folder / "ladder.json").read_text())
    record = (
        json.loads((folder / "export.training.json").read_text()) if (folder / "export.training.json").is_file() else {}
    )
    return {"runs": train, "ladder": result, "record": record}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--arms", nargs="+", default=["control", "a", "b", "c", "abc"])
    parser.add_argument("--start", type=int, default=4000)
    args = parser.parse_args()
    head = (
        "| arm | steps | train CPU-min | faces text dist | faces UNet t=500 / 700 | faces generation | faces probe | "
        "faces / cats leak | cats probe | small face factors: text dist / UNet t=700 / probe |"
    )
    lines = [head, "|---|---:|---:|---:|---|---:|---:|---|---:|---|"]
    for arm in args.arms:
        folder = args.root / arm
        if not (folder / "ladder.json").is_file():
            lines.append(f"| {arm} | (not run) | | | | | | | | |")
            continue
        row = arm_row(folder)
        means = ladder.domain_means(row["ladder"])
        table = ladder.summary(row["ladder"])
        steps = row["record"].get("diffusion_step", 0) - args.start
        cpu = sum(r.get("cpu_seconds", 0.0) for r in row["runs"]) / 60
        f, c = means["faces"], means["cats"]
        probe = row["ladder"]["rungs"]["probe"]["domains"]
        leak = f"{100 * probe['faces']['others']:.1f}% / {100 * probe['cats']['others']:.1f}%"
        small = ", ".join(
            f"{n} {table['faces'][n]['text_dist']:.2f}/{table['faces'][n]['unet_t700']:.2f}/"
            f"{100 * table['faces'][n]['probe']:.0f}%"
            for n in SMALL
        )
        lines.append(
            f"| {arm} | {steps} | {cpu:.1f} | {f['text_dist']:.2f} | {f['unet_t500']:.2f} / {f['unet_t700']:.2f} | "
            f"{100 * f['generation']:.0f}% | {100 * f['probe']:.0f}% | {leak} | {100 * c['probe']:.0f}% | {small} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
