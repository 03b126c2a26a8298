"""Factor masks derived from the renderer (issue 20's mask-weighted loss and the ladder's PSNR in mask)."""

from __future__ import annotations

import numpy as np
import pytest

from noiseclr.world import masks as M
from noiseclr.world.factors import domain_factors
from noiseclr.world.render import labels_for_seed, layout, render_array


def test_masks_cover_exactly_what_a_value_change_touches():
    seed = 11
    masks, image = M.factor_masks("faces", seed)
    assert set(masks) == {f.name for f in domain_factors("faces")}
    labels = labels_for_seed("faces", seed)
    other = "yes" if labels["glasses"] == "no" else "no"
    changed = (render_array("faces", seed, {"glasses": other})[0] != image).any(axis=-1)
    assert (changed <= masks["glasses"]).all() and changed.any()
    # Small factors are small, the background is big: the imbalance the weighted loss corrects.
    assert masks["mouth"].mean() < 0.05 and masks["mustache"].mean() < 0.05
    assert masks["background"].mean() > 0.3
    # The mouth lives in the lower half of the face, near its placement.
    rows = np.flatnonzero(masks["mouth"].any(axis=1))
    face = layout("faces", seed)["face"]
    assert face.origin_y < rows.mean() < face.origin_y + 45


def test_masks_restricted_and_scenes():
    masks, _ = M.factor_masks("scenes", 3, factors=["face.mouth", "cat.stripes"])
    assert set(masks) == {"face.mouth", "cat.stripes"}
    assert all(m.any() for m in masks.values())


def test_pool_masks_is_cell_coverage():
    mask = np.zeros((16, 16), bool)
    mask[:8, :8] = True
    mask[8, 8] = True
    pooled = M.pool_masks(mask, 8)
    assert pooled.shape == (2, 2)
    assert pooled[0, 0] == 1.0 and pooled[1, 1] == pytest.approx(1 / 64) and pooled[0, 1] == 0.0
    with pytest.raises(ValueError):
        M.pool_masks(np.zeros((10, 10), bool), 8)


def test_equalized_map_gives_every_factor_the_same_weight():
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, 0, 0] = 1.0  # a tiny factor: 1 cell
    masks[1] = 1.0  # a factor everywhere
    weights = M.equalized_weight_map(masks)
    assert weights.mean() == pytest.approx(1.0)
    # Each factor contributes sum(m / area) = 16 cells' worth: the 1-cell factor gets as much as the whole-image one.
    assert weights[0, 0] == pytest.approx((16.0 + 1.0) / 2)
    assert weights[1, 1] == pytest.approx(0.5)
    assert M.equalized_weight_map(np.ones((3, 4, 4))) == pytest.approx(np.ones((4, 4)))
    assert M.equalized_weight_map(np.zeros((3, 4, 4))) == pytest.approx(np.ones((4, 4)))


def test_latent_weight_map_upweights_the_mouth():
    weights = M.latent_weight_map("faces", 5)
    assert weights.shape == (16, 16)
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    masks, _ = M.factor_masks("faces", 5)
    mouth_cells = M.pool_masks(masks["mouth"], 8) > 0.5
    assert weights[mouth_cells].mean() > 3.0
