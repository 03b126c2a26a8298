"""Atomic file writes, safetensors reads and output-folder checks.

Every file noiseclr writes goes through here: data is written to a temporary file in the same
folder and moved into place with :func:`os.replace`, so an interrupted run never leaves a
half-written directions file or checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import NoiseCLRError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the user's usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> Path:
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=dict(metadata or {})))


def read_safetensors(path: str | os.PathLike, fix: str, what: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a damaged or foreign file is a one-line
    :class:`NoiseCLRError` naming ``what`` (e.g. ``reader for faces``), the path and ``fix``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        prefix = f"{what}: " if what else ""
        raise NoiseCLRError(f"{prefix}{path}: not a readable safetensors file ({exc}); {fix}") from None
    return tensors, metadata


class UnsafePickleError(NoiseCLRError):
    """A ``.bin``/``.pt`` file whose pickle asks for Python objects: refused, never executed."""


def read_tensor_file(path: str | os.PathLike) -> Any:
    """A ``.bin``/``.pt`` file read with ``torch.load(weights_only=True)``: plain tensors and
    containers only. A pickle that asks for Python objects is :class:`UnsafePickleError` (with how
    to convert a trusted file); anything else unreadable is a one-line :class:`NoiseCLRError`."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the Python object a pickle asked for ("unsupported GLOBAL ..."); anything else
        # it could not unpickle is simply not a tensor file.
        if "global" in str(exc).lower():
            raise UnsafePickleError(
                f"{path}: refused: it holds Python objects besides tensors, and noiseclr loads only plain tensor files "
                "(unpickling can run code). If you trust its source, convert it to safetensors once: "
                f'python -c "import torch; from safetensors.torch import save_file; '
                f"save_file({{k: v.contiguous() for k, v in torch.load('{path}', weights_only=False).items()}}, "
                f"'{path.with_suffix('.safetensors')}')\""
            ) from None
        raise NoiseCLRError(
            f"{path}: not a readable tensor file (not a torch.save file); check the path or re-export it."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, TypeError):
        raise NoiseCLRError(
            f"{path}: not a readable tensor file (damaged or of another type); check the path or re-export it."
        ) from None


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """What :func:`ensure_output_dir` checks, creating nothing: commands call it before their
    inputs are validated and create the folder only when there is something to write, so a
    failed command leaves no empty folder behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoiseCLRError(f"{flag} {path}: exists and is not a folder; pass a folder path.")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NoiseCLRError(f"{flag} {path}: cannot write there ({existing} is a file); choose a writable folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NoiseCLRError(
            f"{flag} {path}: cannot write there (permission denied on {existing}); choose a writable folder."
        )
    return path


def ensure_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``path`` if needed and check that it is a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoiseCLRError(f"{flag} {path}: exists and is not a folder; pass a folder path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".noiseclr-write-test", delete=True)
        probe.close()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise NoiseCLRError(f"{flag} {path}: cannot write there ({reason}); choose a writable folder.") from None
    return path
