"""The base model's CLIP tokenizer learned from the caption grammar."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from noiseclr.architecture import BOS, EOS, bytes_to_unicode, load_clip_tokenizer
from noiseclr.errors import NoiseCLRError
from noiseclr.world import tokenizer as T
from noiseclr.world.captions import caption, describe
from noiseclr.world.factors import DOMAINS
from noiseclr.world.render import labels_for_seed


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return T.build_world_tokenizer(tmp_path_factory.mktemp("world-tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_clip_tokenizer(tokenizer_dir)


def captions(domain: str, count: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    return [caption(domain, labels_for_seed(domain, 50_000 + i), rng) for i in range(count)]


def test_clip_layout(tokenizer_dir, tokenizer):
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    symbols = list(bytes_to_unicode().values())
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:256] == symbols and by_id[256:512] == [s + "</w>" for s in symbols]
    assert by_id[-2:] == [BOS, EOS] and sorted(vocab.values()) == list(range(len(vocab)))
    assert merges[0].startswith("#version") and len(vocab) == 512 + len(merges) - 1 + 2
    assert len(tokenizer) == len(vocab) < T.VOCAB_CAP
    assert tokenizer.model_max_length == T.MAX_LENGTH
    assert tokenizer.bos_token == BOS and tokenizer.eos_token == EOS


def test_every_grammar_word_is_one_token(tokenizer):
    words = T.grammar_words()
    assert {"glasses", "mustache", "background", "kitten", "left", "without"} <= set(words)
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == [word + "</w>"], word


def test_captions_use_only_grammar_words():
    words = set(T.grammar_words())
    for domain in DOMAINS:
        for text in captions(domain, 500):
            assert set(T.clip_words(text)) <= words, text


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_round_trip_one_token_per_word(tokenizer, domain):
    texts = captions(domain, 300) + [describe(domain, labels_for_seed(domain, 1)), ""]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert len(ids) == len(text.split()) + 2
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_words_outside_the_grammar_still_encode(tokenizer):
    text = "a zebra with 3 hats!"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a zebra with 3 hats !"


def test_max_length_truncates_few_captions(tokenizer):
    for domain in DOMAINS:
        lengths = T.token_lengths(tokenizer, captions(domain, 2000, seed=4))
        assert np.mean(lengths > T.MAX_LENGTH) < 0.005, domain
        full = [describe(domain, labels_for_seed(domain, i)) for i in range(50)]
        assert T.token_lengths(tokenizer, full).max() <= T.MAX_LENGTH


def _folder_digest(folder) -> str:
    digest = hashlib.sha256()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def test_files_are_deterministic(tokenizer_dir, tmp_path):
    assert _folder_digest(T.build_world_tokenizer(tmp_path / "again")) == _folder_digest(tokenizer_dir)
    code = (
        "import sys, pathlib; from noiseclr.world.tokenizer import build_world_tokenizer;"
        "build_world_tokenizer(pathlib.Path(sys.argv[1]))"
    )
    other = tmp_path / "other-process"
    subprocess.run([sys.executable, "-c", code, str(other)], check=True, env={"PYTHONHASHSEED": "99", "PATH": ""})
    assert _folder_digest(other) == _folder_digest(tokenizer_dir)


def test_learn_bpe_merges_small_example():
    merges = T.learn_bpe_merges({"low": 5, "lower": 2, "newest": 6, "widest": 3}, required=["zz"])
    assert merges[0] == ("e", "s")  # 'es' and 'st</w>' both occur 9 times; ties go to the smaller pair
    symbols = {left + right for left, right in merges}
    for word in ("low", "lower", "newest", "widest", "zz"):
        assert word + "</w>" in symbols, word


def test_bad_max_length():
    with pytest.raises(NoiseCLRError, match="max_length"):
        T.build_world_tokenizer("/nonexistent-never-written", max_length=2)


def test_the_shipped_tokenizer_rebuilds_byte_for_byte(tmp_path):
    # Its merges depend on caption statistics; those are pinned (one fixed mention rate) so that
    # changes to the training captions' distribution never silently change the vocabulary.
    from noiseclr.model import embedded_model_path
    from noiseclr.world.tokenizer import build_world_tokenizer

    built = build_world_tokenizer(tmp_path / "tok")
    for name in ("vocab.json", "merges.txt"):
        assert (built / name).read_bytes() == (embedded_model_path() / "tokenizer" / name).read_bytes(), name
