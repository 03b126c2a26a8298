"""Deterministic renderer of the procedural world: 128x128 RGB images with known factor labels.

Every image comes from ``(domain, seed)`` and optionally explicit labels:

* the seed drives two independent random streams, one for the labels and one for the nuisance
  jitter (position, size, head width). Labels given explicitly replace the sampled ones and leave
  the jitter untouched, so ``render("faces", 7, {"glasses": "yes"})`` is seed 7's face with
  glasses put on and every other pixel (outside the glasses) unchanged;
* shapes are drawn with Pillow at :data:`SUPERSAMPLE` times the size and box-filtered down
  (``Image.reduce``), which anti-aliases and keeps every change local to the shapes it touches;
* nothing reads global state: the same arguments give byte-identical pixels in any process.

Drawing happens in "canonical units": an object's coordinates relative to its own centre, with
one unit = one output pixel at full size. Features are big and high-contrast on purpose: every
factor must survive an 8x-downsampling VAE (16x16 latents) and be read by a small CNN, including
in scenes, where both objects are drawn at :data:`SCENE_SCALE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import NoiseCLRError
from .factors import BACKGROUND, CAT_FACTORS, FACE_FACTORS, Labels, check_labels, domain_factors, scene_part_labels

IMAGE_SIZE = 128
"""Output side length in pixels."""
SUPERSAMPLE = 4
"""Shapes are drawn at this many times the output size, then box-filtered down."""
SCENE_SCALE = 0.72
"""Size of each scene object relative to its full-image size; each fills its half (and is clipped
to it, so the widest curls or whisker tips may be cut at the middle but never overlap the other)."""

RGB = tuple[int, int, int]

# ------------------------------------------------------------------------------------ palettes
# Colours are chosen far apart (and, across factors that touch, in hue or lightness) so a reader
# cannot confuse them after a lossy VAE. Backgrounds are mid-saturated so that every skin, hair
# and fur colour has a visible silhouette against every background (plus a dark outline).
BACKGROUND_RGB: dict[str, RGB] = {
    "blue": (90, 160, 240),
    "green": (100, 190, 90),
    "purple": (155, 105, 215),
    "pink": (240, 120, 175),
}
SKIN_RGB: dict[str, RGB] = {
    "light": (250, 220, 195),
    "tan": (226, 172, 120),
    "brown": (168, 110, 68),
    "dark": (118, 76, 50),
}
# Natural lip colour per skin tone (no lipstick): a muted rose-brown that contrasts with the skin
# (lighter than dark skin, darker than the others) so the mouth's bend reads; never saturated red.
LIP_RGB: dict[str, RGB] = {
    "light": (205, 128, 120),
    "tan": (172, 98, 82),
    "brown": (118, 62, 50),
    "dark": (168, 104, 96),
}
LIPSTICK_RGB: RGB = (225, 20, 55)
# Glasses lenses lighten the skin around each eye (a pale disc inside the rim): on dark skin the
# black rim alone would nearly vanish after the VAE. The lens never covers the sclera or iris.
LENS_TINT: RGB = (220, 238, 252)
LENS_OPACITY = 0.6
HAIR_RGB: dict[str, RGB] = {
    "black": (32, 30, 34),
    "blonde": (246, 206, 78),
    "red": (205, 52, 32),
    "blue": (40, 72, 200),
    "white": (242, 242, 242),
}
FACE_EYE_RGB: dict[str, RGB] = {
    "blue": (40, 120, 240),
    "green": (40, 175, 60),
    "brown": (125, 68, 28),
}
FUR_RGB: dict[str, RGB] = {
    "orange": (240, 146, 48),
    "gray": (146, 146, 156),
    "white": (246, 244, 236),
    "brown": (140, 92, 54),
}
# Stripes are a clearly darker shade of each fur colour, so they read on every fur.
STRIPE_RGB: dict[str, RGB] = {
    "orange": (160, 70, 15),
    "gray": (62, 62, 72),
    "white": (150, 145, 140),
    "brown": (62, 36, 18),
}
CAT_EYE_RGB: dict[str, RGB] = {
    "green": (70, 200, 50),
    "yellow": (250, 215, 30),
    "blue": (50, 140, 250),
}

FACE_OUTLINE: RGB = (58, 36, 30)
CAT_OUTLINE: RGB = (40, 36, 36)
MUSTACHE_RGB: RGB = (26, 18, 16)
GLASSES_RGB: RGB = (20, 20, 26)
MOUTH_LINE_RGB: RGB = (70, 18, 24)
MOUTH_INSIDE_RGB: RGB = (92, 20, 30)
TEETH_RGB: RGB = (252, 252, 246)
SCLERA_RGB: RGB = (255, 255, 255)
PUPIL_RGB: RGB = (12, 12, 14)
INNER_EAR_RGB: RGB = (238, 150, 165)
CAT_NOSE_RGB: RGB = (232, 110, 130)

PALETTES: dict[tuple[str, str], Mapping[str, RGB]] = {
    ("faces", "background"): BACKGROUND_RGB,
    ("faces", "skin"): SKIN_RGB,
    ("faces", "hair_color"): HAIR_RGB,
    ("faces", "eye_color"): FACE_EYE_RGB,
    ("cats", "background"): BACKGROUND_RGB,
    ("cats", "fur_color"): FUR_RGB,
    ("cats", "eye_color"): CAT_EYE_RGB,
}
"""Colour of each value of the colour factors, for tests and readers' sanity checks."""

