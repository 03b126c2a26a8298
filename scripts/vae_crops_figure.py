"""Figure for the model card: what the VAE round trip does to open mouths and curls, as crops.

    python scripts/vae_crops_figure.py --out docs/images/vae-crops.png
    python scripts/vae_crops_figure.py --model OLD --label before --model NEW --label after --out crops.png

Held-out faces re-rendered with a smile, a frown and curly hair; each is encoded and decoded by the
model's VAE (posterior mean, as every edit's reconstruction is). Per row: the factor's crop before
and after each ``--model``, 3x nearest-neighbour, and the PSNR inside the factor's own pixels (the
renderer's mask: every pixel another value of the factor would change). Prints the table the model
card quotes.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from noiseclr.images import make_grid, save_image
from noiseclr.measure import seeds_for
from noiseclr.model import DiffusionModel
from noiseclr.world.masks import factor_masks
from noiseclr.world.render import labels_for_seed

CASES = (("mouth", "smile"), ("mouth", "frown"), ("hair_style", "curly"))


def crop_box(mask: np.ndarray, pad: int = 4, least: int = 24) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) around the mask, padded, at least ``least`` pixels a side."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0] - pad, rows[-1] + 1 + pad, cols[0] - pad, cols[-1] + 1 + pad
    for low, high, size in ((0, 1, mask.shape[0]), (2, 3, mask.shape[1])):
        box = [top, bottom, left, right]
        grow = max(0, least - (box[high] - box[low]))
        box[low], box[high] = box[low] - grow // 2, box[high] + (grow - grow // 2)
        shift = max(0, -box[low]) - max(0, box[high] - size)
        box[low], box[high] = box[low] + shift, box[high] + shift
        top, bottom, left, right = box
    return int(top), int(left), int(bottom), int(right)


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    error = ((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2
    mse = float(error[mask].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model folder (repeat to compare; default: embedded)")
    parser.add_argument("--label", action="append", help="column label per --model")
    parser.add_argument("--images", type=int, default=3, help="faces per case")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    names = args.model or ["embedded"]
    labels = args.label or (["VAE round trip"] if len(names) == 1 else names)
    if len(labels) != len(names):
        parser.error("give one --label per --model")

    from PIL import Image

    models = [DiffusionModel.load(name, device="cpu") for name in names]
    rows, row_labels = [], []
    print(f"| case | face | {' | '.join(f'PSNR inside, {label} (dB)' for label in labels)} |")
    print("|---|---|" + "---:|" * len(labels))
    for factor, value in CASES:
        for seed in seeds_for("heldout", args.images, 0):
            masks, image = factor_masks("faces", seed, {**labels_for_seed("faces", seed), factor: value}, [factor])
            pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
            afters = []
            for model in models:
                with torch.no_grad():
                    recon = model.decode_latents(model.encode_images(pixels))[0]
                afters.append(((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
            top, left, bottom, right = crop_box(masks[factor])
            crops = [Image.fromarray(np.ascontiguousarray(x[top:bottom, left:right])) for x in (image, *afters)]
            rows.append([crop.resize((crop.width * 3, crop.height * 3), Image.NEAREST) for crop in crops])
            psnrs = [masked_psnr(image, after, masks[factor]) for after in afters]
            row_labels.append(f"{value} {seed} " + " / ".join(f"{v:.1f}" for v in psnrs) + " dB")
            print(f"| {factor} {value} | seed {seed} | " + " | ".join(f"{v:.1f}" for v in psnrs) + " |")
    grid = make_grid(rows, column_labels=["render", *labels], row_labels=row_labels)
    print(f"wrote {save_image(grid, args.out)}")


if __name__ == "__main__":
    main()
