"""Captions for the procedural world, generated from factor labels.

A training caption draws its own mention rate uniformly from :data:`MENTION_RATE_RANGE` (mean
:data:`MENTION_PROBABILITY`) and mentions each factor independently at that rate, always with
the TRUE value, in varied wording and order; a fraction
:data:`EMPTY_PROBABILITY` of captions is empty so the model learns the null conditioning. Every
value of every factor has wording, absent values included ("no glasses", "clean shaven",
"plain fur"), so every value is promptable.

Examples::

    a cartoon face with short red hair and glasses and a smile on a blue background
    a smiling kitten with striped orange fur and green eyes
    a cat with large ears on the left next to a face without a mustache on the right on a pink background

:func:`describe` and :func:`caption_for_value` give short deterministic captions in the canonical
wording (first phrase of every value), for prompt baselines and conditioning checks.

The grammar uses lower-case ASCII words and single spaces only (no commas), so CLIP's tokenizer round-trips
every caption exactly (see :mod:`noiseclr.world.tokenizer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .factors import PART_DOMAINS, SCENE_PARTS, check_labels, domain_factors, get_factor

MENTION_PROBABILITY = 0.5
"""Chance that a training caption mentions a given factor (averaged over captions)."""
MENTION_RATE_RANGE = (0.0, 1.0)
"""Each caption's own mention rate is uniform in this range. One fixed rate of 0.5 made captions
that name one or two values -- the prompts people write, and what :func:`caption_for_value`
gives -- rare (a single mention among 9 face factors in 1.8% of captions); a uniform rate makes
them common (10%) and keeps every factor's average rate at 0.5."""
EMPTY_PROBABILITY = 0.1
"""Chance that a training caption is empty ("")."""
ADJECTIVE_PROBABILITY = 0.3
"""Chance that a mentioned value with an adjective form uses it ("a smiling face")."""
WITHOUT_PROBABILITY = 0.5
"""Chance that a mentioned absent value is said with "without" rather than "with no"."""
MAX_ADJECTIVES = 2


@dataclass(frozen=True)
class Wording:
    """How one factor value can be said. The first phrase is the canonical one."""

    phrases: tuple[str, ...]
    """Noun phrases for a "with ..." list ("glasses", "a big smile", "no lipstick")."""
    adjectives: tuple[str, ...] = ()
    """Words before the subject noun ("smiling", "bespectacled")."""
    modifiers: tuple[str, ...] = ()
    """For paired factors: the word inside a combined phrase ("red" in "short red hair")."""
    without: str = ""
    """For absent values: what follows "without" ("glasses" -> "without glasses")."""


W = Wording

FACE_WORDING: dict[str, dict[str, Wording]] = {
    "skin": {
        "light": W(("light skin", "pale skin", "fair skin")),
        "tan": W(("tan skin", "tanned skin")),
        "brown": W(("brown skin",)),
        "dark": W(("dark skin",)),
    },
    "hair_color": {
        "black": W(("black hair",), modifiers=("black",)),
        "blonde": W(("blonde hair", "golden hair"), modifiers=("blonde", "golden")),
        "red": W(("red hair", "ginger hair"), modifiers=("red", "ginger")),
        "blue": W(("blue hair",), modifiers=("blue",)),
        "white": W(("white hair", "silver hair"), modifiers=("white", "silver")),
    },
    "hair_style": {
        "short": W(("short hair",), modifiers=("short",)),
        "long": W(("long hair",), modifiers=("long",)),
        "curly": W(("curly hair",), modifiers=("curly",)),
    },
    "glasses": {
        "no": W(("no glasses",), without="glasses"),
        "yes": W(("glasses", "eyeglasses", "round glasses"), adjectives=("bespectacled",)),
    },
    "mustache": {
        "no": W(("no mustache",), adjectives=("clean shaven",), without="a mustache"),
        "yes": W(("a mustache", "a thick mustache"), adjectives=("mustached",)),
    },
    "mouth": {
        "smile": W(("a smile", "a big smile", "a smiling mouth"), adjectives=("smiling", "happy")),
        "neutral": W(("a neutral mouth", "a straight mouth", "a neutral expression"), adjectives=("serious",)),
        "frown": W(("a frown", "a frowning mouth"), adjectives=("frowning", "sad")),
    },
    "lipstick": {
        "no": W(("no lipstick", "natural lips"), without="lipstick"),
        "yes": W(("lipstick", "red lipstick", "red lips")),
    },
    "eye_color": {
        "blue": W(("blue eyes",)),
        "green": W(("green eyes",)),
        "brown": W(("brown eyes",)),
    },
}

