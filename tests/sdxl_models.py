"""Tiny random SDXL pipelines for the SDXL and export tests (imported by those test files).

Two text encoders of different widths (32 and 48; the second a CLIPTextModelWithProjection with a
40-wide projection), 16 positions, a ``text_time`` UNet, 96x96 images and 12x12x4 latents: no
size matches SD 1.x or SDXL, so nothing can silently assume them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from noiseclr.architecture import build_tiny_sdxl_pipeline
from noiseclr.model import DiffusionModel


def save_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    pipe = build_tiny_sdxl_pipeline(folder / "_tokenizers", seed=seed)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture()
def sdxl_model(tiny_sdxl_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_sdxl_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def sdxl64(tiny_sdxl_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_sdxl_dir, device="cpu", dtype="float64")
