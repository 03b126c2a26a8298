"""Every method's directions judged against the run's own random directions (:mod:`noiseclr.chance`).

Calibrated random token embeddings change skin or background on most images, so "main change >=
0.25" alone counts 12 to 16 of 20 random directions as effective. The bench's ``random`` method is
the reference a direction must beat: the same count, the same calibrated strength grid, the same
selection on the validation images and the same held-out images as every other method. So, once it
has run, a direction is **effective** when its main change is >= 0.25 *and* it beats random
(:func:`noiseclr.chance.judge`: above random's 95th percentile on some factor by more than random's
own leave-one-out margins reach). The random directions are judged leave-one-out, against the
other R - 1, so about 1 in 20 of them passes by construction: that is the test's false-positive rate.

A pure pass over ``results`` (no compute, no files): recomputed whenever the results are saved, so
resumed runs and runs whose methods finish in any order agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..chance import RandomReference, judge, leave_one_out_margins
from ..metrics import EFFECTIVE_CHANGE, summarize_changes

REFERENCE_METHOD = "random"


def change_table(result: Mapping[str, Any], factor_names: Sequence[str]) -> torch.Tensor:
    """[K, F] float64: the held-out change table of one method's result (its directions' ``changes``)."""
    rows = [
        [float((record.get("changes") or {}).get(name, 0.0)) for name in factor_names]
        for record in result["directions"]
    ]
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(factor_names))


def reference_of(results: Mapping[str, Any]) -> RandomReference | None:
    """The run's random reference (its ``random`` method's held-out table), or None without one."""
    random = (results.get("methods") or {}).get(REFERENCE_METHOD)
    factor_names = results.get("factors")
    if not random or not factor_names or len(random.get("directions") or []) < 2:
        return None
    heldout = (results.get("baseline") or {}).get("heldout", {}).get("images", 0)
    return RandomReference(change_table(random, factor_names), tuple(factor_names), 0.0, int(heldout or 0))


def verdicts(changes: torch.Tensor, reference: RandomReference, *, leave_one_out: bool) -> list[dict[str, Any]]:
    """:func:`noiseclr.chance.judge` rows for ``changes``; ``leave_one_out`` for the reference's own
    rows (each against the other R - 1, else every random direction would sit inside its own 95th)."""
    rows = judge(changes, reference)
    if leave_one_out:
        own = leave_one_out_margins(reference.changes)
        tau = reference.threshold()
        for row, margin in zip(rows, own):
            row["margin"] = round(float(margin), 4)
            row["beats_random"] = bool(float(margin) > tau + 1e-12)
            row["leave_one_out"] = True
    return rows


def apply_random_reference(results: dict[str, Any]) -> None:
    """Judge every method of ``results`` against its random method, in place: each direction record
    gets ``random`` (its verdict) and ``effective`` (main change >= 0.25 and beats random); each
    summary is recomputed over those effective directions and gets ``beats_random``,
    ``acting_directions`` (main change >= 0.25 alone, the earlier "effective") and
    ``random_reference``. Without a random method nothing changes."""
    reference = reference_of(results)
    if reference is None:
        return
    factor_names = results["factors"]
    tau = reference.threshold()
    for name, result in (results.get("methods") or {}).items():
        if not result.get("directions"):
            continue
        changes = change_table(result, factor_names)
        rows = verdicts(changes, reference, leave_one_out=name == REFERENCE_METHOD)
        acting = changes.max(dim=1).values >= EFFECTIVE_CHANGE - 1e-9
        beats = torch.tensor([bool(row["beats_random"]) for row in rows], dtype=torch.bool)
        effective = acting & beats
        for record, row, is_effective in zip(result["directions"], rows, effective.tolist()):
            record["random"] = row
            record["effective"] = bool(is_effective)
        summary = result.setdefault("summary", {})
        summary.update(summarize_changes(changes, factor_names, effective=effective))
        summary["acting_directions"] = int(acting.sum())
        summary["beats_random"] = int(beats.sum())
        summary["random_reference"] = {
            "method": REFERENCE_METHOD,
            "count": reference.count,
            "threshold": round(tau, 4),
            "percentiles": {f: round(float(q), 4) for f, q in zip(factor_names, reference.percentiles())},
        }
