"""Training state in safetensors: module weights, optimizer state and JSON metadata.

A checkpoint is one ``.safetensors`` file: tensors under prefixed names (``model.``,
``optimizer.state.<param>.<key>``) and a JSON ``state`` entry in the metadata (step, settings,
anything small). Writes are atomic, so a crash never corrupts the previous checkpoint, and
loading never unpickles anything.

Two users: the base-model trainer (:func:`save_checkpoint` / :func:`load_checkpoint`) and
discovery runs (:class:`DiscoveryCheckpoint`, one file per kept step in ``RUN/checkpoints/``).
Both store optimizer state with :func:`optimizer_tensors`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import NoiseCLRError
from .fileio import atomic_save_safetensors, read_safetensors

log = logging.getLogger("noiseclr")


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict, prefix: str = "optimizer"
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            param_id, key = name[len(head) :].split(".", 1)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, values in info.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write tensors plus a JSON ``state`` dict atomically."""
    return atomic_save_safetensors(path, tensors, {"state": json.dumps(state)})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, metadata = read_safetensors(path, "delete it to restart that training stage.")
    return tensors, json.loads(metadata.get("state", "{}"))


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    # clone(): safetensors refuses tensors that share storage (tied weights).
    return {f"{prefix}.{name}": value.detach().clone() for name, value in module.state_dict().items()}


def load_module_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    head = f"{prefix}."
    module.load_state_dict({name[len(head) :]: value for name, value in tensors.items() if name.startswith(head)})


# ------------------------------------------------------------------- discovery checkpoints
DISCOVERY_FORMAT = "noiseclr.discovery-checkpoint"
DISCOVERY_VERSION = 2
"""2: optimizer state as :func:`optimizer_tensors` writes it. 1 (still read): ``adam.step``,
``adam.exp_avg``, ``adam.exp_avg_sq``."""
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of a discovery run's checkpoints, oldest first (temp files are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_FILE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


@dataclass
class DiscoveryCheckpoint:
    """The complete state of a discovery run after ``step`` optimizer steps.

    Tensors: ``directions`` [K, W] float32, the optimizer's state (``optimizer.state.0.*``) and
    ``rng.<stream>`` (uint8 generator states). String metadata: ``format``, ``format_version``,
    ``step``, ``seconds``, ``loss_log`` and ``optimizer`` (JSON), plus ``meta`` (model,
    fingerprint, image count, settings, ...).
    """

    step: int
    directions: torch.Tensor
    optimizer: dict[str, torch.Tensor]
    """The optimizer's state tensors, named as :func:`optimizer_tensors` names them."""
    optimizer_info: dict[str, Any]
    """Its JSON-able rest (``param_groups``, ``scalars``)."""
    rng: dict[str, torch.Tensor]
    seconds: float
    loss_log: list[dict[str, float]]
    meta: dict[str, Any]
    path: Path | None = None

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer, **fields: Any) -> DiscoveryCheckpoint:
        tensors, info = optimizer_tensors(optimizer)
        return cls(optimizer=tensors, optimizer_info=info, **fields)

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved state into ``optimizer``, keeping ITS param groups (a changed --lr applies)."""
        info = {
            "param_groups": optimizer.state_dict()["param_groups"],
            "scalars": self.optimizer_info.get("scalars", {}),
        }
        load_optimizer_tensors(optimizer, self.optimizer, info)

    def optimizer_state(self, param: int = 0) -> dict[str, torch.Tensor]:
        """The saved state of one parameter (AdamW: ``step``, ``exp_avg``, ``exp_avg_sq``)."""
        head = f"optimizer.state.{param}."
        return {name[len(head) :]: value for name, value in self.optimizer.items() if name.startswith(head)}

    def save(self, path: Path) -> Path:
        tensors = {"directions": self.directions.detach().float().cpu()}
        tensors.update({name: value.detach().cpu() for name, value in self.optimizer.items()})
        tensors.update({f"rng.{k}": v for k, v in self.rng.items()})
        metadata = {
            "format": DISCOVERY_FORMAT,
            "format_version": str(DISCOVERY_VERSION),
            "step": str(self.step),
            "seconds": repr(float(self.seconds)),
            "loss_log": json.dumps(self.loss_log),
            "optimizer": json.dumps(self.optimizer_info),
        }
        metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in self.meta.items()})
        try:
            return atomic_save_safetensors(path, tensors, metadata)
        except OSError as exc:
            reason = exc.strerror or exc
            raise NoiseCLRError(
                f"{path}: cannot write the checkpoint ({reason}); free space or pick another --out."
            ) from None

    @classmethod
    def load(cls, path: Path) -> DiscoveryCheckpoint:
        tensors, meta = read_safetensors(path, "delete it to fall back to an older checkpoint.")
        if meta.get("format") != DISCOVERY_FORMAT:
            raise NoiseCLRError(f"{path}: not a noiseclr discovery checkpoint; remove it from the checkpoints folder.")
        version = int(meta.get("format_version", "0"))
        if version > DISCOVERY_VERSION:
            raise NoiseCLRError(f"{path}: written by a newer noiseclr; upgrade noiseclr to resume this run.")
        try:
            if version < 2:  # adam.step [1], adam.exp_avg, adam.exp_avg_sq of the one parameter
                optimizer = {f"optimizer.state.0.{k[5:]}": v for k, v in tensors.items() if k.startswith("adam.")}
                if "optimizer.state.0.step" in optimizer:
                    optimizer["optimizer.state.0.step"] = optimizer["optimizer.state.0.step"].reshape(()).float()
                info: dict[str, Any] = {}
            else:
                optimizer = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
                info = json.loads(meta.pop("optimizer"))
            return cls(
                step=int(meta.pop("step")),
                directions=tensors["directions"],
                optimizer=optimizer,
                optimizer_info=info,
                rng={k[4:]: v for k, v in tensors.items() if k.startswith("rng.")},
                seconds=float(meta.pop("seconds")),
                loss_log=json.loads(meta.pop("loss_log")),
                meta=meta,
                path=path,
            )
        except (KeyError, ValueError) as exc:
            raise NoiseCLRError(
                f"{path}: damaged checkpoint ({exc}); delete it to fall back to an older one."
            ) from None


def latest_checkpoint(run_dir: Path) -> tuple[DiscoveryCheckpoint | None, list[tuple[Path, str]]]:
    """The newest readable checkpoint of the run, and ``(path, problem)`` of each newer one that
    could not be read (all of them when the first is None), newest first."""
    unreadable: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return DiscoveryCheckpoint.load(path), unreadable
        except NoiseCLRError as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
            unreadable.append((path, _problem(path, str(exc))))
    return None, unreadable


def is_readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` loads as a discovery checkpoint (rotation deletes nothing else)."""
    try:
        DiscoveryCheckpoint.load(path)
    except NoiseCLRError:
        return False
    return True


def _problem(path: Path, message: str) -> str:
    # "<path>: <problem>; <what to do>" -> "<problem>": the caller says what to do.
    head = f"{path}: "
    text = message[len(head) :] if message.startswith(head) else message
    return text.split("; ")[0]
