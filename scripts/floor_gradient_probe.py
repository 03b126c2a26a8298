"""Why the magnitude floor does not reach its target (issue 23.5): the size of its hinge's gradient
beside the contrastive loss's, on the embedded model, for random token-norm directions.

    python scripts/floor_gradient_probe.py [--floor 0.01] [--weight 10]

Prints, per timestep, the drawn directions' mean response (||eps_k - eps_0|| / ||eps_0||) and the
mean per-direction gradient norm of each term with respect to the direction vectors.
"""

from __future__ import annotations

import argparse

import torch

from noiseclr.objective import delta_and_response, magnitude_hinge
from noiseclr.measure import render_pixels, seeds_for
from noiseclr.model import DiffusionModel
from noiseclr.objective import contrastive_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=float, default=0.01)
    parser.add_argument("--weight", type=float, default=10.0)
    parser.add_argument("--directions", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = DiffusionModel.load("embedded", device="cpu", dtype="float32")
    pixels, _ = render_pixels("faces", seeds_for("demo-train", 6, 0), model.resolution)
    latents = model.encode_images(pixels)
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(args.directions, model.token_width, generator=generator)
    vectors = model.scale_to_token_norms(rows).requires_grad_(True)
    drawn = torch.arange(args.directions)
    for t in (100, 500, 900):
        noise = torch.randn(latents.shape, generator=generator)
        features, response = delta_and_response(model, vectors, latents, t, noise, drawn)
        (grad_contrast,) = torch.autograd.grad(
            contrastive_loss(features, 0.5, "all-anchors", False), vectors, retain_graph=True
        )
        (grad_hinge,) = torch.autograd.grad(args.weight * magnitude_hinge(response, args.floor), vectors)
        print(
            f"t={t}: response {float(response.mean()):.5f}  |grad contrastive| {float(grad_contrast.norm(dim=1).mean()):.3e}  "
            f"|grad hinge| {float(grad_hinge.norm(dim=1).mean()):.3e}"
        )


if __name__ == "__main__":
    main()
