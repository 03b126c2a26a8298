#!/usr/bin/env python3
"""Measure the embedded base model against the base-model issue's quality bars.

    python scripts/evaluate_basemodel.py                          # full run -> docs/basemodel_quality.{json,md}
    python scripts/evaluate_basemodel.py --quick --out /tmp/q     # small sizes, minutes
    python scripts/evaluate_basemodel.py --probe-only --model work/bm/diffusion/snapshots/step-008000
    python scripts/evaluate_basemodel.py --curve work/bm/diffusion/snapshots --out docs/basemodel_probe_curve

Prints the device and the time taken; writes the numbers as JSON and as Markdown tables (the
model card quotes them).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from noiseclr.fileio import atomic_write_json, atomic_write_text
from noiseclr.model import DiffusionModel
from noiseclr.basemodel import quality

BARS = {"readers": 0.98, "vae": 0.95, "text": 0.90, "inversion": 0.90, "step_seconds": 1.5}


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def table(title: str, per_domain: dict[str, dict[str, float]], bar: float) -> list[str]:
    lines = [
        f"### {title} (bar: every factor ≥ {pct(bar)})",
        "",
        "| domain | mean | min (factor) | per factor |",
        "|---|---|---|---|",
    ]
    for domain, factors in per_domain.items():
        worst = min(factors, key=factors.get)
        cells = ", ".join(f"{name} {pct(value)}" for name, value in factors.items())
        lines.append(
            f"| {domain} | {pct(sum(factors.values()) / len(factors))} | {pct(factors[worst])} ({worst}) | {cells} |"
        )
    return lines + [""]


def probe_lines(probe: dict) -> list[str]:
    """The controllability probe as Markdown: one row per factor, the weakest values named."""
    settings = probe["settings"]
    lines = [
        f"### Controllability probe (prompt term on DDPM inversions, {settings['steps']} steps, scales "
        f"{', '.join(f'{s:g}' for s in settings['scales'])}, {settings['images']} held-out images per domain)",
        "",
        "reached = images moved to the named value (best scale); others = mean change of the other factors.",
        "",
        "| domain | factor | reached | others | weakest value (reached) |",
        "|---|---|---:|---:|---|",
    ]
    for domain, data in probe["domains"].items():
        for factor, numbers in data["per_factor"].items():
            values = data["per_value"][factor]
            weakest = min((v for v in values if "reached" in values[v]), key=lambda v: values[v]["reached"])
            lines.append(
                f"| {domain} | {factor} | {pct(numbers['reached'])} | {pct(numbers['others'])} | "
                f"{weakest} ({pct(values[weakest]['reached'])}) |"
            )
        lines.append(f"| **{domain}** | **mean** | **{pct(data['reached'])}** | **{pct(data['others'])}** | |")
    return lines + [""]


def run_curve(folder: Path, readers: dict, args: argparse.Namespace) -> dict:
    """The probe on every snapshot ``step-NNNNNN`` in ``folder``: the learning curve against training images."""
    from noiseclr.basemodel.folders import read_training_record

    rows = []
    for snapshot in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")):
        tick = time.monotonic()
        model = DiffusionModel.load(snapshot, device=args.device, dtype="float32")
        probe = quality.controllability_probe(model, readers, probe_settings(args))
        record = read_training_record(snapshot)
        row = {
            "snapshot": snapshot.name,
            "step": record.get("diffusion_step"),
            "images": record.get("diffusion_images"),
            "score": probe["score"],
            **{f"{d}_reached": v["reached"] for d, v in probe["domains"].items()},
            **{f"{d}_others": v["others"] for d, v in probe["domains"].items()},
            "per_factor": {
                d: {f: n["reached"] for f, n in v["per_factor"].items()} for d, v in probe["domains"].items()
            },
        }
        rows.append(row)
        print(f"{snapshot.name}: score {probe['score']:.3f} ({time.monotonic() - tick:.0f} s)", flush=True)
    return {"folder": str(folder), "rows": rows}


def probe_settings(args: argparse.Namespace) -> "quality.ProbeSettings":
    overrides = {k: v for k, v in (("images", args.probe_images), ("steps", args.probe_steps)) if v is not None}
    if args.probe_scales:
        overrides["scales"] = tuple(args.probe_scales)
    return replace(quality.ProbeSettings(), **overrides)


def markdown(results: dict) -> str:
    lines = [
        f"Measured {results['date']} on {results['device']} ({results['seconds'] / 60:.1f} min), model `{results['model']}`.",
        f"Command: `{results['command']}`",
        "",
    ]
    lines += table("Readers on fresh renders", results["readers"], BARS["readers"])
    lines += table("Readers on VAE reconstructions", results["vae"], BARS["vae"])
    text = results["text"]
    lines += [
        f"### Text conditioning ({results['settings']['steps']} DDIM steps, CFG {results['settings']['guidance']}, "
        f"{results['settings']['samples_per_value']} samples per value; bar: mean over factors ≥ {pct(BARS['text'])})",
        "",
        "| domain | mean over factors | per factor |",
        "|---|---|---|",
    ]
    for domain, factors in text["per_factor"].items():
        cells = ", ".join(f"{name} {pct(value)}" for name, value in factors.items())
        lines.append(f"| {domain} | {pct(text['per_domain'][domain])} | {cells} |")
    lines += [f"| **all** | **{pct(text['overall'])}** | |", ""]
    unc = results["unconditional"]
    lines += [
        f"### Unconditional samples ({unc['samples']}, null prompt)",
        "",
        f"Domains (classifier accuracy {pct(results['domain_classifier_accuracy'])} on renders): "
        + ", ".join(f"{d} {n}" for d, n in unc["domain_counts"].items())
        + ".",
        f"Values covered: {pct(unc['values_covered'])}; missing: {', '.join(unc['missing_values']) or 'none'}.",
        "",
    ]
    lines += table("DDIM inversion + null regeneration (50 steps)", results["inversion"], BARS["inversion"])
    if "probe" in results:
        lines += probe_lines(results["probe"])
    step = results["discovery_step"]
    lines += [
        f"### CPU speed: one discovery micro-batch ({step['images']} images x {step['directions']} directions, with backward)",
        "",
        f"median {step['median_seconds']:.2f} s (min {step['min_seconds']:.2f} s) over {step['repeats']} repeats, "
        f"{step['threads']} threads; bar ≤ {BARS['step_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("docs/basemodel_quality"), help="path stem for .json and .md")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not the card's numbers)")
    parser.add_argument("--threads", type=int, default=None)
    for field in (
        "reader_images",
        "vae_images",
        "samples_per_value",
        "unconditional_samples",
        "inversion_images",
        "steps",
    ):
        parser.add_argument(
            "--" + field.replace("_", "-"), type=int, default=None, help="override the size (see QualitySettings)"
        )
    parser.add_argument("--probe-only", action="store_true", help="only the controllability probe (minutes)")
    parser.add_argument(
        "--curve",
        type=Path,
        default=None,
        metavar="SNAPSHOTS",
        help="the probe on every step-NNNNNN snapshot in this folder",
    )
    parser.add_argument("--probe-images", type=int, default=None)
    parser.add_argument("--probe-steps", type=int, default=None)
    parser.add_argument("--probe-scales", type=float, nargs="+", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = quality.QualitySettings()
    if args.quick:
        settings = quality.QualitySettings(
            reader_images=100,
            vae_images=32,
            samples_per_value=2,
            unconditional_samples=48,
            inversion_images=16,
            steps=20,
        )
    overrides = {
        name: getattr(args, name)
        for name in (
            "reader_images",
            "vae_images",
            "samples_per_value",
            "unconditional_samples",
            "inversion_images",
            "steps",
        )
        if getattr(args, name) is not None
    }
    settings = replace(settings, **overrides)
    started = time.monotonic()
    if args.curve is not None:
        curve = run_curve(args.curve, quality.load_readers(), args)
        curve.update(
            command=shlex.join(["python", *sys.argv]),
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            seconds=round(time.monotonic() - started, 1),
        )
        atomic_write_json(args.out.with_suffix(".json"), curve)
        print(f"wrote {args.out.with_suffix('.json')}")
        return 0
    model = DiffusionModel.load(args.model, device=args.device, dtype="float32")
    device = (
        torch.cuda.get_device_name(model.device)
        if model.device.type == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(f"device: {device}; model {model.name}", flush=True)
    readers = quality.load_readers()
    results: dict = {
        "model": model.name,
        "device": device,
        "settings": asdict(settings),
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    if args.probe_only:
        tick = time.monotonic()
        results["probe"] = quality.controllability_probe(model, readers, probe_settings(args))
        results["seconds"] = time.monotonic() - started
        atomic_write_json(args.out.with_suffix(".json"), results)
        report = "\n".join(probe_lines(results["probe"]))
        atomic_write_text(args.out.with_suffix(".md"), report + "\n")
        print(report)
        print(f"probe: {time.monotonic() - tick:.0f} s; score {results['probe']['score']:.3f}")
        return 0
    steps = [
        ("readers", lambda: quality.evaluate_readers(readers, settings)),
        ("vae", lambda: quality.evaluate_vae(model, readers, settings)),
        ("discovery_step", lambda: quality.time_discovery_step(model)),
        ("text", lambda: quality.evaluate_text_conditioning(model, readers, settings)),
        ("inversion", lambda: quality.evaluate_inversion(model, readers, settings)),
        ("probe", lambda: quality.controllability_probe(model, readers, probe_settings(args))),
    ]
    for name, run in steps:
        tick = time.monotonic()
        results[name] = run()
        print(f"{name}: done in {time.monotonic() - tick:.0f} s", flush=True)
    tick = time.monotonic()
    classify = quality.train_domain_classifier(steps=100 if args.quick else 300)
    results["domain_classifier_accuracy"] = quality.domain_classifier_accuracy(classify, 50 if args.quick else 300)
    results["unconditional"] = quality.evaluate_unconditional(model, readers, classify, settings)
    print(f"unconditional: done in {time.monotonic() - tick:.0f} s", flush=True)
    results["seconds"] = time.monotonic() - started
    atomic_write_json(args.out.with_suffix(".json"), results)
    report = markdown(results)
    atomic_write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
