#!/usr/bin/env python
"""Fine-tune the embedded base model's VAE decoder, encoder frozen (``noiseclr.basemodel.decoder``).

    python scripts/finetune_decoder.py --work work/decoder --minutes 30            # resumable: re-run to go on
    python scripts/finetune_decoder.py --work work/decoder --apply-to MODEL --out NEW_MODEL

The first form trains from ``--model`` (default: the shipped weights); the second copies a model
folder with the same encoder (a UNet export of the same latent space) and puts the fine-tuned VAE in.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from noiseclr.basemodel.decoder import DecoderSettings, apply_decoder, finetune_decoder
from noiseclr.errors import NoiseCLRError
from noiseclr.loading import embedded_model_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="embedded", help="model folder whose decoder is trained")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    defaults = DecoderSettings()
    for name in ("steps", "batch_size", "renders", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("lr", "mask_weight", "edge_weight"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--apply-to", type=Path, help="model folder to copy with the fine-tuned VAE")
    parser.add_argument("--out", type=Path, help="where --apply-to writes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.apply_to:
            if not args.out:
                raise NoiseCLRError("--apply-to needs --out: the new model folder.")
            print(f"wrote {apply_decoder(args.work / 'vae.safetensors', args.apply_to, args.out)}")
            return 0
        model = embedded_model_path() if args.model == "embedded" else Path(args.model)
        settings = DecoderSettings(
            **{
                k: getattr(args, k)
                for k in ("steps", "batch_size", "renders", "seed", "lr", "mask_weight", "edge_weight")
            }
        )
        started = time.monotonic()
        print(
            f"started {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {torch.get_num_threads()} threads, {os.cpu_count()} CPUs",
            flush=True,
        )
        done = finetune_decoder(model, args.work, settings, minutes=args.minutes, log=lambda m: print(m, flush=True))
    except NoiseCLRError as error:
        print(f"error: {error}")
        return 2
    minutes = (time.monotonic() - started) / 60
    print(("done" if done else "paused (time limit); run the same command again to continue") + f"; {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
