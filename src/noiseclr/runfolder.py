"""The run folder of :func:`noiseclr.discovery.discover` and its checkpoint and resume policy.

What is written where, which checkpoints rotation may delete, and when a run may be resumed or
reused are specified in ``docs/discovery.md``; the training loop only calls these.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import DiscoveryCheckpoint, checkpoint_dir, is_readable_checkpoint, latest_checkpoint, list_checkpoints
from .directions import Directions
from .discovery_settings import DiscoverySettings, changed_trajectory
from .errors import NoiseCLRError
from .fileio import atomic_write_text, check_output_dir
from .images import image_fingerprint
from .model import fingerprints_match
from .options import flag

if TYPE_CHECKING:
    import torch

    from .model import DiffusionModel

log = logging.getLogger("noiseclr")


# ------------------------------------------------------------------ before the run
def check_run_folder(run_dir: Path, resume: bool) -> None:
    """Refuse an ``--out`` that cannot hold the run, or that holds one and ``resume`` is off."""
    check_output_dir(run_dir, "--out")
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise NoiseCLRError(
            f"--out {run_dir}: already holds a discovery run (checkpoint {existing[-1][1].name}); "
            "pass --resume to continue it or pick another folder."
        )


def resume_point(run_dir: Path, resume: bool) -> tuple[DiscoveryCheckpoint | None, list[tuple[Path, str]]]:
    """The checkpoint to resume from (None: a new run) and the unreadable checkpoints newer than it."""
    checkpoint, unreadable = latest_checkpoint(run_dir) if resume else (None, [])
    if checkpoint is None and unreadable:
        refuse_unreadable(run_dir, unreadable)
    return checkpoint, unreadable


def refuse_unreadable(run_dir: Path, unreadable: list[tuple[Path, str]]) -> None:
    """--resume with no readable checkpoint: stop rather than silently start over (and later rotate
    the user's files away)."""
    folder = checkpoint_dir(run_dir)
    names = ", ".join(path.name for path, _ in unreadable)
    newer = any("newer noiseclr" in problem for _, problem in unreadable)
    raise NoiseCLRError(
        f"--resume: no checkpoint in {folder} can be read ({names}: {unreadable[0][1]}); "
        + ("upgrade noiseclr to resume the run, or " if newer else "")
        + f"move those files out of {folder} to start the run over, or pick another --out folder."
    )


def set_aside(unreadable: list[tuple[Path, str]]) -> None:
    """Rename unreadable checkpoints newer than the resumed one, which the resumed run would
    overwrite when it reaches their step: they are kept, never deleted."""
    for path, problem in unreadable:
        kept = path.with_name(path.name + ".unreadable")
        suffix = 1
        while kept.exists():
            kept, suffix = path.with_name(f"{path.name}.unreadable-{suffix}"), suffix + 1
        path.replace(kept)
        log.warning("kept the unreadable checkpoint %s as %s (%s)", path, kept.name, problem)


def check_resume(
    ckpt: DiscoveryCheckpoint,
    model: DiffusionModel,
    settings: DiscoverySettings,
    num_images: int,
    global_batch: int,
    images: dict[str, str] | None = None,
    image_source: str = "",
) -> None:
    where = ckpt.path
    count = int(ckpt.directions.shape[0])
    if count != settings.num_directions:
        raise NoiseCLRError(
            f"{where}: the run has {count} directions but {flag(DiscoverySettings, 'num_directions')} is {settings.num_directions}; "
            f"pass {flag(DiscoverySettings, 'num_directions')} {count} to resume it, or pick another --out folder."
        )
    made_with = ckpt.meta.get("model", "another model")
    fingerprint = json.loads(ckpt.meta.get("fingerprint") or "{}")
    if int(ckpt.directions.shape[1]) != model.token_width or not fingerprints_match(fingerprint, model.fingerprint()):
        raise NoiseCLRError(
            f"{where}: the run was made with model {made_with}, not {model.name}; "
            f"resume with --model {made_with} or pick another --out folder."
        )
    used = int(ckpt.meta.get("num_images", "-1"))
    if used != num_images:
        raise NoiseCLRError(
            f"{where}: the run used {used} images but --images now has {num_images}; "
            "resume with the same images or pick another --out folder."
        )
    changed = []
    if images is not None:
        recorded = ckpt.meta.get("images_sha256")
        if recorded is None:
            log.info("%s predates image fingerprints; cannot check that --images holds the same images", where)
        elif recorded != images["sha256"]:
            named = f"--images {image_source}" if image_source not in ("", "tensor") else "--images"
            run = where.parent.parent if where is not None else "this folder"
            raise NoiseCLRError(
                f"{named}: not the images the run in {run} was trained on (same count, different pixels); "
                "resume with those images or pick another --out folder."
            )
        elif ckpt.meta.get("images_order_sha256") != images["order_sha256"]:
            changed.append("image order")
    before = DiscoverySettings.from_json(json.loads(ckpt.meta.get("settings") or "{}"))
    changed += changed_trajectory(before, settings)
    if int(ckpt.meta.get("global_batch", global_batch)) != global_batch:
        changed.append("batch size x processes")
    if changed:
        log.warning(
            "resuming %s with changed settings (%s); the run will not match an uninterrupted one",
            where,
            ", ".join(changed),
        )


def run_settings(run: str | Path) -> DiscoverySettings | None:
    """The settings a run folder was made with (None if it holds no run)."""
    path = Path(run) / "settings.json"
    try:
        return DiscoverySettings.from_json(json.loads(path.read_text())["settings"])
    except (OSError, KeyError, json.JSONDecodeError, TypeError):
        return None


def finished_run(run: str | Path, settings: DiscoverySettings, images: torch.Tensor | None = None) -> Directions | None:
    """The directions of a finished run in ``run`` if it ran exactly ``settings.steps`` steps with
    ``settings.num_directions`` directions (and, given ``images`` [M, 3, S, S], on those images);
    None otherwise (then :func:`discover` with ``resume`` continues or extends it, or refuses it)."""
    run = Path(run)
    summary, path = run / "summary.json", run / "directions.safetensors"
    if not (summary.is_file() and path.is_file()):
        return None
    try:
        done = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if int(done.get("steps", -1)) != settings.steps or int(done.get("num_directions", -1)) != settings.num_directions:
        return None
    before = run_settings(run)
    if before is None or changed_trajectory(before, settings):
        return None
    if images is not None and done.get("images_sha256") not in (None, image_fingerprint(images)["sha256"]):
        return None
    log.info("reusing the finished discovery run %s", run)
    return Directions.load(path)


# ------------------------------------------------------------------ during the run
def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}.safetensors"


