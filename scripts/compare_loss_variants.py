#!/usr/bin/env python
"""Compare the two NoiseCLR loss variants (single-anchor vs all-anchors) with identical draws.

Both variants run through :func:`noiseclr.discovery.discover` with the same seed, so they see
the same directions, timesteps, images and noise in every micro-batch; only the anchors of the
loss differ. Every ``--probe-every`` steps the current directions are evaluated on a FIXED
probe set (``--probe-images`` images x ``--probe-timesteps`` timesteps, fixed noise, all K
directions, no grad):

* ``probe_loss``: the all-anchors loss over all K directions (same yardstick for both
  variants; lower is better, 0 = no contrast, -2/tau is the bound);
* ``probe_abs_cos``: mean |cos| between different directions' noise differences on the same
  image (lower = more diverse directions);
* ``anchored``: fraction of the K directions that have had a positive-pair gradient so far.

Examples::

    # the project's tiny random pipeline (what docs/loss_variants.md reports)
    python scripts/compare_loss_variants.py --model tiny --steps 150 --seeds 0 1 2
    # later, on the real base model and a folder of face images
    python scripts/compare_loss_variants.py --model embedded --images faces/ --num-directions 100 \
        --batch 6 --negatives 20 --micro-batches 4 --steps 1000 --probe-every 50 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from noiseclr.discovery import DiscoverySettings, delta_features, discover, initial_directions, micro_batch_loss
from noiseclr.images import load_image_folder
from noiseclr.model import DiffusionModel
from noiseclr.objective import VARIANTS, contrastive_loss, mean_negative_abs_cos


def tiny_model(folder: Path) -> DiffusionModel:
    """The test suite's tiny epsilon pipeline (random weights), built and loaded from disk."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import save_tiny_pipeline

    return DiffusionModel.load(save_tiny_pipeline(folder, "eps"), device="cpu", dtype="float32")


def smooth_random_images(count: int, size: int, seed: int) -> torch.Tensor:
    """Images with structure at several scales (upsampled noise), in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(count, 3, size, size)
    for cells in (2, 4, 8, 16):
        coarse = torch.randn(count, 3, cells, cells, generator=generator)
        pixels += (
            torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
            / cells**0.5
        )
    return (pixels / pixels.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1)


class Probe:
    """Fixed images x timesteps x noise on which every direction is evaluated."""

    def __init__(
        self, model: DiffusionModel, pixels: torch.Tensor, timesteps: list[int], temperature: float, seed: int
    ):
        self.model = model
        self.latents = model.encode_images(pixels)
        generator = torch.Generator().manual_seed(seed + 1000)
        self.noise = [torch.randn(self.latents.shape, generator=generator).to(self.latents.device) for _ in timesteps]
        self.timesteps = timesteps
        self.temperature = temperature

    @torch.no_grad()
    def __call__(self, vectors: torch.Tensor) -> tuple[float, float]:
        everything = torch.arange(vectors.shape[0])
        losses, cosines = [], []
        for timestep, noise in zip(self.timesteps, self.noise):
            features = delta_features(self.model, vectors, self.latents, timestep, noise, everything)
            losses.append(float(contrastive_loss(features, self.temperature, "all-anchors")))
            cosines.append(float(mean_negative_abs_cos(features)))
        return statistics.fmean(losses), statistics.fmean(cosines)


def check_against_published(model: DiffusionModel, probe: Probe, temperature: float) -> float:
    """Relative gap between our single-anchor loss and the published procedure's on one micro-batch
    of the probe set (both with grad off; the variants are compared only if they agree)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from published import reference_micro_batch_loss

    vectors = initial_directions(model, 6, seed=0).to(model.device)
    drawn = torch.arange(6)
    latents, noise, timestep = probe.latents[:4], probe.noise[0][:4], probe.timesteps[0]
    with torch.no_grad():
        ours = micro_batch_loss(
            model, vectors, latents, timestep, noise, drawn, variant="single-anchor", temperature=temperature
        )
        theirs = reference_micro_batch_loss(model, vectors, latents, timestep, noise, drawn, temperature=temperature)
    gap = abs(float(ours.loss) - float(theirs)) / max(abs(float(theirs)), 1e-12)
    if gap > 1e-3:
        raise SystemExit(
            f"the single-anchor loss differs from the published procedure's by {gap:.2e}; not comparing variants"
        )
    return gap


