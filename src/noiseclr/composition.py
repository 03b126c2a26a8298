"""Separate objects, separate trajectories: how an edit's localized terms are put together.

An edit's terms normally share ONE denoising trajectory. With regions, each term only steers
inside its own region, yet the terms still meet: the UNet's attention and convolutions see the
whole latent, so a cat's eye-colour term, confined to the cat's box, still shifts what the model
draws on the face next to it (measured on 12 scenes with three face+cat pairs: each direction
alone in its box never changed the other object, the pairs changed it on 19% of the scenes;
``benchmarks/quality.md``). For terms that belong to different objects
the remedy is to keep them apart: each runs on its own trajectory (blended onto the
reconstruction outside its region, as any localized edit is), and the edit is the
reconstruction plus the sum of their changes::

    x = x_recon + sum_i (x_i - x_recon)

Inside one term's region, away from the others, the latents are exactly the term's edit alone.
Decoding that composite would not keep the pixels so: the VAE decoder's mid-block attention
carries a neighbour's latent change across the image (up to 0.38 in [-1, 1] on the scenes,
``scripts/box_interference_probe.py``). So wherever pixels are made (:func:`~noiseclr.editing.render_edits`,
:func:`~noiseclr.editing.edit`, :func:`~noiseclr.generation.generate`) the same sum is taken in
pixel space, over each part decoded alone: a box's pixels are then the term's edit alone, up
to the little its own decoded change reaches beyond its box. Where regions overlap the changes
add, which is first-order what a joint trajectory does.

``compose``: ``"joint"`` (one trajectory, the plain kernel), ``"separate"`` (every edit whose
terms all have regions, 2 or more different ones), ``"auto"`` (the default: separate when every
term has a box, ``#box=`` or ``#auto+box=``, since a box is a user pointing at an object;
``#auto`` and mask regions stay joint). Terms on the same region are one object and share their
trajectory. The separate trajectories ride in the same batch: still one UNet call per step, with
one trajectory per region instead of one per edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import NoiseCLRError
from .options import option
from .regions import Region
from .terms import EditTerm

COMPOSE_MODES = ("auto", "joint", "separate")
"""How an edit's localized terms are put together (module docstring)."""


def compose_option() -> Any:
    """The ``compose`` settings field with its ``--compose`` flag, one declaration for every
    settings class that edits (:class:`~noiseclr.editing.EditSettings`, generation, the bench)."""
    return option(
        "auto",
        flag="--compose",
        help="how localized terms combine: auto (terms that all have #box/#auto+box regions each run on their own "
        "trajectory and their changes are added, so one object's edit does not steer another's), joint (one "
        "trajectory), separate (every all-localized edit)",
        choices=list(COMPOSE_MODES),
    )


def check_compose(compose: str, flag: str = "--compose") -> str:
    if compose not in COMPOSE_MODES:
        raise NoiseCLRError(f"{flag} {compose!r}: pick one of {', '.join(COMPOSE_MODES)} (auto is the default).")
    return compose


def _has_box(term: EditTerm) -> bool:
    return isinstance(term.region, Region) and term.region.boxes is not None


def separates(terms: Sequence[EditTerm], compose: str) -> bool:
    """Whether this edit's terms run on separate trajectories (one per region)."""
    if check_compose(compose) == "joint" or len(by_region(terms)) < 2:
        return False
    if compose == "separate":
        return all(isinstance(term.region, Region) for term in terms)
    return all(_has_box(term) for term in terms)


def by_region(terms: Sequence[EditTerm]) -> list[list[EditTerm]]:
    """The terms grouped by region, in order of first appearance: terms on the same box (or mask)
    are one object and share a trajectory, e.g. one direction split into two windows."""
    groups: list[list[EditTerm]] = []
    for term in terms:
        for group in groups:
            first = group[0].region
            # A bare #auto region is each term's own (found from its own noise difference): never shared.
            fixed = isinstance(first, Region) and (first.kind != "auto" or first.boxes is not None)
            if fixed and isinstance(term.region, Region) and first.same_as(term.region):
                group.append(term)
                break
        else:
            groups.append([term])
    return groups


def split_edits(edits: Sequence[Sequence[EditTerm]], compose: str) -> tuple[list[list[EditTerm]], list[list[int]]]:
    """The edits to run and, per requested edit, the indices of its parts among them: a separated
    edit becomes one edit per region (:func:`by_region`), any other edit stays whole."""
    expanded: list[list[EditTerm]] = []
    parts: list[list[int]] = []
    for terms in edits:
        pieces = by_region(terms) if separates(terms, compose) else [list(terms)]
        parts.append(list(range(len(expanded), len(expanded) + len(pieces))))
        expanded.extend(pieces)
    return expanded, parts


def with_reference(expanded: Sequence[Sequence[EditTerm]]) -> tuple[list[list[EditTerm]], int]:
    """The runs for :func:`split_edits`' parts and the index of the reconstruction among them: an
    edit with no terms already there, else one appended."""
    runs = [list(terms) for terms in expanded]
    for index, terms in enumerate(runs):
        if not terms:
            return runs, index
    return [*runs, []], len(runs)


def composite(values: torch.Tensor, parts: Sequence[Sequence[int]], reference: int) -> torch.Tensor:
    """[E, ...] from the parts' values [E', ...] (latents, or pixels each part decoded alone):
    ``x_ref + sum_i (x_i - x_ref)`` per edit, where ``reference`` indexes the reconstruction among
    the E' (a whole edit is just its one part)."""
    recon = values[reference]
    rows = []
    for indices in parts:
        if len(indices) == 1:
            rows.append(values[indices[0]])
        else:
            rows.append(recon + sum(values[i] - recon for i in indices))
    return torch.stack(rows)


def union_of_parts(maps: torch.Tensor, parts: Sequence[Sequence[int]]) -> torch.Tensor:
    """[E, ...]: where each composited edit may differ from the reconstruction, the union (max) of
    its parts' maps [E', ...]."""
    return torch.stack([maps[list(indices)].amax(dim=0) for indices in parts])