# Canonical geometry of a face (head centre at the origin, 1 unit = 1 px at full size).
HEAD_RX, HEAD_RY = 34.0, 44.0
EYE_X, EYE_Y = 15.0, -4.0
SCLERA_RX, SCLERA_RY = 9.5, 8.6
IRIS_R = 6.6  # large on purpose: eye colour is the hardest factor to read after the VAE
PUPIL_R = 2.4
RIM_R, RIM_WIDTH = 14.0, 3.0  # glasses rims sit outside the sclera and never cover the iris
# Mouths: a smile is an open grin (white teeth over a dark mouth, deep curved bottom), a frown an
# open inverted grin (dark, deep curved top), neutral a closed straight band. Bends alone blur into
# one smudge at the VAE's 16x16 latents; bright teeth / a dark blob / a thin line do not.
MOUTH_Y, MOUTH_HALF_WIDTH = 31.0, 14.0  # the neutral band
SMILE_HALF_WIDTH, SMILE_TOP, SMILE_DEPTH = 15.0, 25.0, 13.0
FROWN_HALF_WIDTH, FROWN_TOP, FROWN_CORNER_Y = 14.0, 24.0, 36.2
LIP_WIDTH = 6.5  # the neutral band's thickness
RIM_LIP_WIDTH = 4.2  # the lips around an open mouth
TEETH_HEIGHT = 4.5
FRINGE_Y = -23.0
# Canonical geometry of a cat head.
CAT_RX, CAT_RY = 42.0, 35.0
CAT_EYE_X, CAT_EYE_Y, CAT_EYE_RX, CAT_EYE_RY = 17.0, -6.0, 10.5, 9.5

# Where each object's origin sits in its own full-size image (cats have ears above the head).
FACE_ORIGIN = (64.0, 65.0)
CAT_ORIGIN = (64.0, 78.0)


# ------------------------------------------------------------------------------------ jitter
@dataclass(frozen=True)
class Jitter:
    """Nuisance variation of one object; not a factor, never in the labels."""

    dx: float = 0.0
    """Horizontal shift in output pixels."""
    dy: float = 0.0
    """Vertical shift in output pixels."""
    scale: float = 1.0
    """Overall size."""
    width: float = 1.0
    """Extra horizontal stretch (head width)."""


LABEL_STREAM, JITTER_STREAM = 1, 2


def seed_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent PCG64 generator for one purpose (labels or jitter) of one seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NoiseCLRError(f"seed {seed!r}: must be a non-negative integer.")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([stream, int(seed)])))


