"""The procedural world's domains and factors: the one registry everything else reads.

The renderer, the caption grammar, the tokenizer, the factor readers and the benchmark all take
their factor names and value lists from :data:`DOMAINS`. Labels are plain ``dict[str, str]``
(factor name -> value name); :func:`encode_labels` turns them into one value index per factor,
in registry order, for classifiers.

Domains:

* ``faces``: cartoon portraits;
* ``cats``: cartoon cat heads;
* ``scenes``: a face and a cat side by side on one background. Its factors are ``order``, the
  shared ``background``, and every other face and cat factor with a ``face.`` / ``cat.`` prefix
  (``face.glasses``, ``cat.stripes``), so a scene's labels are one flat dict like the others.

Value order is part of the format (it fixes the encoded indices): append, never reorder. For
yes/no factors ``no`` comes first, so index 0 is always "absent".

Deviations from the issue's lists, where a value could not be drawn legibly:

* hair style ``bald`` is replaced by ``curly``: a bald head has no hair, so its hair colour would
  be invisible and one factor would hide another;
* hair colours are black/blonde/red/blue/white rather than including brown: brown hair has the
  hue and lightness of brown and dark skin, so the fringe would not read against the face.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import NoiseCLRError

YES_NO = ("no", "yes")


@dataclass(frozen=True)
class Factor:
    """One independent, labelled property of a rendered image."""

    name: str
    """Key in a labels dict (``hair_color``, ``face.glasses``)."""
    values: tuple[str, ...]
    """Value names; their order fixes the encoded indices."""
    description: str
    """A few words for reports and plots ("hair colour")."""

    def index(self, value: str) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            raise NoiseCLRError(
                f"factor {self.name}: unknown value {value!r}; use one of {', '.join(self.values)}."
            ) from None

    def prefixed(self, prefix: str) -> Factor:
        return Factor(f"{prefix}.{self.name}", self.values, f"{prefix} {self.description}")


BACKGROUND = Factor("background", ("blue", "green", "purple", "pink"), "background colour")
"""Shared by every domain so that one background can be edited across faces, cats and scenes."""

FACE_FACTORS: tuple[Factor, ...] = (
    Factor("skin", ("light", "tan", "brown", "dark"), "skin tone"),
    Factor("hair_color", ("black", "blonde", "red", "blue", "white"), "hair colour"),
    # "curly" replaces the "bald": bald would make hair colour invisible.
    Factor("hair_style", ("short", "long", "curly"), "hair style"),
    Factor("glasses", YES_NO, "glasses"),
    Factor("mustache", YES_NO, "mustache"),
    Factor("mouth", ("smile", "neutral", "frown"), "mouth"),
    Factor("lipstick", YES_NO, "lipstick"),
    Factor("eye_color", ("blue", "green", "brown"), "eye colour"),
    BACKGROUND,
)

CAT_FACTORS: tuple[Factor, ...] = (
    Factor("fur_color", ("orange", "gray", "white", "brown"), "fur colour"),
    Factor("stripes", YES_NO, "stripes"),
    Factor("eye_color", ("green", "yellow", "blue"), "eye colour"),
    Factor("ear_size", ("small", "large"), "ear size"),
    BACKGROUND,
)

SCENE_PARTS: tuple[str, ...] = ("face", "cat")
"""The objects of a scene; each is also the prefix of its factors' names."""

PART_DOMAINS: dict[str, str] = {"face": "faces", "cat": "cats"}
"""Scene part -> the domain whose factors (and renderer) it uses."""

SCENE_FACTORS: tuple[Factor, ...] = (
    Factor("order", ("face_left", "cat_left"), "which object is on the left"),
    BACKGROUND,
    *(factor.prefixed("face") for factor in FACE_FACTORS if factor is not BACKGROUND),
    *(factor.prefixed("cat") for factor in CAT_FACTORS if factor is not BACKGROUND),
)

DOMAINS: dict[str, tuple[Factor, ...]] = {
    "faces": FACE_FACTORS,
    "cats": CAT_FACTORS,
    "scenes": SCENE_FACTORS,
}
"""Domain name -> its factors, in a fixed order (the order of :func:`encode_labels`)."""

