"""The base model's CLIP tokenizer, learned from the caption grammar.

The files are ordinary CLIP byte-level BPE files (``vocab.json`` + ``merges.txt``: 256 byte
symbols, the same with ``</w>``, the learned merges, then ``<|startoftext|>`` and
``<|endoftext|>``), written by :func:`noiseclr.architecture.write_clip_tokenizer` and read by
``CLIPTokenizer.from_pretrained`` like any Stable Diffusion tokenizer.

:func:`write_clip_tokenizer` writes that format for any merge list (the test suite's tiny models
use it with no merges at all); :func:`build_world_tokenizer` writes the world's.

Merges are learned with plain BPE from the word frequencies of a large sample of generated
captions (CLIP's lower-casing and word split; every word ends with ``</w>``) until every word the
grammar can produce is one token, so a caption costs one token per word. Words outside the
grammar still encode, as smaller pieces down to single bytes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import NoiseCLRError
from .captions import MENTION_PROBABILITY, caption, grammar_fragments
from .factors import DOMAINS
from .render import labels_for_seed

MAX_LENGTH = 56
"""Token sequence length (BOS and EOS included) of the base model's text encoder.

Measured with :func:`truncation_rates` (20 000 training captions per domain, seed 1): the longest
face caption has 34 tokens, cat 23, scene 52; at 48, 0.075% of scene captions would be cut, at 56
none (0 of 100 000 scene captions; the longest of those had 53). 56 also fits :func:`describe` of
every factor of a scene (at most 53 tokens), so canonical full descriptions are never cut.
"""
VOCAB_CAP = 4096
"""Safety cap on the vocabulary size; the grammar needs far fewer merges."""
SAMPLE_CAPTIONS = 4000
"""Captions per domain whose word counts drive the merge order."""
SAMPLE_SEED = 0

END_OF_WORD = "</w>"
# CLIP's word split (its regex restricted to what the grammar can contain: ASCII letters,
# digits and punctuation), after lower-casing and collapsing whitespace.
_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


# ------------------------------------------------------------------- CLIP's BPE file format
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def clip_vocab(merges: list[tuple[str, str]] = ()) -> dict[str, int]:
    """CLIP's vocabulary layout: 256 byte symbols, the same with ``</w>``, merged symbols, specials."""
    symbols = list(bytes_to_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def write_clip_tokenizer(folder: str | Path, merges: list[tuple[str, str]] = (), max_length: int = 77) -> Path:
    """Write CLIP BPE tokenizer files (vocab.json, merges.txt, configs) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = clip_vocab(list(merges))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2),
        encoding="utf-8",
    )
    return folder


def clip_words(text: str) -> list[str]:
    """Split text into words the way CLIP's tokenizer does for lower-case ASCII text."""
    return _WORD.findall(" ".join(text.lower().split()))


def grammar_words() -> list[str]:
    """Every word the caption grammar can produce, sorted."""
    return sorted({word for fragment in grammar_fragments() for word in clip_words(fragment)})


def sample_captions(count_per_domain: int = SAMPLE_CAPTIONS, seed: int = SAMPLE_SEED) -> list[str]:
    """Training captions of every domain, deterministic in ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    captions = []
    for domain in DOMAINS:
        for index in range(count_per_domain):
            # One fixed mention rate, as when the shipped tokenizer was learned, so it rebuilds
            # byte for byte whatever the training captions' rate distribution is.
            captions.append(caption(domain, labels_for_seed(domain, index), rng, mention_rate=MENTION_PROBABILITY))
    return captions


def word_counts(captions: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for text in captions:
        counts.update(clip_words(text))
    return counts


def learn_bpe_merges(
    counts: Mapping[str, int], required: Iterable[str] = (), max_vocab: int = VOCAB_CAP
) -> list[tuple[str, str]]:
    """Byte-level BPE merges, most frequent pair first, until every word is one symbol.

    ``required`` words count at least once, so they end as single tokens even if the sample
    missed them. Ties go to the lexicographically smallest pair (deterministic). Stops early
    when the vocabulary (bytes, bytes with ``</w>``, merges, two specials) reaches ``max_vocab``.
    """
    byte_symbol = bytes_to_unicode()
    frequency: Counter = Counter({word: count for word, count in counts.items() if count > 0})
    for word in required:
        frequency[word] = max(frequency[word], 1)
    # Each word as a list of byte symbols, the last one marked as the end of the word.
    words: list[tuple[list[str], int]] = []
    for word, count in sorted(frequency.items()):
        symbols = [byte_symbol[b] for b in word.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        words.append((symbols, count))

    merges: list[tuple[str, str]] = []
    max_merges = max_vocab - 2 * 256 - 2
    while len(merges) < max_merges:
        pairs: Counter = Counter()
        for symbols, count in words:
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best_count = max(pairs.values())
        best = min(pair for pair, count in pairs.items() if count == best_count)
        merged = best[0] + best[1]
        for symbols, _ in words:
            i = 0
            while i < len(symbols) - 1:
                if symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    symbols[i : i + 2] = [merged]
                i += 1
        merges.append(best)
    return merges


def world_merges(count_per_domain: int = SAMPLE_CAPTIONS, seed: int = SAMPLE_SEED) -> list[tuple[str, str]]:
    """The merges of the base model's tokenizer."""
    return learn_bpe_merges(word_counts(sample_captions(count_per_domain, seed)), required=grammar_words())


def build_world_tokenizer(folder: str | Path, max_length: int = MAX_LENGTH) -> Path:
    """Write the base model's tokenizer files to ``folder`` (deterministic bytes)."""
    if max_length < 3:
        raise NoiseCLRError(f"max_length {max_length}: too short; use at least 3 (BOS, one token, EOS).")
    return write_clip_tokenizer(folder, world_merges(), max_length)


def token_lengths(tokenizer, captions: Iterable[str]) -> np.ndarray:
    """Number of tokens of each caption, BOS and EOS included, without truncation."""
    return np.array([len(ids) for ids in tokenizer(list(captions), truncation=False)["input_ids"]])


def truncation_rates(
    tokenizer, max_length: int = MAX_LENGTH, count_per_domain: int = 20000, seed: int = 1
) -> dict[str, float]:
    """Fraction of training captions per domain longer than ``max_length`` tokens."""
    rates = {}
    for domain in DOMAINS:
        rng = np.random.Generator(np.random.PCG64(seed))
        captions = [caption(domain, labels_for_seed(domain, 10**6 + i), rng) for i in range(count_per_domain)]
        rates[domain] = float(np.mean(token_lengths(tokenizer, captions) > max_length))
    return rates