def sample_labels(domain: str, rng: np.random.Generator) -> Labels:
    """Every factor of ``domain`` drawn uniformly and independently (no correlations)."""
    factors = domain_factors(domain)
    indices = rng.integers(0, [len(factor.values) for factor in factors])
    return {factor.name: factor.values[int(index)] for factor, index in zip(factors, indices)}


def labels_for_seed(domain: str, seed: int) -> Labels:
    """The labels ``render(domain, seed)`` draws when none are given."""
    return sample_labels(domain, seed_rng(seed, LABEL_STREAM))


def _object_jitter(rng: np.random.Generator, shift_x: float, shift_y: float, scale: tuple[float, float]) -> Jitter:
    dx, dy, size, width = rng.random(4)
    return Jitter(
        dx=float((2 * dx - 1) * shift_x),
        dy=float((2 * dy - 1) * shift_y),
        scale=float(scale[0] + (scale[1] - scale[0]) * size),
        width=float(0.94 + 0.12 * width),
    )


def jitter_for_seed(domain: str, seed: int) -> dict[str, Jitter]:
    """Nuisance jitter of each object: ``{"face": ...}``, ``{"cat": ...}`` or both for scenes.

    Independent of the labels, so changing a factor never moves anything.
    """
    domain_factors(domain)
    rng = seed_rng(seed, JITTER_STREAM)
    if domain == "faces":
        return {"face": _object_jitter(rng, 4.0, 4.0, (0.92, 1.04))}
    if domain == "cats":
        return {"cat": _object_jitter(rng, 4.0, 4.0, (0.92, 1.04))}
    # Scenes: each object stays inside its half (the widest hair and whiskers just fit).
    return {"face": _object_jitter(rng, 1.5, 5.0, (0.95, 1.0)), "cat": _object_jitter(rng, 1.5, 5.0, (0.95, 1.0))}