Labels = dict[str, str]


def domain_factors(domain: str) -> tuple[Factor, ...]:
    """The factors of ``domain``; a one-line error names the known domains."""
    try:
        return DOMAINS[domain]
    except KeyError:
        raise NoiseCLRError(f"domain {domain!r}: unknown; use one of {', '.join(DOMAINS)}.") from None


def factor_names(domain: str) -> list[str]:
    """Factor names of ``domain`` in registry order."""
    return [factor.name for factor in domain_factors(domain)]


def get_factor(domain: str, name: str) -> Factor:
    for factor in domain_factors(domain):
        if factor.name == name:
            return factor
    raise NoiseCLRError(f"domain {domain}: no factor {name!r}; use one of {', '.join(factor_names(domain))}.")


def num_values(domain: str) -> list[int]:
    """Number of values per factor, in registry order (a classifier's head sizes)."""
    return [len(factor.values) for factor in domain_factors(domain)]


def check_labels(domain: str, labels: Mapping[str, str], *, partial: bool = False) -> Labels:
    """Validate ``labels`` for ``domain`` and return them as a dict in registry order.

    With ``partial=True`` factors may be missing (they are then left out of the result);
    unknown factors and values are always errors.
    """
    factors = domain_factors(domain)
    known = {factor.name for factor in factors}
    unknown = [name for name in labels if name not in known]
    if unknown:
        raise NoiseCLRError(
            f"domain {domain}: unknown factor {unknown[0]!r}; use one of {', '.join(factor_names(domain))}."
        )
    checked: Labels = {}
    for factor in factors:
        if factor.name in labels:
            value = labels[factor.name]
            factor.index(value)
            checked[factor.name] = value
        elif not partial:
            raise NoiseCLRError(f"domain {domain}: labels lack factor {factor.name!r}; give a value for every factor.")
    return checked


def encode_labels(domain: str, labels: Mapping[str, str]) -> list[int]:
    """One value index per factor, in registry order."""
    checked = check_labels(domain, labels)
    return [factor.index(checked[factor.name]) for factor in domain_factors(domain)]


def decode_labels(domain: str, indices: Sequence[int]) -> Labels:
    """Inverse of :func:`encode_labels`."""
    factors = domain_factors(domain)
    if len(indices) != len(factors):
        raise NoiseCLRError(f"domain {domain}: got {len(indices)} label indices for {len(factors)} factors.")
    labels: Labels = {}
    for factor, index in zip(factors, indices):
        index = int(index)
        if not 0 <= index < len(factor.values):
            raise NoiseCLRError(f"factor {factor.name}: index {index} out of range 0..{len(factor.values) - 1}.")
        labels[factor.name] = factor.values[index]
    return labels


def scene_part_labels(labels: Mapping[str, str], part: str) -> Labels:
    """The labels of one scene object in its own domain's terms (prefix dropped, background kept).

    ``scene_part_labels(scene, "face")`` is a valid ``faces`` labels dict, so a face reader can
    read the face half of a scene.
    """
    if part not in SCENE_PARTS:
        raise NoiseCLRError(f"scene part {part!r}: unknown; use one of {', '.join(SCENE_PARTS)}.")
    domain = PART_DOMAINS[part]
    result = {}
    for factor in domain_factors(domain):
        key = factor.name if factor is BACKGROUND else f"{part}.{factor.name}"
        result[factor.name] = labels[key]
    return result


def scene_labels(face: Mapping[str, str], cat: Mapping[str, str], order: str = "face_left") -> Labels:
    """Join a face's and a cat's labels into scene labels; the face's background is used."""
    flat = {"order": order, "background": face["background"]}
    for part, part_labels in (("face", face), ("cat", cat)):
        for name, value in part_labels.items():
            if name != BACKGROUND.name:
                flat[f"{part}.{name}"] = value
    return check_labels("scenes", flat)


def left_part(labels: Mapping[str, str]) -> str:
    """``"face"`` or ``"cat"``: which object a scene shows on the left."""
    return "face" if labels["order"] == "face_left" else "cat"
