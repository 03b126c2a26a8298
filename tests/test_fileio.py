"""Atomic writes: content lands whole, the user's file mode applies, failures leave nothing."""

from __future__ import annotations

import os
import stat

import pytest

from noiseclr.errors import NoiseCLRError
from noiseclr.fileio import atomic_write, atomic_write_text, ensure_output_dir


def test_atomic_write_text_and_mode(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    assert path.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_write_keeps_previous_file(tmp_path):
    target = atomic_write_text(tmp_path / "keep.txt", "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_ensure_output_dir_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NoiseCLRError, match="not a folder"):
        ensure_output_dir(blocker)
    with pytest.raises(NoiseCLRError, match="cannot write"):
        ensure_output_dir(blocker / "sub", flag="--out")


def test_read_safetensors_round_trip_and_damaged_file(tmp_path):
    import torch

    from noiseclr.checkpoint import load_checkpoint, save_checkpoint
    from noiseclr.fileio import read_safetensors

    path = save_checkpoint(tmp_path / "ok.safetensors", {"w": torch.arange(3.0)}, {"step": 7})
    tensors, state = load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.arange(3.0)) and state == {"step": 7}

    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(
        NoiseCLRError,
        match=r"^reader for cats: .*damaged\.safetensors: not a readable safetensors file \(.*\); re-train it\.$",
    ):
        read_safetensors(damaged, "re-train it.", what="reader for cats")
    with pytest.raises(
        NoiseCLRError, match="damaged.safetensors: not a readable safetensors file .*restart that training stage"
    ) as caught:
        load_checkpoint(damaged)
    assert "\n" not in str(caught.value)