CAT_WORDING: dict[str, dict[str, Wording]] = {
    "fur_color": {
        "orange": W(("orange fur",), adjectives=("orange",), modifiers=("orange",)),
        "gray": W(("gray fur", "grey fur"), adjectives=("gray", "grey"), modifiers=("gray", "grey")),
        "white": W(("white fur",), adjectives=("white",), modifiers=("white",)),
        "brown": W(("brown fur",), adjectives=("brown",), modifiers=("brown",)),
    },
    "stripes": {
        "no": W(("no stripes", "plain fur"), modifiers=("plain",), without="stripes"),
        "yes": W(("stripes", "striped fur", "tabby stripes"), adjectives=("striped", "tabby"), modifiers=("striped",)),
    },
    "eye_color": {
        "green": W(("green eyes",)),
        "yellow": W(("yellow eyes",)),
        "blue": W(("blue eyes",)),
    },
    "ear_size": {
        "small": W(("small ears", "little ears")),
        "large": W(("large ears", "big ears")),
    },
}

BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "blue": ("blue",),
    "green": ("green",),
    "purple": ("purple",),
    "pink": ("pink",),
}
BACKGROUND_TEMPLATES = ("on a {} background", "in front of a {} background", "against a {} background")
"""Background phrases; the first is canonical."""
BACKGROUND_EARLY_PROBABILITY = 0.2
"""Chance that a single object's background phrase follows its subject ("a cat on a pink
background with green eyes") rather than ending the caption."""

SUBJECTS: dict[str, tuple[str, ...]] = {
    "faces": ("cartoon face", "face", "cartoon portrait", "portrait"),
    "cats": ("cartoon cat", "cat", "kitten", "cartoon kitten"),
}
"""Subject nouns per object domain (without article); the first is canonical."""

PAIRS: dict[str, tuple[str, str, str, float]] = {
    "faces": ("hair_style", "hair_color", "hair", 1.0),
    "cats": ("stripes", "fur_color", "fur", 0.6),
}
"""Two factors said together (with this probability) when both are mentioned: "short red hair",
"striped orange fur". "short hair and red hair" is never said; "an orange cat with stripes" is."""

SIDES = {"left": "on the left", "right": "on the right"}
SCENE_JOINERS = (" next to ", " and ", " beside ")
"""How a scene's two noun phrases are joined; the first is canonical."""

WORDING: dict[str, dict[str, dict[str, Wording]]] = {"faces": FACE_WORDING, "cats": CAT_WORDING}