@dataclass(frozen=True)
class Placement:
    """Where one object's canonical coordinates land in the output image."""

    origin_x: float
    """Output-pixel position of the object's canonical origin (its head centre)."""
    origin_y: float
    scale: float
    """Output pixels per canonical unit, vertically."""
    width: float
    """Extra horizontal stretch: output pixels per unit horizontally are ``scale * width``."""
    left: float = 0.0
    """The object is clipped to output columns ``[left, right)`` (its half, in scenes)."""
    right: float = float(IMAGE_SIZE)

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Output-pixel coordinates (continuous; pixel ``(i, j)`` covers ``[i, i+1)``) of a point."""
        return (self.origin_x + self.scale * self.width * x, self.origin_y + self.scale * y)


def layout(domain: str, seed: int, labels: Mapping[str, str] | None = None) -> dict[str, Placement]:
    """The placement of each object (``"face"`` and/or ``"cat"``) in ``render(domain, seed, labels)``.

    Only scenes depend on the labels (``order`` decides which half each object is in). Readers
    and tests use it to find a feature's pixels (an iris, a mustache) in a given image.
    """
    jitter = jitter_for_seed(domain, seed)
    if domain == "faces":
        j = jitter["face"]
        return {"face": Placement(FACE_ORIGIN[0] + j.dx, FACE_ORIGIN[1] + j.dy, j.scale, j.width)}
    if domain == "cats":
        j = jitter["cat"]
        return {"cat": Placement(CAT_ORIGIN[0] + j.dx, CAT_ORIGIN[1] + j.dy, j.scale, j.width)}
    full = _resolve_labels(domain, seed, labels)
    left_part = "face" if full["order"] == "face_left" else "cat"
    half = IMAGE_SIZE / 2
    placements = {}
    for part, origin in (("face", FACE_ORIGIN), ("cat", CAT_ORIGIN)):
        j = jitter[part]
        scale = SCENE_SCALE * j.scale
        left = 0.0 if part == left_part else half
        # The object's vertical middle (not its head centre) sits at the image's middle.
        origin_y = half + (origin[1] - half) * scale + j.dy
        placements[part] = Placement(left + half / 2 + j.dx, origin_y, scale, j.width, left, left + half)
    return placements


# ------------------------------------------------------------------------------------ drawing
class _Pen:
    """Draws in an object's canonical units onto a supersampled canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, placement: Placement, canvas_x: float = 0.0):
        # ``canvas_x``: output-pixel x of the canvas's left edge (scene halves are own canvases).
        self.draw = draw
        self.ox = (placement.origin_x - canvas_x) * SUPERSAMPLE
        self.oy = placement.origin_y * SUPERSAMPLE
        self.sx = placement.scale * placement.width * SUPERSAMPLE
        self.sy = placement.scale * SUPERSAMPLE
        self.s = placement.scale * SUPERSAMPLE

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (self.ox + self.sx * x, self.oy + self.sy * y)

    def stroke(self, width: float) -> int:
        return max(1, round(width * self.s))

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        fill: RGB | None,
        outline: RGB | None = None,
        width: float = 0.0,
    ) -> None:
        x0, y0 = self.xy(cx - rx, cy - ry)
        x1, y1 = self.xy(cx + rx, cy + ry)
        if outline is None:
            self.draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            self.draw.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=self.stroke(width))

    def polygon(
        self, points: Sequence[tuple[float, float]], fill: RGB | None, outline: RGB | None = None, width: float = 0.0
    ) -> None:
        pixels = [self.xy(x, y) for x, y in points]
        if outline is None:
            self.draw.polygon(pixels, fill=fill)
        else:
            self.draw.polygon(pixels, fill=fill, outline=outline, width=self.stroke(width))

    def line(self, points: Sequence[tuple[float, float]], fill: RGB, width: float) -> None:
        """A polyline with round joints and round caps."""
        pixels = [self.xy(x, y) for x, y in points]
        stroke = self.stroke(width)
        self.draw.line(pixels, fill=fill, width=stroke, joint="curve")
        radius = stroke / 2
        for px, py in (pixels[0], pixels[-1]):
            self.draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=fill)


def _darker(color: RGB, factor: float) -> RGB:
    return (int(color[0] * factor), int(color[1] * factor), int(color[2] * factor))


