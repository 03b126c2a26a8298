"""Reuse a finished discovery run, or discover: the one way the benchmark and the demo get directions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint import list_checkpoints
from .directions import Directions
from .discovery import DiscoverySettings, changed_trajectory, discover, finished_run, run_settings
from .errors import NoiseCLRError
from .model import DiffusionModel


def discover_or_reuse(
    model: DiffusionModel,
    pixels: torch.Tensor,
    run: Path,
    settings: DiscoverySettings,
    *,
    resume: bool | None,
    progress: bool = True,
    on_discover: Callable[[], None] | None = None,
) -> Directions:
    """The directions of the discovery run ``run`` with ``settings`` on ``pixels``.

    ``resume=True``: reuse a finished run, else continue its checkpoints (:func:`discover` with
    ``resume``); ``False``: always discover afresh. ``None`` (the demo): reuse a finished run,
    refuse one made with other settings (one-line error naming ``--out``), continue one that has
    checkpoints, start one that has none. ``on_discover`` is called just before discovering.
    """
    if resume is not False:
        done = finished_run(run, settings, pixels)
        if done is not None:
            return done
    if resume is None:
        before = run_settings(run)
        changed = changed_trajectory(before, settings) if before is not None else []
        if changed:
            raise NoiseCLRError(
                f"--out {run.parent}: its discovery run was made with other settings ({', '.join(changed)}); "
                "pick another --out folder or delete that one to start over."
            )
        # Resume only a run that exists (discover's own test for one): a first run says nothing about resuming.
        resume = bool(list_checkpoints(run))
    if on_discover is not None:
        on_discover()
    return discover(model, pixels, run, settings, resume=resume, progress=progress).directions
