"""The procedural world: factor registry and renderer (determinism, labels, locality, speed)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from noiseclr.errors import NoiseCLRError
from noiseclr.world import factors as F
from noiseclr.world import render as R

DOMAINS = list(F.DOMAINS)


def pixels(domain: str, seed: int, labels: dict | None = None) -> np.ndarray:
    return R.render_array(domain, seed, labels)[0].astype(int)


def at(image: np.ndarray, placement: R.Placement, x: float, y: float) -> tuple[int, ...]:
    """The pixel containing canonical point (x, y)."""
    px, py = placement.to_pixel(x, y)
    return tuple(image[int(py), int(px)])


def changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) bounding the pixels that differ, or None."""
    rows, cols = np.nonzero(np.any(a != b, axis=-1))
    if rows.size == 0:
        return None
    return rows.min(), rows.max(), cols.min(), cols.max()


# ------------------------------------------------------------------------------------ registry
def test_registry_sizes_and_names():
    assert len(F.DOMAINS["faces"]) >= 8 + 1  # eight face factors plus the background
    assert len(F.DOMAINS["cats"]) >= 4 + 1
    for domain, factors in F.DOMAINS.items():
        names = [factor.name for factor in factors]
        assert len(names) == len(set(names)), domain
        for factor in factors:
            assert len(factor.values) >= 2 and len(set(factor.values)) == len(factor.values)
            if set(factor.values) == {"no", "yes"}:
                assert factor.values[0] == "no"  # index 0 is "absent"
    hair_style = F.get_factor("faces", "hair_style")
    assert "bald" not in hair_style.values  # bald would hide hair colour
    scene = F.factor_names("scenes")
    assert scene[:2] == ["order", "background"]
    assert {f"face.{n}" for n in F.factor_names("faces") if n != "background"} <= set(scene)
    assert {f"cat.{n}" for n in F.factor_names("cats") if n != "background"} <= set(scene)
    assert F.num_values("cats") == [len(f.values) for f in F.DOMAINS["cats"]]


@pytest.mark.parametrize("domain", DOMAINS)
def test_encode_decode_round_trip(domain):
    for seed in range(20):
        labels = R.labels_for_seed(domain, seed)
        indices = F.encode_labels(domain, labels)
        assert all(0 <= i < n for i, n in zip(indices, F.num_values(domain)))
        assert F.decode_labels(domain, indices) == labels


def test_scene_part_labels_round_trip():
    scene = R.labels_for_seed("scenes", 3)
    face, cat = F.scene_part_labels(scene, "face"), F.scene_part_labels(scene, "cat")
    assert F.check_labels("faces", face) == face and F.check_labels("cats", cat) == cat
    assert face["background"] == cat["background"] == scene["background"]
    assert F.scene_labels(face, cat, scene["order"]) == scene


@pytest.mark.parametrize(
    "call, culprit",
    [
        (lambda: F.factor_names("dogs"), "dogs"),
        (lambda: F.encode_labels("faces", {**R.labels_for_seed("faces", 0), "glasses": "maybe"}), "maybe"),
        (lambda: F.encode_labels("faces", {"glasses": "yes"}), "skin"),
        (lambda: F.check_labels("cats", {"tail": "long"}, partial=True), "tail"),
        (lambda: F.decode_labels("cats", [0, 0, 0, 9, 0]), "ear_size"),
        (lambda: F.decode_labels("cats", [0]), "5 factors"),
        (lambda: R.render("faces", 0, {"hair_style": "bald"}), "bald"),
        (lambda: R.render("faces", -1), "seed"),
        (lambda: R.render_many("cats", [1, 2], [None]), "one per seed"),
    ],
)
def test_user_errors_are_one_line(call, culprit):
    with pytest.raises(NoiseCLRError) as error:
        call()
    assert culprit in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------ renderer
@pytest.mark.parametrize("domain", DOMAINS)
def test_render_shape_and_determinism(domain):
    image, labels = R.render(domain, 11)
    assert image.mode == "RGB" and image.size == (128, 128)
    assert labels == R.labels_for_seed(domain, 11) and F.check_labels(domain, labels) == labels
    again, labels_again = R.render(domain, 11)
    assert image.tobytes() == again.tobytes() and labels == labels_again
    # Explicit labels equal to the sampled ones give the same image; other seeds differ.
    assert R.render(domain, 11, labels)[0].tobytes() == image.tobytes()
    assert R.render(domain, 12)[0].tobytes() != image.tobytes()


