"""Figure: input | global edit | localized edit | region, on a few world renders.

    python scripts/localized_figure.py --prompt "a cartoon face with glasses" --strength 10 --out docs/images/localized-edit.png
    python scripts/localized_figure.py --direction bench/faces/noiseclr-all/directions.safetensors:3 --out fig.png

Each render is inverted once (DDPM, so the reconstruction is the input) and regenerated with the
term applied globally and with an auto region (``noiseclr.regions``), in one batched pass.
"""

from __future__ import annotations

import argparse

import torch

from noiseclr.editing import render_edits
from noiseclr.terms import PromptTerm, parse_direction_spec
from noiseclr.images import make_grid, save_image, tensor_to_pil
from noiseclr.inversion import invert
from noiseclr.measure import render_pixels, seeds_for
from noiseclr.model import DiffusionModel
from noiseclr.regions import AutoRegion, region_overlay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--domain", default="faces", choices=["faces", "cats", "scenes"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1, help="held-out seed set 0..4")
    parser.add_argument("--prompt", help="a prompt applied like a direction")
    parser.add_argument("--direction", help="FILE:INDEX[=SCALE|=S%%][@A:B] (without #REGION)")
    parser.add_argument("--strength", type=float, default=10.0, help="percent, for --prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--region-top", type=float, default=AutoRegion().top)
    parser.add_argument("--region-smoothing", type=float, default=AutoRegion().smoothing)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if (args.prompt is None) == (args.direction is None):
        parser.error("give --prompt or --direction")

    model = DiffusionModel.load(args.model)
    pixels, _ = render_pixels(args.domain, seeds_for("heldout", args.images, args.seed), model.resolution)
    inversion = invert(
        model, model.encode_images(pixels), "ddpm", args.steps, generator=torch.Generator().manual_seed(0)
    )

    def term(region: str | None):
        if args.prompt is not None:
            return PromptTerm(args.prompt, None, strength=args.strength, region=region)
        found = parse_direction_spec(args.direction)
        found.region = None if region is None else parse_direction_spec(f"{args.direction}#{region}").region
        return found

    settings = AutoRegion(args.region_top, args.region_smoothing).validate()
    edited, regions = render_edits(
        model, inversion, [[term(None)], [term("auto")]], auto_region=settings, return_regions=True
    )
    rows = [
        [
            tensor_to_pil(pixels[b]),
            tensor_to_pil(edited[0, b]),
            tensor_to_pil(edited[1, b]),
            tensor_to_pil(region_overlay(edited[1, b], regions[1, b])),
        ]
        for b in range(args.images)
    ]
    title = f"{term(None).describe()}, #auto"
    print(save_image(make_grid(rows, column_labels=["input", "global", "localized", "region"], title=title), args.out))


if __name__ == "__main__":
    main()
