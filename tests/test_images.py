"""Reading user images: the header-only checks run before a model loads, and tiny images warn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from noiseclr.errors import NoiseCLRError
from noiseclr.images import (
    check_image_files,
    check_image_folder,
    image_fingerprint,
    load_image_files,
    load_image_folder,
)


def save(path, size=(64, 64), seed=0):
    array = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def test_tiny_images_load_with_a_warning_that_names_them(tmp_path, caplog):
    tiny = save(tmp_path / "tiny.png", (1, 1))
    fine = save(tmp_path / "fine.png", (64, 80))
    save(tmp_path / "small.png", (15, 40))
    edge = save(tmp_path / "edge.png", (16, 16))  # exactly a quarter of 64: no warning
    images = load_image_files([tiny, fine], 64)
    assert images.pixels.shape == (2, 3, 64, 64)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "tiny.png (1x1)" in warnings[0] and "fine.png" not in warnings[0]
    assert "--image" in warnings[0] and "64 px" in warnings[0] and "at least 16 px" in warnings[0]
    caplog.clear()
    load_image_folder(tmp_path, 64)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 image(s)" in warnings[0]
    assert "tiny.png" in warnings[0] and "small.png (15x40)" in warnings[0]
    assert "edge.png" not in warnings[0] and "fine.png" not in warnings[0] and str(tmp_path) in warnings[0]
    caplog.clear()
    load_image_files([fine, edge], 64)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_header_checks_need_no_model(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    save(folder / "a.png")
    save(folder / "b.jpg", seed=1)
    (folder / "notes.txt").write_text("not an image")
    assert check_image_folder(folder, min_count=2) == 2
    with pytest.raises(
        NoiseCLRError, match=r"--images .*imgs: only 2 usable image\(s\) \(skipped 1\), need at least 3"
    ):
        check_image_folder(folder, min_count=3)
    with pytest.raises(NoiseCLRError, match="no such folder"):
        check_image_folder(tmp_path / "nowhere")
    check_image_files([folder / "a.png", folder / "b.jpg"])
    with pytest.raises(NoiseCLRError, match=r"--image .*imgs: is a folder; pass image files"):
        check_image_files([folder])
    with pytest.raises(NoiseCLRError, match=r"--image .*notes.txt: cannot read it as an image"):
        check_image_files([folder / "notes.txt"])
    with pytest.raises(NoiseCLRError, match="is a folder"):
        load_image_files([folder], 64)


def test_image_fingerprint_is_of_the_set_and_of_the_order():
    # Pixels as images load: 8-bit levels mapped to [-1, 1].
    pixels = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    same = image_fingerprint(pixels)
    assert image_fingerprint(pixels + 1e-3) == same  # float noise below half an 8-bit level does not count
    shuffled = image_fingerprint(pixels[[2, 0, 3, 1]])
    assert shuffled["sha256"] == same["sha256"] and shuffled["order_sha256"] != same["order_sha256"]
    other = pixels.clone()
    other[1, 0, 0, 0] = -other[1, 0, 0, 0]
    assert image_fingerprint(other)["sha256"] != same["sha256"]


def test_a_long_grid_title_wraps_inside_the_image():
    from PIL import Image, ImageDraw

    from noiseclr.images import _font, make_grid, wrap_text

    title = "faces.safetensors 1: background (+pink -blue) 3% (x1.21); faces.safetensors 5: eye_color +green 3% (x39.8)"
    grid = make_grid(
        [[Image.new("RGB", (64, 64))] * 3], column_labels=["input", "reconstruction", "edited"], title=title
    )
    font = _font(max(10, min(16, 64 // 6)))
    lines = wrap_text(title, font, grid.width - 8)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    assert len(lines) > 1 and " ".join(lines) == title
    assert all(measure(line, font=font) <= grid.width - 8 for line in lines)
