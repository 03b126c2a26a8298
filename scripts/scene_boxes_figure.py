"""Figure: a face direction and a cat direction together on scenes, in each region mode.

    python scripts/scene_boxes_figure.py --face FACES.safetensors:5 --cat CATS.safetensors:2 \
        --out docs/images/scene-boxes.png

Columns: input | global | #auto | #box | #auto+box | the auto+box regions. Each term's box is the
one a user would draw around its object (``noiseclr.world.object_box``). Held-out scene renders,
DDPM inversion (the reconstruction is the input's latents), one batched pass for every mode.
"""

from __future__ import annotations

import argparse

import torch

from noiseclr.editing import render_edits
from noiseclr.images import make_grid, save_image, tensor_to_pil
from noiseclr.inversion import invert
from noiseclr.measure import REGION_MODES, object_region, render_pixels, seeds_for
from noiseclr.model import DiffusionModel
from noiseclr.regions import region_overlay
from noiseclr.terms import parse_direction_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--face", required=True, help="FILE:INDEX[=S%%] of a faces direction (without #REGION)")
    parser.add_argument("--cat", required=True, help="FILE:INDEX[=S%%] of a cats direction (without #REGION)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="held-out seed set 0..4")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    model = DiffusionModel.load(args.model)
    seeds = seeds_for("scenes", args.images, args.seed)
    pixels, labels = render_pixels("scenes", seeds, model.resolution)
    inversion = invert(
        model, model.encode_images(pixels), "ddpm", args.steps, generator=torch.Generator().manual_seed(0)
    )
    loaded: dict = {}

    def terms(mode: str) -> list:
        chosen = []
        for spec, part in ((args.face, "face"), (args.cat, "cat")):
            term = parse_direction_spec(spec, loaded)
            term.region = object_region(mode, seeds, labels, part)
            chosen.append(term)
        return chosen

    edits = [terms(mode) for mode in REGION_MODES]
    edited, regions = render_edits(model, inversion, edits, return_regions=True)
    last = len(REGION_MODES) - 1
    rows = [
        [
            tensor_to_pil(pixels[b]),
            *(tensor_to_pil(edited[e, b]) for e in range(len(REGION_MODES))),
            tensor_to_pil(region_overlay(edited[last, b], regions[last, b])),
        ]
        for b in range(args.images)
    ]
    labels_top = ["input", "global", "#auto", "#box", "#auto+box", "auto+box regions"]
    title = " + ".join(term.describe().split(" #")[0] for term in edits[0])
    print(save_image(make_grid(rows, column_labels=labels_top, title=title), args.out))


if __name__ == "__main__":
    main()