def rotate(run_dir: Path, keep: int, removable: set[Path], kept_unreadable: set[Path]) -> None:
    """Delete all but the latest ``keep`` checkpoints, but only files this run wrote or could
    read (``removable``): a checkpoint that cannot be read may still be someone's only copy of a run."""
    for _, old in list_checkpoints(run_dir)[:-keep]:
        if old in removable or (old not in kept_unreadable and is_readable_checkpoint(old)):
            old.unlink(missing_ok=True)
            removable.discard(old)
        elif old not in kept_unreadable:
            kept_unreadable.add(old)
            log.warning("kept the unreadable checkpoint %s (rotation deletes only checkpoints it can read)", old)


def write_logs(run_dir: Path, loss_log: list[dict[str, float]], response_log: list[dict[str, Any]]) -> None:
    """RUN/loss.csv and RUN/responses.csv, rewritten whole."""
    atomic_write_text(run_dir / "loss.csv", loss_csv(loss_log))
    atomic_write_text(run_dir / "responses.csv", responses_csv(response_log))


def loss_csv(rows: list[dict[str, float]]) -> str:
    out = io.StringIO()
    # reseeded: how many directions --reseed-duplicates restarted at that step (blank: no check ran)
    columns = [
        "step",
        "loss",
        "seconds",
        "delta_abs_cos",
        "vector_abs_cos",
        "response_mean",
        "response_min",
        "reseeded",
    ]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in columns if k in row})
    return out.getvalue()


def responses_csv(rows: list[dict[str, Any]]) -> str:
    """step, direction, response (last time drawn), conditioning_change: one row per direction and log step."""
    out = io.StringIO()
    out.write("step,direction,response,conditioning_change\n")
    for row in rows:
        for k, (response, change) in enumerate(zip(row["response"], row["conditioning_change"])):
            out.write(f"{row['step']},{k},{response:.6g},{change:.6g}\n")
    return out.getvalue()
