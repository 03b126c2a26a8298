"""The model folders the base-model training reads and writes, beside the training itself.

An exported folder is a plain diffusers Stable Diffusion folder (:func:`standard_sd_layout`) with
its training record beside it (``<folder>.training.json``); a warm start may grow the architecture
(:func:`grow_into`); every training call appends what it did to ``work/runs.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_save_safetensors, atomic_write_json


def training_record_path(model_dir: str | Path) -> Path:
    """Where :meth:`BaseModelTrainer.export` writes the record of a model folder: beside it."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}.training.json"


def read_training_record(model_dir: str | Path) -> dict[str, Any]:
    path = training_record_path(model_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def standard_sd_layout(folder: str | Path) -> Path:
    """Make a saved pipeline folder read like a Stable Diffusion checkpoint for every loader.

    transformers 5 saves ``CLIPTextModel`` weights without the ``text_model.`` prefix that Stable
    Diffusion checkpoints (and transformers 4) use -- transformers 4 then loads a RANDOM text
    encoder with only a warning -- and records ``"dtype": "float16"`` in its config, which makes
    a plain ``StableDiffusionPipeline.from_pretrained`` load it in half precision beside a float32
    UNet. The weights stay fp16 on disk; the config says float32, as SD checkpoints' configs do.
    """
    from safetensors.torch import load_file

    encoder = Path(folder) / "text_encoder"
    weights = encoder / "model.safetensors"
    tensors = load_file(weights)
    if not all(name.startswith("text_model.") for name in tensors if name != "text_projection.weight"):
        renamed = {
            name if name.startswith(("text_model.", "text_projection.")) else f"text_model.{name}": value
            for name, value in tensors.items()
        }
        atomic_save_safetensors(weights, renamed, {"format": "pt"})
    config_path = encoder / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("dtype", None)
    config["torch_dtype"] = "float32"
    atomic_write_json(config_path, config)
    return Path(folder)


def grow_into(module: torch.nn.Module, trained: dict[str, torch.Tensor]) -> list[str]:
    """Load ``trained`` weights into a module that may have MORE blocks; returns the new tensors' names.

    Every trained tensor must fit (same name and shape): this grows an architecture, it does not
    reshape one. New attention blocks get a zero output projection, so each starts as the identity
    (its residual) and the grown UNet computes exactly what the trained one did.
    """
    own = module.state_dict()
    misfit = [k for k, v in trained.items() if k not in own or own[k].shape != v.shape]
    if misfit:
        raise RuntimeError(f"trained weights do not fit the new architecture: {misfit[:5]} ...")
    module.load_state_dict(trained, strict=False)
    grown = sorted(set(own) - set(trained))
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if name in grown and ".proj_out." in name:
                tensor.zero_()
    return grown


def write_training_record(work: Path, record: dict[str, Any]) -> None:
    """Append what a training call did (device, time, steps) to ``work/runs.json``."""
    path = work / "runs.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append(record)
    atomic_write_json(path, runs)


@torch.no_grad()
def sample_grid(model_dir: Path, out: Path, device: torch.device, steps: int = 30, guidance: float = 5.0) -> Path:
    """A few samples from fixed captions (one per domain and empty), for eyeballing progress."""
    from ..images import make_grid, save_image, tensor_to_pil
    from ..model import DiffusionModel

    model = DiffusionModel.load(model_dir, device=device, dtype="float32")
    prompts = [
        "",
        "a cartoon face with long red hair and glasses",
        "a cartoon face with a mustache and a smile on a blue background",
        "a cartoon cat with orange striped fur and blue eyes",
        "a cartoon cat with gray fur on a pink background",
        "a cartoon face and a cat on a green background",
    ]
    pipe = model.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = pipe(
        prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="pt"
    ).images
    grid = make_grid(
        [[tensor_to_pil(img * 2 - 1) for img in images]], column_labels=[p[:18] or "(empty)" for p in prompts]
    )
    return save_image(grid, out)