def _digest(domain: str, seeds) -> str:
    batch, labels = R.render_many(domain, seeds)
    return hashlib.sha256(batch.tobytes() + repr(labels).encode()).hexdigest()


def test_render_is_identical_in_another_process():
    code = (
        "from noiseclr.world import render as R;"
        "import hashlib;"
        "print(' '.join(hashlib.sha256(b.tobytes() + repr(l).encode()).hexdigest()"
        " for b, l in (R.render_many(d, range(5)) for d in ('faces', 'cats', 'scenes'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert result.stdout.split() == [_digest(d, range(5)) for d in ("faces", "cats", "scenes")]


def test_render_many_matches_render():
    batch, labels = R.render_many("scenes", np.array([4, 9]), [None, {"order": "cat_left"}])
    assert batch.shape == (2, 128, 128, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[0], pixels("scenes", 4))
    assert labels[1]["order"] == "cat_left"
    assert np.array_equal(batch[1], pixels("scenes", 9, {"order": "cat_left"}))


def test_partial_labels_keep_the_rest_of_the_seed():
    base = R.labels_for_seed("faces", 5)
    flipped = "no" if base["glasses"] == "yes" else "yes"
    _, labels = R.render("faces", 5, {"glasses": flipped})
    assert labels == {**base, "glasses": flipped}


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_value_appears_roughly_uniformly(domain):
    n = 600
    counts = {f.name: dict.fromkeys(f.values, 0) for f in F.DOMAINS[domain]}
    for seed in range(n):
        for name, value in R.labels_for_seed(domain, seed).items():
            counts[name][value] += 1
    for name, per_value in counts.items():
        expected = n / len(per_value)
        for value, count in per_value.items():
            assert abs(count - expected) < 0.3 * expected, (name, value, count)


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_factor_change_changes_the_image(domain):
    for seed in (0, 1):
        base_labels = R.labels_for_seed(domain, seed)
        base = pixels(domain, seed)
        for factor in F.DOMAINS[domain]:
            for value in factor.values:
                if value == base_labels[factor.name]:
                    continue
                other = pixels(domain, seed, {factor.name: value})
                assert np.any(other != base), (seed, factor.name, value)


def test_corners_show_the_labelled_background():
    for domain in DOMAINS:
        for seed in range(12):
            image, labels = R.render_array(domain, seed)
            expected = R.BACKGROUND_RGB[labels["background"]]
            for row, col in ((0, 0), (0, 127), (127, 0), (127, 127)):
                assert tuple(image[row, col]) == expected, (domain, seed)


def _face_band(placement: R.Placement, y0: float, y1: float, margin: float = 2.0) -> tuple[float, float]:
    return placement.to_pixel(0, y0)[1] - margin, placement.to_pixel(0, y1)[1] + margin


def test_face_factor_edits_are_local():
    """Same seed, one factor changed: only that feature's pixels change (jitter is kept)."""
    reach = R.RIM_R + R.RIM_WIDTH
    for seed in range(6):
        placement = R.layout("faces", seed)["face"]
        base = R.labels_for_seed("faces", seed)
        cases = {
            "glasses": (R.EYE_Y - reach, R.EYE_Y + reach),
            "mustache": (12.0, 22.0),
            "lipstick": (R.MOUTH_Y - 9.0, R.MOUTH_Y + 9.0),
            "mouth": (R.MOUTH_Y - 9.0, R.MOUTH_Y + 9.0),
            "eye_color": (R.EYE_Y - R.SCLERA_RY, R.EYE_Y + R.SCLERA_RY),
        }
        for name, (y0, y1) in cases.items():
            factor = F.get_factor("faces", name)
            for value in factor.values:
                box = changed_box(pixels("faces", seed, {**base, name: value}), pixels("faces", seed, base))
                if value == base[name]:
                    assert box is None
                    continue
                top, bottom = _face_band(placement, y0, y1)
                assert box is not None and top <= box[0] and box[1] <= bottom, (seed, name, value, box)
                # ... and horizontally inside the head.
                left = placement.to_pixel(-R.HEAD_RX, 0)[0] - 2
                right = placement.to_pixel(R.HEAD_RX, 0)[0] + 2
                assert left <= box[2] and box[3] <= right, (seed, name, value, box)


def test_face_labels_read_from_pixels():
    for seed in range(24):
        image = pixels("faces", seed)
        labels = R.labels_for_seed("faces", seed)
        p = R.layout("faces", seed)["face"]
        skin = R.SKIN_RGB[labels["skin"]]
        assert at(image, p, -20.0, 16.0) == skin  # cheek
        assert at(image, p, 0.0, -38.0) == R.HAIR_RGB[labels["hair_color"]]  # top of the head
        for side in (-1, 1):  # iris, between pupil and rim, below the highlight
            assert at(image, p, side * R.EYE_X, R.EYE_Y + 0.5 + 4.2) == R.FACE_EYE_RGB[labels["eye_color"]]
            rim = at(image, p, side * R.EYE_X, R.EYE_Y + R.RIM_R - R.RIM_WIDTH / 2)
            assert (max(rim) < 60) == (labels["glasses"] == "yes"), (seed, rim)
        assert (at(image, p, 7.5, 17.0) == R.MUSTACHE_RGB) == (labels["mustache"] == "yes")

        # Lips: exact lipstick red somewhere on the mouth, or nothing near it.
        x0, y0 = p.to_pixel(-R.MOUTH_HALF_WIDTH - 3, R.MOUTH_Y - 8)
        x1, y1 = p.to_pixel(R.MOUTH_HALF_WIDTH + 3, R.MOUTH_Y + 8)
        mouth = image[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
        distance = np.abs(mouth - np.array(R.LIPSTICK_RGB)).sum(-1)
        if labels["lipstick"] == "yes":
            assert distance.min() == 0
        else:
            assert distance.min() > 60

        # Hair style from where the hair is: below the chin (long) or beside the eyes (curly).
        hair = np.all(image == np.array(R.HAIR_RGB[labels["hair_color"]]), axis=-1)
        chin = int(p.to_pixel(0, R.HEAD_RY + 3)[1])
        beside = [int(p.to_pixel(side * (R.HEAD_RX + 4), 0)[0]) for side in (-1, 1)]
        eyes = int(p.to_pixel(0, R.EYE_Y)[1])
        below_chin = hair[chin:].sum()
        outside = hair[eyes - 6 : eyes + 6, : beside[0]].sum() + hair[eyes - 6 : eyes + 6, beside[1] :].sum()
        assert (below_chin > 60) == (labels["hair_style"] == "long"), (seed, below_chin)
        assert (outside > 30) == (labels["hair_style"] == "curly"), (seed, outside)


def test_mouth_shape_reads_from_pixels():
    """Smile: open with white teeth, corners up. Frown: open and dark, corners down. Neutral: closed."""
    for seed in range(8):
        p = R.layout("faces", seed)["face"]
        x0, y0 = p.to_pixel(-R.SMILE_HALF_WIDTH - 3, R.FROWN_TOP - 4)
        x1, y1 = p.to_pixel(R.SMILE_HALF_WIDTH + 3, R.SMILE_TOP + R.SMILE_DEPTH + 4)
        heights = {}
        for mouth in ("smile", "neutral", "frown"):
            image = pixels("faces", seed, {"mouth": mouth, "lipstick": "yes"})
            box = image[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
            teeth = np.all(box == np.array(R.TEETH_RGB), axis=-1).sum()
            inside = np.all(box == np.array(R.MOUTH_INSIDE_RGB), axis=-1).sum()
            assert (teeth > 12) == (mouth == "smile") and (inside > 15) == (mouth != "neutral"), (seed, mouth)
            red = np.all(image == np.array(R.LIPSTICK_RGB), axis=-1)
            rows, cols = np.nonzero(red)
            centre_x = p.to_pixel(0, 0)[0]
            middle = rows[np.abs(cols - centre_x) < 3].mean()
            corners = rows[np.abs(cols - centre_x) > 0.6 * R.FROWN_HALF_WIDTH * p.scale].mean()
            heights[mouth] = middle - corners  # > 0: the lips' middle is lower than their corners
        assert heights["smile"] > 3 and heights["frown"] < -3 and abs(heights["neutral"]) < 1.5, heights


def test_cat_labels_read_from_pixels():
    for seed in range(24):
        image = pixels("cats", seed)
        labels = R.labels_for_seed("cats", seed)
        p = R.layout("cats", seed)["cat"]
        fur = R.FUR_RGB[labels["fur_color"]]
        assert at(image, p, -25.0, 21.0) == fur
        for side in (-1, 1):
            assert at(image, p, side * (R.CAT_EYE_X + 5.5), R.CAT_EYE_Y + 2.0) == R.CAT_EYE_RGB[labels["eye_color"]]
        stripe = at(image, p, 0.0, -27.0)
        assert stripe == (R.STRIPE_RGB[labels["fur_color"]] if labels["stripes"] == "yes" else fur)
        ear_tip = at(image, p, 34.0, -61.0)
        background = R.BACKGROUND_RGB[labels["background"]]
        assert (ear_tip != background) == (labels["ear_size"] == "large"), (seed, ear_tip)


def test_stripes_contrast_with_every_fur():
    for fur, rgb in R.FUR_RGB.items():
        assert np.abs(np.subtract(rgb, R.STRIPE_RGB[fur])).sum() > 150, fur
        for background in R.BACKGROUND_RGB.values():
            assert np.abs(np.subtract(rgb, background)).sum() > 100, fur


def test_palettes_are_well_separated():
    for (domain, name), palette in R.PALETTES.items():
        colours = list(palette.values())
        for i in range(len(colours)):
            for j in range(i + 1, len(colours)):
                assert np.abs(np.subtract(colours[i], colours[j])).sum() > 90, (domain, name)
    for skin in R.SKIN_RGB.values():
        for background in R.BACKGROUND_RGB.values():
            assert np.abs(np.subtract(skin, background)).sum() > 100


def test_scene_halves_show_the_labelled_objects():
    for seed in range(10):
        labels = R.labels_for_seed("scenes", seed)
        scene = pixels("scenes", seed)
        placements = R.layout("scenes", seed)
        face, cat = placements["face"], placements["cat"]
        assert (face.left == 0) == (labels["order"] == "face_left") and {face.left, cat.left} == {0, 64}
        face_labels, cat_labels = F.scene_part_labels(labels, "face"), F.scene_part_labels(labels, "cat")
        assert at(scene, face, -20.0, 16.0) == R.SKIN_RGB[face_labels["skin"]]
        assert at(scene, face, -R.EYE_X, R.EYE_Y + 0.5 + 4.2) == R.FACE_EYE_RGB[face_labels["eye_color"]]
        assert at(scene, cat, -25.0, 21.0) == R.FUR_RGB[cat_labels["fur_color"]]
        assert at(scene, cat, R.CAT_EYE_X + 5.5, R.CAT_EYE_Y + 2.0) == R.CAT_EYE_RGB[cat_labels["eye_color"]]
        # Swapping the order mirrors the halves' positions and changes nothing else.
        swapped = pixels("scenes", seed, {"order": "cat_left" if labels["order"] == "face_left" else "face_left"})
        assert np.array_equal(swapped[:, :64], scene[:, 64:]) and np.array_equal(swapped[:, 64:], scene[:, :64])


def test_scene_edits_stay_in_their_half():
    for seed in range(4):
        labels = R.labels_for_seed("scenes", seed)
        scene = pixels("scenes", seed)
        face_left = labels["order"] == "face_left"
        for name, part_is_face in (
            ("face.glasses", True),
            ("face.hair_style", True),
            ("cat.stripes", False),
            ("cat.ear_size", False),
        ):
            value = next(v for v in F.get_factor("scenes", name).values if v != labels[name])
            box = changed_box(pixels("scenes", seed, {name: value}), scene)
            on_left = part_is_face == face_left
            assert box is not None and ((box[3] < 64) if on_left else (box[2] >= 64)), (name, box)


def test_render_is_fast():
    import time

    R.render_many("scenes", range(5))
    start = time.perf_counter()
    R.render_many("scenes", range(100, 160))
    per_image = (time.perf_counter() - start) / 60
    assert per_image < 0.02  # measured ~1-2 ms; generous for a busy CI core


def test_object_boxes_hold_their_object_and_not_the_other():
    import numpy as np

    from noiseclr.world import object_box, render_array
    from noiseclr.world.render import BACKGROUND_RGB

    for seed in range(3):
        image, labels = render_array("scenes", seed)
        drawn = np.abs(image.astype(int) - np.asarray(BACKGROUND_RGB[labels["background"]])).max(axis=-1) > 12
        face, cat = object_box("scenes", seed, "face"), object_box("scenes", seed, "cat")
        assert face[2] <= cat[0] or cat[2] <= face[0]  # side by side, never overlapping
        inside = np.zeros_like(drawn)
        for x0, y0, x1, y1 in (face, cat):
            inside[y0:y1, x0:x1] = True
        assert not (drawn & ~inside).any()
    with pytest.raises(NoiseCLRError, match="no 'cat'"):
        object_box("faces", 0, "cat")
