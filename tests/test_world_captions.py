"""Caption grammar: mention rates, empty captions, wording coverage, and truthfulness.

Truthfulness is checked with an independent little parser (below) that reads factor values back
out of caption text, so a wrong wording table entry ("no glasses" listed under "yes") fails.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from noiseclr.errors import NoiseCLRError
from noiseclr.world import captions as C
from noiseclr.world import factors as F
from noiseclr.world.render import labels_for_seed

# ------------------------------------------------------------------------------------ parser
# Hand-written word -> value tables, independent of captions.py's tables.
COLOR_SYNONYMS = {"ginger": "red", "golden": "blonde", "silver": "white", "grey": "gray"}
SKIN = {
    "light": "light",
    "pale": "light",
    "fair": "light",
    "tan": "tan",
    "tanned": "tan",
    "brown": "brown",
    "dark": "dark",
}
MOUTH = {
    "smile": "smile",
    "smiling": "smile",
    "happy": "smile",
    "neutral": "neutral",
    "straight": "neutral",
    "serious": "neutral",
    "frown": "frown",
    "frowning": "frown",
    "sad": "frown",
}
SUBJECT = r"(?:cartoon )?(?:face|portrait|cat|kitten)"
BACKGROUND = re.compile(r" ?(?:on|in front of|against) a (\w+) background")


def _color(word: str) -> str:
    return COLOR_SYNONYMS.get(word, word)


def parse_object(text: str, domain: str) -> dict[str, str]:
    """Factor values named in one object's noun phrase (no background, no side)."""
    found: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        assert found.get(name, value) == value, f"{name} said twice differently in {text!r}"
        found[name] = value

    head, _, negated = text.partition(" without ")
    match = re.match(rf"an? ((?:[a-z]+ )*?){SUBJECT}\b", head)
    assert match, text
    adjectives = match.group(1).split()
    rest = head[match.end() :]
    for word in negated.split(" or ") if negated else []:
        put({"glasses": "glasses", "a mustache": "mustache", "lipstick": "lipstick", "stripes": "stripes"}[word], "no")
    if domain == "faces":
        adjective_text = " ".join(adjectives)
        for word in adjectives:
            if word in MOUTH:
                put("mouth", MOUTH[word])
        if "bespectacled" in adjectives:
            put("glasses", "yes")
        if "mustached" in adjectives:
            put("mustache", "yes")
        if "clean shaven" in adjective_text:
            put("mustache", "no")
        for style, color in re.findall(r"(?:(short|long|curly) )?(?:(\w+) )?hair\b", rest):
            if color and color not in ("short", "long", "curly"):
                put("hair_color", _color(color))
            if style:
                put("hair_style", style)
            if color in ("short", "long", "curly") and not style:
                put("hair_style", color)
        for word in re.findall(r"(\w+) skin\b", rest):
            put("skin", SKIN[word])
        for word in re.findall(r"(\w+) eyes\b", rest):
            put("eye_color", word)
        for word in re.findall(r"\b(smile|smiling mouth|frown|frowning mouth|neutral|straight)\b", rest):
            put("mouth", MOUTH[word.split()[0]])
        if re.search(r"\bno glasses\b", rest):
            put("glasses", "no")
        elif re.search(r"\bglasses\b|\beyeglasses\b", rest):
            put("glasses", "yes")
        if re.search(r"\bno mustache\b", rest):
            put("mustache", "no")
        elif re.search(r"\bmustache\b", rest):
            put("mustache", "yes")
        if re.search(r"\bno lipstick\b|\bnatural lips\b", rest):
            put("lipstick", "no")
        elif re.search(r"\blipstick\b|\bred lips\b", rest):
            put("lipstick", "yes")
    else:
        for word in adjectives:
            if word in ("striped", "tabby"):
                put("stripes", "yes")
            elif word != "cartoon":
                put("fur_color", _color(word))
        for words in re.findall(r"((?:\w+ )*?)fur\b", rest):
            for word in words.split()[-2:]:
                if word == "striped":
                    put("stripes", "yes")
                elif word == "plain":
                    put("stripes", "no")
                elif word not in ("and", "with"):
                    put("fur_color", _color(word))
        if re.search(r"\bno stripes\b", rest):
            put("stripes", "no")
        elif re.search(r"\bstripes\b", rest):
            put("stripes", "yes")
        for word in re.findall(r"(\w+) eyes\b", rest):
            put("eye_color", word)
        for word in re.findall(r"(small|little|large|big) ears\b", rest):
            put("ear_size", "small" if word in ("small", "little") else "large")
    return found