# ------------------------------------------------------------------------------------ choosers
class _Random:
    """Choices for training captions."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def coin(self, probability: float, canonical: bool = False) -> bool:
        return bool(self.rng.random() < probability)

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))] if len(options) > 1 else options[0]

    def shuffle(self, items: list) -> list:
        order = self.rng.permutation(len(items))
        return [items[int(i)] for i in order]


class _Canonical:
    """Deterministic choices: first wording, no optional variation, registry order."""

    def coin(self, probability: float, canonical: bool = False) -> bool:
        return canonical

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[0]

    def shuffle(self, items: list) -> list:
        return items


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _join(items: list[str], word: str) -> str:
    # No commas: CLIP's decoder writes "hair , glasses", which would break the exact round trip.
    return f" {word} ".join(items)


def _noun_phrase(domain: str, mentions: Mapping[str, str], choose, background: str = "") -> str:
    """``a <adjectives> <subject> [background] with <phrases> without <absent>`` for one object."""
    wording = WORDING[domain]
    adjectives: list[str] = []
    phrases: list[str] = []
    absent: list[str] = []
    pair_a, pair_b, pair_noun, pair_probability = PAIRS[domain]
    both = pair_a in mentions and pair_b in mentions
    paired = both and (pair_probability >= 1.0 or choose.coin(pair_probability, canonical=True))
    for name, value in mentions.items():
        if name == "background":
            continue
        word = wording[name][value]
        if paired and name in (pair_a, pair_b):
            continue
        if word.adjectives and len(adjectives) < MAX_ADJECTIVES and choose.coin(ADJECTIVE_PROBABILITY):
            adjectives.append(choose.pick(word.adjectives))
        elif word.without and choose.coin(WITHOUT_PROBABILITY):
            absent.append(word.without)
        else:
            options = word.phrases
            if both and name == pair_a:
                # Said apart from its partner: "with grey fur and stripes", not "... and plain fur".
                options = tuple(p for p in options if not p.endswith(" " + pair_noun)) or options
            phrases.append(choose.pick(options))
    if paired:
        first = wording[pair_a][mentions[pair_a]]
        second = wording[pair_b][mentions[pair_b]]
        phrases.append(f"{choose.pick(first.modifiers)} {choose.pick(second.modifiers)} {pair_noun}")
    text = _with_article(" ".join(choose.shuffle(adjectives) + [choose.pick(SUBJECTS[domain])]))
    if background:
        text += " " + background
    if phrases:
        text += " with " + _join(choose.shuffle(phrases), "and")
    if absent:
        text += " without " + _join(choose.shuffle(absent), "or")
    return text


def _background(value: str, choose) -> str:
    return choose.pick(BACKGROUND_TEMPLATES).format(choose.pick(BACKGROUND_WORDS[value]))


def _compose(domain: str, mentions: Mapping[str, str], choose) -> str:
    if domain == "scenes":
        parts = []
        left = None
        if "order" in mentions:
            left = "face" if mentions["order"] == "face_left" else "cat"
        for part in SCENE_PARTS:
            own = {name.split(".", 1)[1]: value for name, value in mentions.items() if name.startswith(part + ".")}
            phrase = _noun_phrase(PART_DOMAINS[part], own, choose)
            if left is not None:
                phrase += " " + SIDES["left" if part == left else "right"]
            parts.append((part, phrase))
        if left == "cat":
            parts.reverse()  # canonical form names the left object first
        text = choose.pick(SCENE_JOINERS).join(phrase for _, phrase in choose.shuffle(parts))
        if "background" in mentions:
            text += " " + _background(mentions["background"], choose)
        return text
    if "background" not in mentions:
        return _noun_phrase(domain, mentions, choose)
    background = _background(mentions["background"], choose)
    if choose.coin(BACKGROUND_EARLY_PROBABILITY):
        return _noun_phrase(domain, mentions, choose, background)
    return _noun_phrase(domain, mentions, choose) + " " + background


# ------------------------------------------------------------------------------------ API
def caption_with_mentions(
    domain: str, labels: Mapping[str, str], rng: np.random.Generator, mention_rate: float | None = None
) -> tuple[str, dict[str, str]]:
    """A training caption and the factor values it mentions (``{}`` for the empty caption).

    ``mention_rate`` fixes the chance of each mention; None draws it per caption from
    :data:`MENTION_RATE_RANGE`.
    """
    labels = check_labels(domain, labels)
    if rng.random() < EMPTY_PROBABILITY:
        return "", {}
    if mention_rate is None:
        low, high = MENTION_RATE_RANGE
        mention_rate = low + (high - low) * rng.random()
    chosen = rng.random(len(labels)) < mention_rate
    mentions = {name: value for (name, value), keep in zip(labels.items(), chosen) if keep}
    return _compose(domain, mentions, _Random(rng)), mentions


def caption(domain: str, labels: Mapping[str, str], rng: np.random.Generator, mention_rate: float | None = None) -> str:
    """A random training caption for an image with these labels; only true values are named."""
    return caption_with_mentions(domain, labels, rng, mention_rate)[0]


def paired_captions(
    domain: str, labels: Mapping[str, str], changed: str, value: str, rng: np.random.Generator
) -> tuple[str, str, dict[str, str]]:
    """Training captions for a counterfactual pair: ``labels`` and ``labels`` with ``changed`` set to
    ``value``. Both mention the same factors (drawn as in :func:`caption_with_mentions`, never
    empty, ``changed`` always among them) and make the same wording choices where they can, so
    the captions differ in the changed value's words. Returns both captions and the first's mentions.
    """
    labels = check_labels(domain, labels)
    other = check_labels(domain, {**labels, changed: value})
    low, high = MENTION_RATE_RANGE
    rate = low + (high - low) * rng.random()
    chosen = rng.random(len(labels)) < rate
    names = {name for name, keep in zip(labels, chosen) if keep} | {changed}
    words_seed = int(rng.integers(0, 2**63 - 1))
    first, second = (
        _compose(domain, {n: v for n, v in lab.items() if n in names}, _Random(np.random.default_rng(words_seed)))
        for lab in (labels, other)
    )
    return first, second, {n: v for n, v in labels.items() if n in names}


def describe(domain: str, mentions: Mapping[str, str]) -> str:
    """A deterministic caption that names exactly the given factor values, canonical wording.

    ``mentions`` may hold any subset of the domain's factors, e.g.
    ``describe("faces", {"glasses": "yes", "mouth": "smile"})`` ->
    ``"a cartoon face with glasses and a smile"``.
    """
    return _compose(domain, check_labels(domain, mentions, partial=True), _Canonical())


def caption_for_value(domain: str, factor: str, value: str) -> str:
    """A short deterministic caption naming one factor value ("a cartoon face with no glasses")."""
    get_factor(domain, factor).index(value)
    return describe(domain, {factor: value})


def grammar_fragments() -> Iterator[str]:
    """Every literal text fragment the grammar can emit (for building the tokenizer)."""
    for table in WORDING.values():
        for values in table.values():
            for word in values.values():
                yield from word.phrases
                yield from word.adjectives
                yield from word.modifiers
                if word.without:
                    yield word.without
    for words in BACKGROUND_WORDS.values():
        yield from words
    for template in BACKGROUND_TEMPLATES:
        yield template.replace("{}", " ")
    for subjects in SUBJECTS.values():
        yield from subjects
    for _, _, noun, _ in PAIRS.values():
        yield noun
    yield from SIDES.values()
    yield from SCENE_JOINERS
    yield "a an with without and or"


def _check_wording() -> None:
    # Every value of every factor can be said (caught at import, not mid-training).
    for domain, table in WORDING.items():
        for factor in domain_factors(domain):
            if factor.name == "background":
                missing = set(factor.values) - set(BACKGROUND_WORDS)
            else:
                missing = set(factor.values) ^ set(table.get(factor.name, {}))
            if missing:
                raise AssertionError(f"caption wording of {domain}.{factor.name} does not match its values: {missing}")
    for domain, (first, second, _, _) in PAIRS.items():
        for name in (first, second):
            if not all(word.modifiers for word in WORDING[domain][name].values()):
                raise AssertionError(f"paired factor {domain}.{name} needs modifiers for every value")


def _check_domains() -> None:
    for part, domain in PART_DOMAINS.items():
        if part not in SCENE_PARTS or domain not in WORDING:
            raise AssertionError(f"scene part {part} has no caption wording")


_check_wording()
_check_domains()
