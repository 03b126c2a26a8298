"""Every render-seed range of the project, in one place.

A render is a pure function of its seed (:func:`noiseclr.world.render.labels_for_seed`), so the
seed ranges are what keeps training, validation and evaluation images apart:

=============================  ==============================  ===================================
range                          seeds                           used by
=============================  ==============================  ===================================
reader training                700 000 000 + i  (i < 50 M)     ``scripts/train_readers.py``
reader validation              750 000 000 + i                 reader training's validation
evaluation                     900 000 000 + i  (i < 100 M)    readers' accuracy, the model card,
                                                               the probe, the benchmark, the demo
base-model training            1 000 000 000 and above         ``scripts/train_basemodel.py``
=============================  ==============================  ===================================

Inside the evaluation range every consumer has its own offset (:data:`EVAL_OFFSETS`), so no two
measurements share images.
"""

from __future__ import annotations

READER_TRAIN_SEED_BASE = 700_000_000
"""Reader training renders use seeds ``READER_TRAIN_SEED_BASE + i`` (i < 50 M)."""
READER_VAL_SEED_BASE = 750_000_000
"""Validation renders during reader training use seeds ``READER_VAL_SEED_BASE + i``."""
EVAL_SEED_BASE = 900_000_000
"""Fresh evaluation renders (never seen by a reader or the base model): ``EVAL_SEED_BASE + i``."""
BASE_MODEL_SEED_BASE = 1_000_000_000
"""Base-model training renders use seeds at and above this."""

EVAL_OFFSETS: dict[str, int] = {
    # The readers' own accuracy (eval_renders' default start) and the model card.
    "readers": 0,
    "vae": 100_000,
    "inversion": 200_000,
    "domain": 300_000,
    "probe": 400_000,
    # The benchmark and the demo: one sub-range per role, shifted by SEED_STRIDE per --seed.
    "heldout": 0,
    "validation": 10_000_000,
    "discovery": 20_000_000,
    "demo-train": 30_000_000,
    "demo-test": 35_000_000,
    "scenes": 40_000_000,
}
"""Offsets into the evaluation range. The benchmark's held-out set and the readers' accuracy both
start at 0: both only evaluate, neither trains on what it sees."""
BENCH_ROLES = ("heldout", "validation", "discovery", "demo-train", "demo-test", "scenes")
"""The roles of :func:`noiseclr.measure.seeds_for` (each shifted by ``SEED_STRIDE * seed``)."""
SEED_STRIDE = 1_000_000
"""The benchmark's ``--seed`` moves every role's images by this many seeds (repeats use fresh images)."""