def run_variant(model, pixels, settings: DiscoverySettings, probe: Probe, probe_every: int, out: Path) -> list[dict]:
    rows: list[dict] = []
    anchored: set[int] = set()
    window: list[float] = []
    started = time.perf_counter()

    def record(step: int, vectors: torch.Tensor) -> None:
        loss, abs_cos = probe(vectors)
        rows.append(
            {
                "variant": settings.loss_variant,
                "seed": settings.seed,
                "step": step,
                "train_loss": statistics.fmean(window) if window else float("nan"),
                "probe_loss": loss,
                "probe_abs_cos": abs_cos,
                "anchored": len(anchored) / settings.num_directions,
                "seconds": time.perf_counter() - started,
            }
        )
        window.clear()

    def callback(info: dict) -> None:
        anchored.update(info["anchors"])
        window.append(info["loss"])
        if info["step"] % probe_every == 0 or info["step"] == settings.steps:
            record(info["step"], info["vectors"])

    record(0, initial_directions(model, settings.num_directions, settings.seed).to(model.device))
    discover(model, pixels, out, settings, progress=False, callback=callback)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (the test pipeline), 'embedded', a folder or hub id")
    parser.add_argument("--images", default="random:32", help="a folder, or random:M for M smooth random images")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--num-directions", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=6)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--probe-every", type=int, default=10)
    parser.add_argument("--probe-images", type=int, default=8)
    parser.add_argument("--probe-timesteps", type=int, nargs="+", default=[200, 500, 800])
    parser.add_argument("--out", type=Path, default=None, help="folder for variants.csv and summary.json")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (1 avoids thrashing on a shared box)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    scratch = Path(tempfile.mkdtemp(prefix="noiseclr-variants-"))
    out = args.out or scratch
    if args.model == "tiny":
        model = tiny_model(scratch / "model")
    else:
        model = DiffusionModel.load(args.model, device=args.device, dtype=args.dtype)
    if args.images.startswith("random:"):
        pixels = smooth_random_images(int(args.images.split(":", 1)[1]), model.resolution, seed=12345)
    else:
        pixels = load_image_folder(args.images, model.resolution, min_count=args.batch).pixels
    probe_pixels = pixels[: args.probe_images]  # fixed; training may also see them (fine for a comparison)
    probe = Probe(model, probe_pixels, args.probe_timesteps, args.temperature, seed=0)
    gap = check_against_published(model, probe, args.temperature)
    print(
        f"single-anchor loss vs the published procedure (benchmarks/published.py), one micro-batch: relative gap {gap:.2e}"
    )

    rows: list[dict] = []
    for seed in args.seeds:
        for variant in VARIANTS:
            settings = DiscoverySettings(
                num_directions=args.num_directions,
                batch_size=args.batch,
                num_negatives=args.negatives,
                micro_batches=args.micro_batches,
                steps=args.steps,
                lr=args.lr,
                temperature=args.temperature,
                loss_variant=variant,
                seed=seed,
                checkpoint_every=0,
            )
            print(f"seed {seed} {variant} ...", flush=True)
            rows += run_variant(model, pixels, settings, probe, args.probe_every, scratch / f"run-{variant}-{seed}")

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "variants.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    # Mean over seeds at each probed step.
    steps = sorted({row["step"] for row in rows})
    table = []
    print("\n| step | variant | train loss | probe loss | probe abs cos | anchored |")
    print("|---:|---|---:|---:|---:|---:|")
    for step in steps:
        for variant in VARIANTS:
            picked = [r for r in rows if r["step"] == step and r["variant"] == variant]
            entry = {
                "step": step,
                "variant": variant,
                **{
                    k: statistics.fmean(r[k] for r in picked)
                    for k in ("train_loss", "probe_loss", "probe_abs_cos", "anchored")
                },
                "probe_loss_sd": statistics.pstdev([r["probe_loss"] for r in picked]),
            }
            table.append(entry)
            print(
                f"| {step} | {variant} | {entry['train_loss']:.3f} | {entry['probe_loss']:.3f} ± {entry['probe_loss_sd']:.3f} "
                f"| {entry['probe_abs_cos']:.3f} | {entry['anchored']:.2f} |"
            )
    seconds = {
        v: statistics.fmean(r["seconds"] for r in rows if r["variant"] == v and r["step"] == steps[-1])
        for v in VARIANTS
    }
    print("\nseconds per run:", {k: round(v, 1) for k, v in seconds.items()})
    summary = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": model.describe(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
        "table": table,
        "seconds_per_run": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / 'variants.csv'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