def parse(domain: str, text: str) -> dict[str, str]:
    """Factor values a caption names, in ``domain``'s factor names."""
    found: dict[str, str] = {}
    backgrounds = BACKGROUND.findall(text)
    assert len(backgrounds) <= 1, text
    if backgrounds:
        found["background"] = backgrounds[0]
    text = BACKGROUND.sub("", text)
    if domain != "scenes":
        found.update(parse_object(text, domain))
        return found
    adjectives = "|".join(
        sorted({a for t in C.WORDING.values() for v in t.values() for w in v.values() for a in w.adjectives})
    )
    split = re.split(
        rf" (?:next to|beside|and) (?=an? (?:(?:{adjectives}|cartoon) )*(?:face|portrait|cat|kitten)\b)", text
    )
    assert len(split) == 2, text
    sides = {}
    for phrase in split:
        side = re.search(r" on the (left|right)$", phrase)
        phrase = re.sub(r" on the (left|right)$", "", phrase)
        part = "face" if re.match(rf"an? (?:(?:{adjectives}) )*(?:cartoon )?(?:face|portrait)\b", phrase) else "cat"
        if side:
            sides[part] = side.group(1)
        for name, value in parse_object(phrase, F.PART_DOMAINS[part]).items():
            found[f"{part}.{name}"] = value
    assert len(sides) in (0, 2), text
    if sides:
        found["order"] = "face_left" if sides["face"] == "left" else "cat_left"
    return found


# ------------------------------------------------------------------------------------ tests
def sample(domain: str, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for index in range(count):
        labels = labels_for_seed(domain, index)
        text, mentions = C.caption_with_mentions(domain, labels, rng)
        yield labels, text, mentions


@pytest.mark.parametrize("domain", list(F.DOMAINS))
def test_captions_name_only_true_values(domain):
    for labels, text, mentions in sample(domain, 1500):
        assert text == text.strip() and "  " not in text and "," not in text
        assert mentions.items() <= labels.items()
        assert parse(domain, text) == mentions if text else mentions == {}, text


@pytest.mark.parametrize("domain", list(F.DOMAINS))
def test_mention_and_empty_rates(domain):
    count = 3000
    empty = 0
    mentioned = dict.fromkeys(F.factor_names(domain), 0)
    said_values: dict[str, set] = {name: set() for name in mentioned}
    for _, text, mentions in sample(domain, count, seed=1):
        empty += text == ""
        for name, value in mentions.items():
            mentioned[name] += 1
            said_values[name].add(value)
    assert abs(empty / count - C.EMPTY_PROBABILITY) < 0.02
    for name, times in mentioned.items():
        rate = times / (count - empty)
        assert abs(rate - C.MENTION_PROBABILITY) < 0.04, (name, rate)
        assert said_values[name] == set(F.get_factor(domain, name).values)  # every value gets said


def test_short_captions_are_common():
    # Prompts name one or two values; training must show such captions often (uniform mention rate).
    counts = [len(mentions) for _, text, mentions in sample("faces", 3000, seed=2) if text]
    single = sum(n == 1 for n in counts) / len(counts)
    expected = 9 * 1 / 90  # E[9 p (1-p)^8] for p ~ U(0, 1)
    assert abs(single - expected) < 0.025, single
    assert sum(n == len(F.factor_names("faces")) for n in counts) > 0  # and full descriptions too


def test_captions_are_varied():
    texts = [text for _, text, _ in sample("faces", 500)]
    # Captions naming three or more values are (almost) never repeated; short ones ("a cartoon
    # face with glasses") legitimately recur.
    long_texts = [text for _, text, mentions in sample("faces", 500) if len(mentions) >= 3]
    assert len(set(long_texts)) > 0.95 * len(long_texts) and len(long_texts) > 300
    assert any("without" in t for t in texts) and any(
        t.startswith("a smiling") or t.startswith("a happy") for t in texts
    )
    first_phrase = {t.split(" with ")[1].split(" and ")[0] for t in texts if " with " in t}
    assert len(first_phrase) > 20  # mention order is shuffled


def test_same_rng_same_caption():
    labels = labels_for_seed("scenes", 2)
    a = [C.caption("scenes", labels, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]


@pytest.mark.parametrize("domain", list(F.DOMAINS))
def test_caption_for_value_names_exactly_one_value(domain):
    seen = set()
    for factor in F.DOMAINS[domain]:
        for value in factor.values:
            text = C.caption_for_value(domain, factor.name, value)
            assert parse(domain, text) == {factor.name: value}, text
            assert text == C.caption_for_value(domain, factor.name, value)
            seen.add(text)
    assert len(seen) == sum(len(f.values) for f in F.DOMAINS[domain])


def test_describe_full_labels_is_canonical_and_complete():
    for domain in F.DOMAINS:
        labels = labels_for_seed(domain, 4)
        text = C.describe(domain, labels)
        assert parse(domain, text) == labels, text
    assert C.describe("faces", {"glasses": "yes", "mouth": "smile"}) == "a cartoon face with glasses and a smile"
    assert C.describe("cats", {}) == "a cartoon cat"


def test_wording_covers_every_value():
    for domain, table in C.WORDING.items():
        for factor in F.DOMAINS[domain]:
            if factor.name == "background":
                assert set(C.BACKGROUND_WORDS) == set(factor.values)
                continue
            assert set(table[factor.name]) == set(factor.values), (domain, factor.name)
            for value, wording in table[factor.name].items():
                assert wording.phrases, (domain, factor.name, value)


def test_caption_errors():
    with pytest.raises(NoiseCLRError, match="hat"):
        C.caption_for_value("faces", "hat", "yes")
    with pytest.raises(NoiseCLRError, match="maybe"):
        C.caption_for_value("faces", "glasses", "maybe")
    with pytest.raises(NoiseCLRError, match="lack"):
        C.caption("faces", {"glasses": "yes"}, np.random.default_rng(0))