def _arc(
    cx: float, cy: float, rx: float, ry: float, start: float, stop: float, count: int
) -> list[tuple[float, float]]:
    """Points on an ellipse, angles in radians (0 = right, pi/2 = down: image coordinates)."""
    angles = [start + (stop - start) * i / (count - 1) for i in range(count)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _head_half_width(y: float, rx: float, ry: float) -> float:
    return rx * math.sqrt(max(0.0, 1.0 - (y / ry) ** 2))


def _hair_cap(fringe: bool) -> list[tuple[float, float]]:
    """Hair on top of the head down to the fringe, with short sideburns."""
    outer_cy, outer_rx, outer_ry = -4.0, HEAD_RX + 3.5, HEAD_RY + 4.0
    alpha = math.asin((outer_cy + 8.0) / outer_ry)
    points = _arc(0.0, outer_cy, outer_rx, outer_ry, math.pi + alpha, 2 * math.pi - alpha, 15)
    edge = _head_half_width(FRINGE_Y, HEAD_RX, HEAD_RY)
    points += [(HEAD_RX - 3.0, -8.0), (edge - 1.0, FRINGE_Y)]
    if fringe:
        points += [(17.0, FRINGE_Y - 3.5), (6.0, FRINGE_Y - 0.5), (-6.0, FRINGE_Y - 4.0), (-17.0, FRINGE_Y - 1.0)]
    points += [(-edge + 1.0, FRINGE_Y), (-HEAD_RX + 3.0, -8.0)]
    return points


def _draw_hair_back(pen: _Pen, style: str, color: RGB) -> None:
    outline = _darker(color, 0.6)
    if style == "long":
        # Straight hair hanging behind the head down past the chin: a tall, wide silhouette.
        top = _arc(0.0, -4.0, HEAD_RX + 7.0, HEAD_RY + 4.0, math.pi, 2 * math.pi, 13)
        bottom = HEAD_RY + 12.0
        side, tip = HEAD_RX + 7.0, HEAD_RX + 3.0
        panel = top + [(side, bottom - 14.0), (tip, bottom), (-tip, bottom), (-side, bottom - 14.0)]
        pen.polygon(panel, color, outline, 1.5)
    elif style == "curly":
        # A round mass of curls, wider and taller than the head; each curl outlined for texture.
        cy, rx, ry, curl = -6.0, HEAD_RX + 3.0, HEAD_RY - 2.0, 9.0
        pen.ellipse(0.0, cy, rx, ry, color)
        for x, y in _arc(0.0, cy, rx, ry, math.radians(150), math.radians(390), 15):
            pen.ellipse(x, y, curl, curl, color, outline, 1.2)
        pen.ellipse(0.0, cy, rx - 2.0, ry - 2.0, color)


def _draw_hair_front(pen: _Pen, style: str, color: RGB) -> None:
    outline = _darker(color, 0.6)
    if style == "curly":
        pen.polygon(_hair_cap(fringe=False), color)
        for x in (-22.0, -11.0, 0.0, 11.0, 22.0):
            pen.ellipse(x, FRINGE_Y - 6.0, 7.0, 7.0, color, outline, 1.2)
    else:
        pen.polygon(_hair_cap(fringe=True), color, outline, 1.5)


def _curve(half_width: float, y_corner: float, y_middle: float, count: int = 11) -> list[tuple[float, float]]:
    """A parabola through both corners (x = +-half_width) and the middle, left to right."""
    points = []
    for i in range(count):
        t = -1.0 + 2.0 * i / (count - 1)
        points.append((half_width * t, y_corner + (y_middle - y_corner) * (1.0 - t * t)))
    return points


def _draw_mouth(pen: _Pen, mouth: str, lips: RGB) -> None:
    if mouth == "neutral":
        pen.line(_curve(MOUTH_HALF_WIDTH, MOUTH_Y, MOUTH_Y, 3), lips, LIP_WIDTH)
        # A thin parting line only: a dark neutral mouth would read like a small frown.
        pen.line(_curve(MOUTH_HALF_WIDTH - 3.0, MOUTH_Y, MOUTH_Y, 3), MOUTH_LINE_RGB, 1.2)
        return
    if mouth == "smile":
        w = SMILE_HALF_WIDTH
        top = _curve(w, SMILE_TOP, SMILE_TOP + 2.0)
        bottom = _curve(w, SMILE_TOP, SMILE_TOP + SMILE_DEPTH)
    else:
        w = FROWN_HALF_WIDTH
        top = _curve(w, FROWN_CORNER_Y, FROWN_TOP)
        bottom = _curve(w, FROWN_CORNER_Y, FROWN_CORNER_Y - 1.5)
    outline = top + bottom[::-1]
    pen.polygon(outline, MOUTH_INSIDE_RGB)
    if mouth == "smile":
        # Upper teeth: a white band under the top lip, never below the mouth's bottom edge.
        teeth_bottom = [(x, min(y + TEETH_HEIGHT, yb)) for (x, y), (_, yb) in zip(top, bottom)]
        pen.polygon(top + teeth_bottom[::-1], TEETH_RGB)
    pen.line(outline + [outline[0]], lips, RIM_LIP_WIDTH)


def draw_face(pen: _Pen, labels: Mapping[str, str]) -> None:
    """A cartoon portrait, head centre at the pen's origin. ``labels`` are ``faces`` labels."""
    skin = SKIN_RGB[labels["skin"]]
    hair = HAIR_RGB[labels["hair_color"]]
    style = labels["hair_style"]
    skin_outline = _darker(skin, 0.55) if labels["skin"] != "dark" else (40, 24, 18)

    _draw_hair_back(pen, style, hair)
    # Ears, then the head over their inner half.
    for side in (-1.0, 1.0):
        pen.ellipse(side * (HEAD_RX - 1.0), 2.0, 6.0, 9.0, skin, skin_outline, 1.3)
    pen.ellipse(0.0, 0.0, HEAD_RX, HEAD_RY, skin, skin_outline, 1.6)
    _draw_hair_front(pen, style, hair)

    glasses = labels["glasses"] == "yes"
    if glasses:
        lens = tuple(round(LENS_OPACITY * t + (1 - LENS_OPACITY) * c) for t, c in zip(LENS_TINT, skin))
        for side in (-1.0, 1.0):
            pen.ellipse(side * EYE_X, EYE_Y, RIM_R, RIM_R, lens)

    # Eyes: white sclera, a big coloured iris, a pupil and a small highlight.
    iris = FACE_EYE_RGB[labels["eye_color"]]
    for side in (-1.0, 1.0):
        ex = side * EYE_X
        pen.ellipse(ex, EYE_Y, SCLERA_RX, SCLERA_RY, SCLERA_RGB, skin_outline, 1.2)
        pen.ellipse(ex, EYE_Y + 0.5, IRIS_R, IRIS_R, iris)
        pen.ellipse(ex, EYE_Y + 0.5, PUPIL_R, PUPIL_R, PUPIL_RGB)
        pen.ellipse(ex + 2.2, EYE_Y - 1.8, 1.1, 1.1, SCLERA_RGB)

    # Nose: a small darker oval.
    pen.ellipse(0.0, 9.0, 3.4, 2.6, _darker(skin, 0.8))

    # Mouth: lips red with lipstick, a muted tint of the skin without.
    lips = LIPSTICK_RGB if labels["lipstick"] == "yes" else LIP_RGB[labels["skin"]]
    _draw_mouth(pen, labels["mouth"], lips)

    if labels["mustache"] == "yes":
        # Two thick dark lobes between nose and mouth, clear of every mouth shape.
        for side in (-1.0, 1.0):
            pen.ellipse(side * 7.5, 17.0, 9.0, 4.0, MUSTACHE_RGB)

    if glasses:
        # Thick round rims around (not over) each eye, a bridge and short temple arms.
        for side in (-1.0, 1.0):
            pen.ellipse(side * EYE_X, EYE_Y, RIM_R, RIM_R, None, GLASSES_RGB, RIM_WIDTH)
            arm = [(side * (EYE_X + RIM_R - 1.0), EYE_Y - 2.0), (side * (HEAD_RX - 0.5), EYE_Y - 3.0)]
            pen.line(arm, GLASSES_RGB, 2.2)
        pen.line([(-EYE_X + RIM_R - 1.0, EYE_Y - 3.0), (EYE_X - RIM_R + 1.0, EYE_Y - 3.0)], GLASSES_RGB, 2.4)


def _ear(side: float, large: bool) -> list[tuple[float, float]]:
    if large:
        return [(side * 7.0, -31.0), (side * 36.0, -69.0), (side * 41.0, -8.0)]
    return [(side * 13.0, -30.0), (side * 31.0, -50.0), (side * 38.0, -14.0)]


def _shrink(points: list[tuple[float, float]], toward: tuple[float, float], factor: float) -> list[tuple[float, float]]:
    return [(toward[0] + (x - toward[0]) * factor, toward[1] + (y - toward[1]) * factor) for x, y in points]


def draw_cat(pen: _Pen, labels: Mapping[str, str]) -> None:
    """A cartoon cat head, head centre at the pen's origin. ``labels`` are ``cats`` labels."""
    fur = FUR_RGB[labels["fur_color"]]
    stripe = STRIPE_RGB[labels["fur_color"]]
    large = labels["ear_size"] == "large"

    for side in (-1.0, 1.0):
        ear = _ear(side, large)
        pen.polygon(ear, fur, CAT_OUTLINE, 1.6)
        cx = sum(x for x, _ in ear) / 3
        cy = sum(y for _, y in ear) / 3
        pen.polygon(_shrink(ear, (cx, cy + 4.0), 0.5), INNER_EAR_RGB)
    pen.ellipse(0.0, 0.0, CAT_RX, CAT_RY, fur, CAT_OUTLINE, 1.6)

    if labels["stripes"] == "yes":
        # Tapered stripes on the forehead and both cheeks, starting just inside the outline.
        for x in (-10.0, 0.0, 10.0):
            top = -_head_half_width(x, CAT_RY, CAT_RX) + 1.2
            pen.polygon([(x - 4.2, top), (x + 4.2, top), (x + 1.4, -18.0), (x - 1.4, -18.0)], stripe)
        for y in (0.0, 7.5, 15.0):
            edge = _head_half_width(y, CAT_RX, CAT_RY) - 1.2
            for side in (-1.0, 1.0):
                inner = edge - 13.5
                pen.polygon(
                    [(side * edge, y - 3.0), (side * edge, y + 3.0), (side * inner, y + 1.1), (side * inner, y - 1.1)],
                    stripe,
                )

    eye = CAT_EYE_RGB[labels["eye_color"]]
    for side in (-1.0, 1.0):
        ex = side * CAT_EYE_X
        pen.ellipse(ex, CAT_EYE_Y, CAT_EYE_RX, CAT_EYE_RY, eye, CAT_OUTLINE, 1.6)
        pen.ellipse(ex, CAT_EYE_Y, 2.3, 7.0, PUPIL_RGB)
        pen.ellipse(ex + 3.2, CAT_EYE_Y - 3.6, 1.5, 1.5, SCLERA_RGB)

    # Nose, mouth and whiskers (whiskers start at the cheek edge so they never look like stripes).
    pen.polygon([(-4.5, 6.0), (4.5, 6.0), (0.0, 11.0)], CAT_NOSE_RGB, CAT_OUTLINE, 0.8)
    pen.line([(0.0, 11.0), (0.0, 14.0), (-5.0, 18.0), (-9.5, 15.5)], CAT_OUTLINE, 1.4)
    pen.line([(0.0, 14.0), (5.0, 18.0), (9.5, 15.5)], CAT_OUTLINE, 1.4)
    for side in (-1.0, 1.0):
        pen.line([(side * 33.0, 22.0), (side * 46.0, 18.0)], CAT_OUTLINE, 1.0)
        pen.line([(side * 31.0, 26.0), (side * 44.0, 28.0)], CAT_OUTLINE, 1.0)


# ------------------------------------------------------------------------------------ API
def _canvas(background: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    size = IMAGE_SIZE * SUPERSAMPLE
    image = Image.new("RGB", (size, size), BACKGROUND_RGB[background])
    return image, ImageDraw.Draw(image)


def _resolve_labels(domain: str, seed: int, labels: Mapping[str, str] | None) -> Labels:
    sampled = labels_for_seed(domain, seed)
    if labels:
        sampled.update(check_labels(domain, labels, partial=True))
    return sampled


def _draw_scene(image: Image.Image, labels: Labels, placements: Mapping[str, Placement]) -> None:
    # Each object is drawn on its own half of the canvas and pasted, so it is clipped at the
    # middle and can never cover the other object.
    background = BACKGROUND_RGB[labels[BACKGROUND.name]]
    for part, draw_part in (("face", draw_face), ("cat", draw_cat)):
        placement = placements[part]
        left = round(placement.left * SUPERSAMPLE)
        half = Image.new("RGB", (round(placement.right * SUPERSAMPLE) - left, image.height), background)
        draw_part(_Pen(ImageDraw.Draw(half), placement, placement.left), scene_part_labels(labels, part))
        image.paste(half, (left, 0))


def render(domain: str, seed: int, labels: Mapping[str, str] | None = None) -> tuple[Image.Image, Labels]:
    """Render one 128x128 RGB image of ``domain`` and return it with its full labels.

    ``labels`` may name any subset of the domain's factors; the others are the seed's own
    sampled values. The nuisance jitter depends on ``seed`` only.
    """
    full = _resolve_labels(domain, seed, labels)
    placements = layout(domain, seed, full)
    image, draw = _canvas(full[BACKGROUND.name])
    if domain == "faces":
        draw_face(_Pen(draw, placements["face"]), full)
    elif domain == "cats":
        draw_cat(_Pen(draw, placements["cat"]), full)
    else:
        _draw_scene(image, full, placements)
    return image.reduce(SUPERSAMPLE), full


def render_array(domain: str, seed: int, labels: Mapping[str, str] | None = None) -> tuple[np.ndarray, Labels]:
    """Like :func:`render`, as a uint8 array [128, 128, 3]."""
    image, full = render(domain, seed, labels)
    return np.asarray(image, dtype=np.uint8), full


def render_many(
    domain: str, seeds: Sequence[int], labels: Sequence[Mapping[str, str] | None] | None = None
) -> tuple[np.ndarray, list[Labels]]:
    """Render one image per seed: uint8 array [N, 128, 128, 3] and the labels of each.

    ``labels``, if given, holds one (possibly partial, possibly ``None``) labels dict per seed.
    """
    seeds = list(seeds)
    if labels is not None and len(labels) != len(seeds):
        raise NoiseCLRError(f"render_many: got {len(labels)} labels for {len(seeds)} seeds; give one per seed.")
    pixels = np.empty((len(seeds), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    all_labels: list[Labels] = []
    for i, seed in enumerate(seeds):
        image, full = render(domain, seed, None if labels is None else labels[i])
        pixels[i] = np.asarray(image)
        all_labels.append(full)
    return pixels, all_labels


def render_face(labels: Mapping[str, str] | None = None, seed: int = 0) -> tuple[Image.Image, Labels]:
    return render("faces", seed, labels)


def render_cat(labels: Mapping[str, str] | None = None, seed: int = 0) -> tuple[Image.Image, Labels]:
    return render("cats", seed, labels)


def render_scene(labels: Mapping[str, str] | None = None, seed: int = 0) -> tuple[Image.Image, Labels]:
    return render("scenes", seed, labels)


def _check_palettes() -> None:
    # Every colour factor value has a colour (caught at import, not at the 100 000th render).
    for factors, domain in ((FACE_FACTORS, "faces"), (CAT_FACTORS, "cats")):
        for factor in factors:
            palette = PALETTES.get((domain, factor.name))
            if palette is not None and set(palette) != set(factor.values):
                raise AssertionError(f"palette of {domain}.{factor.name} does not match its values")


_check_palettes()


def object_box(
    domain: str, seed: int, part: str, labels: Mapping[str, str] | None = None, margin: int = 3
) -> tuple[int, int, int, int]:
    """The box ``(x0, y0, x1, y1)`` (pixels, far edges exclusive) a user would draw around object
    ``part`` (``"face"``/``"cat"``) of ``render(domain, seed, labels)``: the extent of its pixels that
    differ from the background, ``margin`` pixels wider, kept inside the object's own half in scenes."""
    image, full = render_array(domain, seed, labels)
    placement = layout(domain, seed, full).get(part)
    if placement is None:
        raise NoiseCLRError(
            f"object_box: {domain} renders have no {part!r}; use one of {', '.join(layout(domain, seed, full))}."
        )
    background = np.asarray(BACKGROUND_RGB[full[BACKGROUND.name]], dtype=np.int16)
    left, right = round(placement.left), round(placement.right)
    drawn = (np.abs(image.astype(np.int16) - background).max(axis=-1) > 12)[:, left:right]
    rows, columns = np.nonzero(drawn)
    if not rows.size:
        return (left, 0, right, IMAGE_SIZE)
    return (
        max(left, left + int(columns.min()) - margin),
        max(0, int(rows.min()) - margin),
        min(right, left + int(columns.max()) + 1 + margin),
        min(IMAGE_SIZE, int(rows.max()) + 1 + margin),
    )
