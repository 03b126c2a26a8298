#!/usr/bin/env python3
"""Train the embedded base model from scratch, resumably, and export it into the package.

    python scripts/train_basemodel.py --work work/basemodel            # every stage, as far as time allows
    python scripts/train_basemodel.py --work work/basemodel --minutes 8.5   # one time-boxed piece; re-run to go on
    python scripts/train_basemodel.py --work work/more --warm-start embedded  # go on from the shipped weights
    python scripts/train_basemodel.py --work work/arm --warm-start embedded --pool-masks --pool-pairs 4000 \
        --mask-weight 1 --text-aux-weight 0.1 --paired-fraction 0.25   # issue 20's recipe arms (docs/basemodel_recipe.md)

Stages run in order and skip what is done: tokenizer, vae, pool, diffusion, export (to
src/noiseclr/assets/basemodel, fp16). Seeded: the same command gives the same model on the same
device, however the run is cut into pieces. Prints the device and the time taken.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from noiseclr.basemodel.folders import write_training_record
from noiseclr.basemodel.training import BaseModelTrainer, DiffusionSettings, VAESettings
from noiseclr.model import EMBEDDED, embedded_model_path

ASSET_DIR = Path(__file__).resolve().parents[1] / "src" / "noiseclr" / "assets" / "basemodel"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/basemodel"), help="working folder (checkpoints, pool)")
    parser.add_argument("--stage", choices=["all", "tokenizer", "vae", "pool", "diffusion", "export"], default="all")
    parser.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this many minutes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--vae-steps", type=int, default=VAESettings.steps)
    parser.add_argument("--vae-batch", type=int, default=VAESettings.batch_size)
    parser.add_argument("--diffusion-steps", type=int, default=DiffusionSettings.steps)
    parser.add_argument("--diffusion-batch", type=int, default=DiffusionSettings.batch_size)
    parser.add_argument("--pool-size", type=int, default=DiffusionSettings.pool_size)
    parser.add_argument("--lr", type=float, default=DiffusionSettings.lr)
    parser.add_argument("--sample-every", type=int, default=DiffusionSettings.sample_every)
    parser.add_argument("--snapshot-every", type=int, default=DiffusionSettings.snapshot_every)
    parser.add_argument(
        "--warmup", type=int, default=DiffusionSettings.warmup, help="LR warm-up steps (from the start or warm start)"
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=DiffusionSettings.ema_decay,
        help="EMA decay (short ablation arms need a short window, e.g. 0.99)",
    )
    parser.add_argument(
        "--mask-weight",
        type=float,
        default=DiffusionSettings.mask_weight,
        help="(a) feature-mask loss weighting strength (needs --pool-masks when the pool is built)",
    )
    parser.add_argument(
        "--text-aux-weight",
        type=float,
        default=DiffusionSettings.text_aux_weight,
        help="(b) weight of the text encoder's per-factor read-out loss",
    )
    parser.add_argument(
        "--paired-fraction",
        type=float,
        default=DiffusionSettings.paired_fraction,
        help="(c) share of each batch drawn as counterfactual pairs (needs --pool-pairs)",
    )
    parser.add_argument("--pool-masks", action="store_true", help="store feature weight maps with the pool")
    parser.add_argument(
        "--pool-pairs",
        type=int,
        default=DiffusionSettings.pool_pairs,
        help="encode a counterfactual partner for this many pool renders",
    )
    parser.add_argument(
        "--warm-start",
        default=None,
        metavar="MODEL_DIR",
        help="seed an empty --work from a trained model folder ('embedded': the shipped weights)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-to", type=Path, default=ASSET_DIR)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = BaseModelTrainer(args.work, device=args.device, minutes=args.minutes, log=lambda m: print(m, flush=True))
    device_name = (
        torch.cuda.get_device_name(trainer.device)
        if trainer.device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"device: {device_name}; torch {torch.__version__}; started {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        flush=True,
    )
    vae_settings = VAESettings(steps=args.vae_steps, batch_size=args.vae_batch, seed=args.seed)
    diffusion_settings = DiffusionSettings(
        steps=args.diffusion_steps,
        batch_size=args.diffusion_batch,
        pool_size=args.pool_size,
        lr=args.lr,
        sample_every=args.sample_every,
        snapshot_every=args.snapshot_every,
        seed=args.seed,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        mask_weight=args.mask_weight,
        text_aux_weight=args.text_aux_weight,
        paired_fraction=args.paired_fraction,
        pool_masks=args.pool_masks,
        pool_pairs=args.pool_pairs,
    )
    if args.warm_start and not (args.work / "diffusion" / "checkpoint.safetensors").is_file():
        source = embedded_model_path() if args.warm_start == EMBEDDED else Path(args.warm_start)
        trainer.warm_start(source, diffusion_settings)
    started, cpu_started = time.monotonic(), time.process_time()
    stages = ["tokenizer", "vae", "pool", "diffusion", "export"] if args.stage == "all" else [args.stage]
    finished = True
    for stage in stages:
        if stage == "tokenizer":
            trainer.tokenizer()
        elif stage == "vae":
            finished = trainer.train_vae(vae_settings)
        elif stage == "pool":
            finished = trainer.build_pool(diffusion_settings)
        elif stage == "diffusion":
            finished = trainer.train_diffusion(diffusion_settings)
        elif stage == "export":
            path = trainer.export(args.export_to)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
            print(f"exported to {path} ({size:.1f} MiB)")
        if not finished:
            break
    seconds = time.monotonic() - started
    write_training_record(
        args.work,
        {
            "stages": stages,
            "finished": finished,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(time.process_time() - cpu_started, 1),
            "device": device_name,
            "argv": sys.argv[1:],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host_cpus": os.cpu_count(),
        },
    )
    state = "done" if finished else "paused (time limit); run the same command again to continue"
    print(f"{state}; {seconds / 60:.1f} min on {device_name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
