"""Training state in safetensors: module weights, optimizer state and JSON metadata.

A checkpoint is one ``.safetensors`` file: tensors under prefixed names (``model.``,
``optimizer.state.<param>.<key>``) and a JSON ``state`` entry in the metadata (step, settings,
anything small). Writes are atomic, so a crash never corrupts the previous checkpoint, and
loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_save_safetensors, read_safetensors


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict]:
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
