"""The contrastive objective against a plain float64 reference (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from noiseclr.objective import (
    VARIANTS,
    anchor_losses,
    contrastive_loss,
    log_count_correction,
    mean_negative_abs_cos,
    mean_vector_abs_cos,
    normalize_features,
    reference_loss,
)

SHAPES = [(2, 2), (3, 4), (5, 3), (4, 6)]


def random_deltas(count: int, batch: int, seed: int, shape: tuple[int, ...] = (2, 3, 3)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, batch, *shape), generator=generator, dtype=torch.float64)


def fast_loss(deltas: torch.Tensor, temperature: float, variant: str) -> torch.Tensor:
    return contrastive_loss(normalize_features(deltas), temperature, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("count,batch", SHAPES)
@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_matches_reference_values_and_gradients(variant, count, batch, temperature):
    deltas = random_deltas(count, batch, seed=count * 10 + batch)
    fast_in = deltas.clone().requires_grad_(True)
    ref_in = deltas.clone().requires_grad_(True)
    fast = fast_loss(fast_in, temperature, variant)
    ref = reference_loss(ref_in, temperature, variant)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(fast_in.grad, ref_in.grad, rtol=1e-9, atol=1e-12)
    assert fast_in.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant):
    deltas = random_deltas(3, 3, seed=5, shape=(4,)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fast_loss(x, 0.5, variant), (deltas,))


def test_float32_close_to_float64():
    deltas = random_deltas(6, 5, seed=3)
    for variant in VARIANTS:
        low = fast_loss(deltas.float(), 0.5, variant)
        assert low.dtype == torch.float32
        assert abs(float(low) - float(reference_loss(deltas, 0.5, variant))) < 1e-5


def test_half_precision_features_are_upcast():
    deltas = random_deltas(3, 4, seed=9).to(torch.bfloat16)
    features = normalize_features(deltas)
    assert features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=2), torch.ones(3, 4))


def test_variants_are_anchor_zero_and_mean():
    features = normalize_features(random_deltas(5, 4, seed=1))
    per_anchor = anchor_losses(features, 0.5)
    assert per_anchor.shape == (5,)
    torch.testing.assert_close(contrastive_loss(features, 0.5, "single-anchor"), per_anchor[0])
    torch.testing.assert_close(contrastive_loss(features, 0.5, "all-anchors"), per_anchor.mean())
    torch.testing.assert_close(anchor_losses(features, 0.5, anchors=2), per_anchor[:2])


def test_mean_normalised_scale():
    # Everything equally similar -> 0.
    same = torch.ones(3, 4, 8, dtype=torch.float64)
    for variant in VARIANTS:
        assert abs(float(fast_loss(same, 0.5, variant))) < 1e-12
    # Perfect: positives at cos 1, negatives at cos -1 -> the lower bound -2/tau.
    axis = torch.zeros(8, dtype=torch.float64)
    axis[0] = 1
    opposite = torch.stack([axis.expand(3, 8), -axis.expand(3, 8)])  # [J=2, N=3, F]
    for variant in VARIANTS:
        assert float(fast_loss(opposite, 0.5, variant)) == pytest.approx(-4.0)


def test_log_count_correction_turns_sums_into_means():
    deltas = random_deltas(4, 3, seed=2)
    sums = reference_loss(deltas, 0.5, "single-anchor") - log_count_correction(4, 3)
    rows = normalize_features(deltas)
    positive = sum(math.exp(float(rows[0, n] @ rows[0, m]) / 0.5) for n in range(3) for m in range(3) if n != m)
    negative = sum(math.exp(float(rows[0, n] @ rows[l, n]) / 0.5) for n in range(3) for l in range(1, 4))
    assert float(sums) == pytest.approx(-math.log(positive / negative), rel=1e-12)


def test_stable_at_low_temperature_in_float32():
    # exp(1/0.005) overflows float32; the logsumexp form stays finite.
    features = normalize_features(random_deltas(4, 4, seed=4).float())
    for variant in VARIANTS:
        loss = contrastive_loss(features.clone().requires_grad_(True), 0.005, variant)
        assert torch.isfinite(loss)


def test_gradient_of_single_anchor_skips_other_positive_pairs():
    # With one anchor, a non-anchor direction only appears as a negative of the anchor: moving
    # its features in a way that keeps its similarity to the anchor leaves the loss unchanged.
    features = normalize_features(random_deltas(3, 4, seed=8)).requires_grad_(True)
    contrastive_loss(features, 0.5, "single-anchor").backward()
    grad_single = features.grad.clone()
    features.grad = None
    contrastive_loss(features, 0.5, "all-anchors").backward()
    # Non-anchor rows are pulled only towards/away from the anchor in single-anchor mode: their
    # gradient lies in the span of the anchor's features on the same image.
    anchor = features.detach()[0]  # [N, F]
    for n in range(4):
        g = grad_single[1:, n]  # [J-1, F]
        residual = g - (g @ anchor[n]).unsqueeze(1) * anchor[n]
        assert residual.abs().max() < 1e-12
    assert (features.grad[1:] - grad_single[1:]).abs().max() > 1e-6


def test_bad_shapes_and_variant():
    with pytest.raises(ValueError, match="2 directions"):
        contrastive_loss(torch.ones(1, 3, 4), 0.5, "all-anchors")
    with pytest.raises(ValueError, match="2 images"):
        contrastive_loss(torch.ones(3, 1, 4), 0.5, "all-anchors")
    with pytest.raises(ValueError, match="unknown loss variant"):
        contrastive_loss(torch.ones(3, 3, 4), 0.5, "every-anchor")


def test_diversity_probes():
    same = torch.ones(3, 2, 4) / 2
    assert float(mean_negative_abs_cos(same)) == pytest.approx(1.0)
    eye = torch.eye(4)[:3].unsqueeze(1).expand(3, 2, 4)  # orthogonal directions
    assert float(mean_negative_abs_cos(eye)) == pytest.approx(0.0)
    assert mean_vector_abs_cos(torch.eye(3)) == pytest.approx(0.0)
    assert mean_vector_abs_cos(torch.ones(3, 5)) == pytest.approx(1.0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("count,batch", SHAPES)
def test_axis_negatives_match_the_reference(variant, count, batch):
    deltas = random_deltas(count, batch, seed=count * 7 + batch)
    fast_in = deltas.clone().requires_grad_(True)
    ref_in = deltas.clone().requires_grad_(True)
    fast = contrastive_loss(normalize_features(fast_in), 0.5, variant, axis_negatives=True)
    ref = reference_loss(ref_in, 0.5, variant, axis_negatives=True)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(fast_in.grad, ref_in.grad, rtol=1e-9, atol=1e-12)


def test_axis_negatives_do_not_reward_an_opposite_direction():
    # Direction 1 is direction 0 reversed on every image: the signed loss calls that ideal
    # negatives; with |cos| it is as bad as a copy.
    base = random_deltas(1, 4, seed=9, shape=(6,))
    other = random_deltas(1, 4, seed=10, shape=(6,))
    opposite, copy, unrelated = torch.cat([base, -base]), torch.cat([base, base]), torch.cat([base, other])
    signed = {
        name: float(contrastive_loss(normalize_features(d), 0.5))
        for name, d in (("opposite", opposite), ("copy", copy), ("unrelated", unrelated))
    }
    axis = {
        name: float(contrastive_loss(normalize_features(d), 0.5, axis_negatives=True))
        for name, d in (("opposite", opposite), ("copy", copy), ("unrelated", unrelated))
    }
    assert signed["opposite"] < signed["unrelated"] < signed["copy"]
    assert axis["opposite"] == pytest.approx(axis["copy"]) and axis["unrelated"] < axis["copy"]


def test_the_magnitude_floor_hinges_on_the_log_response():
    import math

    from noiseclr.objective import magnitude_hinge

    response = torch.tensor([0.001, 0.02, 0.005], dtype=torch.float64, requires_grad=True)
    value = magnitude_hinge(response, 0.01)
    assert abs(float(value) - (math.log(10) + 0 + math.log(2)) / 3) < 1e-12
    (grad,) = torch.autograd.grad(value, response)
    # d/dr of -log r is -1/r: ten times larger at a ten times smaller response; zero above the floor.
    assert torch.allclose(grad, torch.tensor([-1 / 0.001 / 3, 0.0, -1 / 0.005 / 3], dtype=torch.float64))


def test_the_decorrelation_penalty_by_hand():
    from noiseclr.objective import decorrelation_penalty, mean_change_cosines

    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(3, 4, 6, generator=generator, dtype=torch.float64), dim=2)
    means = features.mean(dim=1)
    expected = 0.0
    for j in range(3):
        for k in range(3):
            if j != k:
                expected += float(torch.dot(means[j], means[k]) / (means[j].norm() * means[k].norm())) ** 2 / 6
    assert abs(float(decorrelation_penalty(features)) - expected) < 1e-12
    assert torch.allclose(mean_change_cosines(features).diagonal(), torch.ones(3, dtype=torch.float64))
    # One axis twice (opposite signs) is as bad as one direction twice; orthogonal means cost nothing.
    axis = torch.stack([features[0], -features[0], features[1]])
    same = torch.stack([features[0], features[0], features[1]])
    assert abs(float(decorrelation_penalty(axis)) - float(decorrelation_penalty(same))) < 1e-12
    basis = torch.eye(6, dtype=torch.float64)[:3].unsqueeze(1).expand(3, 4, 6)
    assert float(decorrelation_penalty(basis)) == 0.0
