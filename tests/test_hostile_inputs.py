"""Hostile and broken input, as a table: every case ends in one line that names the file or flag
and says what to do (exit 2), never a traceback, and nothing in a hostile file ever runs."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from noiseclr.cli import main
from noiseclr.directions import Directions
from noiseclr.errors import NoiseCLRError
from noiseclr.model import DiffusionModel


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("noiseclr: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def good(tiny_model, tmp_path) -> Directions:
    rows = tiny_model.scale_to_token_norms(
        torch.randn(3, tiny_model.token_width, generator=torch.Generator().manual_seed(0))
    )
    directions = Directions.for_model(
        tiny_model,
        rows,
        names=["a", "b", "c"],
        domain="faces",
        edit_defaults=[{"strength": 3.0, "start": 0.0, "end": 1.0}] * 3,
        calibration={"response": [0.01, 0.02, 0.03], "duplicates": []},
    )
    directions.save(tmp_path / "good.safetensors")
    return directions


def with_metadata(good: Directions, path: Path, **changes: str | None) -> Path:
    meta = good.metadata()
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file({"directions": good.vectors}, str(path), metadata=meta)
    return path


METADATA_CASES = {
    # field: (stored string, what the one line must name)
    "edit default not a number": ("edit_defaults", json.dumps([{"strength": "big"}] * 3), "edit_defaults[0].strength"),
    "edit default not an object": ("edit_defaults", json.dumps(["big"] * 3), "edit_defaults[0]"),
    "edit defaults too few": ("edit_defaults", json.dumps([{"scale": 2}]), "edit_defaults"),
    "edit window inverted": (
        "edit_defaults",
        json.dumps([{"scale": 2, "start": 0.9, "end": 0.1}] * 3),
        "edit_defaults[0].start",
    ),
    "edit inversion unknown": (
        "edit_defaults",
        json.dumps([{"scale": 2, "inversion": "magic"}] * 3),
        "edit_defaults[0].inversion",
    ),
    "calibration a string": ("calibration", json.dumps("fast"), "calibration"),
    "calibration a list": ("calibration", json.dumps([1, 2, 3]), "calibration"),
    "calibration response strings": ("calibration", json.dumps({"response": ["a", "b", "c"]}), "calibration.response"),
    "calibration duplicates bad": (
        "calibration",
        json.dumps({"response": [1, 1, 1], "duplicates": [[0, 9, 0.9]]}),
        "calibration.duplicates",
    ),
    "settings a string": ("settings", json.dumps("lr=1"), "settings"),
    "settings a list": ("settings", json.dumps([1]), "settings"),
    "settings not JSON": ("settings", "{lr: 1", "settings"),
    "format version not a number": ("format_version", "abc", "format_version"),
    "names a number": ("names", "7", "names"),
    "names too few": ("names", json.dumps(["a"]), "names"),
    "token widths bad": ("token_widths", json.dumps(["x"]), "token_widths"),
    "model kind unknown": ("model_kind", "sd9", "model_kind"),
    "fingerprint a list": ("fingerprint", "[]", "fingerprint"),
    "max length negative": ("max_length", "-3", "max_length"),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_hostile_metadata_is_one_line_naming_the_field(case, good, tmp_path, capsys):
    key, value, named = METADATA_CASES[case]
    path = with_metadata(good, tmp_path / "bad.safetensors", **{key: value})
    with pytest.raises(NoiseCLRError, match=re.escape(f"metadata field '{named}'")):
        Directions.load(path)
    for command in ("info", "export"):
        line = one_line_error(capsys, command, path, *(["--out", tmp_path / "x"] if command == "export" else []))
        assert str(path) in line and named in line and "expected" in line


def test_hostile_metadata_stops_edit_before_the_model_loads(good, tmp_path, capsys):
    path = with_metadata(good, tmp_path / "bad.safetensors", edit_defaults=json.dumps([{"strength": "big"}] * 3))
    image = tmp_path / "img.png"
    Image.new("RGB", (32, 32)).save(image)
    line = one_line_error(
        capsys,
        "edit",
        "--model",
        tmp_path / "no-such-model",
        "--image",
        image,
        "--direction",
        f"{path}:0",
        "--out",
        tmp_path / "out",
    )
    assert "edit_defaults[0].strength" in line


def test_zero_directions(good, tmp_path, capsys):
    path = tmp_path / "empty.safetensors"
    save_file({"directions": torch.zeros(0, good.width)}, str(path), metadata={**good.metadata(), "count": "0"})
    for argv in (["info", path], ["export", path, "--out", tmp_path / "x"]):
        assert "holds no directions" in one_line_error(capsys, *argv)
    assert not (tmp_path / "x").exists()


def test_a_pickled_directions_file_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "learned_embeds.bin"
    torch.save({"<tok>": Payload()}, path)
    line = one_line_error(capsys, "info", path)
    assert "only plain tensor files" in line and "If you trust its source" in line and ".safetensors" in line
    assert "Re-running" not in line  # not torch's own advice, cut mid-sentence
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["pickle", "random", "truncated"])
def test_a_model_folder_with_broken_or_unsafe_weights(damage, tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = folder / "text_encoder" / "model.safetensors"
    marker = tmp_path / "ran"
    if damage == "pickle":

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        weights.unlink()
        weights = folder / "text_encoder" / "pytorch_model.bin"
        torch.save({"text_model.embeddings.token_embedding.weight": Payload()}, weights)
    elif damage == "random":
        weights.write_bytes(os.urandom(4096))
    else:
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(NoiseCLRError) as caught:
        DiffusionModel.load(folder, device="cpu", dtype="float32")
    message = str(caught.value)
    assert "\n" not in message and str(weights) in message and "re-save" in message
    assert not marker.exists()


def test_a_folder_of_looping_links_is_not_called_empty(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "loop.png").symlink_to(folder / "loop.png")
    line = one_line_error(
        capsys, "discover", "--images", folder, "--out", tmp_path / "run", "--model", tmp_path / "none"
    )
    assert "broken/looping link" in line and "empty" not in line


def test_info_on_a_folder_says_it_is_a_folder(good, tmp_path, capsys):
    line = one_line_error(capsys, "info", tmp_path)
    assert "is a folder" in line and "good.safetensors" in line


def _png_declaring(path: Path, width: int, height: int) -> Path:
    # A valid PNG header that declares a huge canvas; the pixel data is never reached.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_refused_from_its_header(good, tmp_path):
    bomb = _png_declaring(tmp_path / "bomb.png", 35_000, 35_000)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "noiseclr.cli",
            "edit",
            "--image",
            str(bomb),
            "--direction",
            f"{tmp_path / 'good.safetensors'}:0",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "35000x35000" in run.stderr and "--max-megapixels" in run.stderr
    assert max(peak_kb, before) < 1.5 * 1024 * 1024  # KiB: well under 1.5 GB


def test_the_size_limit_has_a_flag(tmp_path, capsys, good):
    image = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(image)
    line = one_line_error(
        capsys,
        "edit",
        "--image",
        image,
        "--direction",
        f"{tmp_path / 'good.safetensors'}:0",
        "--out",
        tmp_path / "out",
        "--max-megapixels",
        "0.001",
    )
    assert "100x100" in line and "0.001 MP limit" in line
    assert "must be a positive number" in one_line_error(
        capsys,
        "edit",
        "--image",
        image,
        "--direction",
        f"{tmp_path / 'good.safetensors'}:0",
        "--out",
        tmp_path / "o",
        "--max-megapixels",
        "0",
    )
