"""Shared fixtures: tiny random Stable-Diffusion-layout pipelines saved to local folders.

No test downloads anything: pipelines are built from configs (``noiseclr.architecture``), saved
with ``save_pretrained`` and loaded back through the same ``from_pretrained`` path real models use.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch starts its thread pool
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Random references (noiseclr.chance) are cached; tests never read or write the user's cache.
os.environ["NOISECLR_CACHE"] = tempfile.mkdtemp(prefix="noiseclr-test-cache-")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The test models are tiny: one thread is as fast as two, and on a busy machine a second
# spin-waiting OpenMP thread made runs 10-100x slower.
torch.set_num_threads(1)

from noiseclr.architecture import build_pipeline, load_clip_tokenizer, tiny_spec, write_clip_tokenizer  # noqa: E402
from noiseclr.model import DiffusionModel, float64_text_encoder_supported  # noqa: E402

FLOAT64_FIXTURES = {"model64", "sdxl64"}


def pytest_collection_modifyitems(config, items):
    # transformers 4 cannot run CLIP in float64 (noiseclr.model.float64_text_encoder_supported):
    # the float64 reference checks then skip, e.g. in CI's oldest-dependencies run.
    if float64_text_encoder_supported():
        return
    skip = pytest.mark.skip(reason="float64 CLIP text encoder needs transformers >= 5")
    for item in items:
        if item.get_closest_marker("float64") or FLOAT64_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


TINY_VARIANTS = {
    # epsilon prediction, text width 32, 16 positions
    "eps": dict(text_width=32, max_length=16, prediction_type="epsilon"),
    # v-prediction (SD 2.x style), text width 24, 12 positions
    "v": dict(text_width=24, max_length=12, prediction_type="v_prediction"),
}


def save_tiny_pipeline(folder: Path, variant: str = "eps", seed: int = 0) -> Path:
    spec = tiny_spec(**TINY_VARIANTS[variant])
    tokenizer = load_clip_tokenizer(write_clip_tokenizer(folder / "_tokenizer_src", max_length=spec.max_length))
    pipe = build_pipeline(spec, tokenizer, seed=seed)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-eps"), "eps")


@pytest.fixture(scope="session")
def tiny_v_model_dir(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-v"), "v", seed=1)


@pytest.fixture()
def tiny_model(tiny_model_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture()
def tiny_v_model(tiny_v_model_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_v_model_dir, device="cpu", dtype="float32")


@pytest.fixture(params=["eps", "v"])
def any_tiny_model(request, tiny_model_dir, tiny_v_model_dir) -> DiffusionModel:
    folder = tiny_model_dir if request.param == "eps" else tiny_v_model_dir
    return DiffusionModel.load(folder, device="cpu", dtype="float32")
