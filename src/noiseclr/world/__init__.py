"""The procedural world the embedded base model is trained on: images with known factors.

* :mod:`.factors`: the registry of domains (``faces``, ``cats``, ``scenes``) and their factors;
* :mod:`.render`: the deterministic 128x128 renderer;
* :mod:`.captions`: captions generated from labels;
* :mod:`.tokenizer`: the base model's CLIP BPE tokenizer, learned from the caption grammar.

``noiseclr.world.render`` is the renderer module (its function is ``render.render``); the
package re-exports everything else, e.g. ``render_many``, ``render_array`` and ``layout``.
"""

from __future__ import annotations

from .captions import caption, caption_for_value, caption_with_mentions, describe
from .factors import (
    DOMAINS,
    SCENE_PARTS,
    Factor,
    Labels,
    check_labels,
    decode_labels,
    domain_factors,
    encode_labels,
    factor_names,
    get_factor,
    num_values,
    scene_labels,
    scene_part_labels,
)
from .render import (
    IMAGE_SIZE,
    Jitter,
    jitter_for_seed,
    labels_for_seed,
    layout,
    object_box,
    render_array,
    render_cat,
    render_face,
    render_many,
    render_scene,
    sample_labels,
)
from .tokenizer import MAX_LENGTH, build_world_tokenizer, grammar_words

__all__ = [
    "DOMAINS",
    "IMAGE_SIZE",
    "MAX_LENGTH",
    "SCENE_PARTS",
    "Factor",
    "Jitter",
    "Labels",
    "build_world_tokenizer",
    "caption",
    "caption_for_value",
    "caption_with_mentions",
    "check_labels",
    "decode_labels",
    "describe",
    "domain_factors",
    "encode_labels",
    "factor_names",
    "get_factor",
    "grammar_words",
    "jitter_for_seed",
    "labels_for_seed",
    "num_values",
    "layout",
    "object_box",
    "render_array",
    "render_cat",
    "render_face",
    "render_many",
    "render_scene",
    "sample_labels",
    "scene_labels",
    "scene_part_labels",
]
