"""The models, inputs and single steps that benchmarks/speed.py times and benchmarks/speed_flops.py
counts: random-weight pipelines of each architecture, one micro-batch's inputs as the trainer has
them, and one step with backward through the fast path and through the published procedure. They
live apart from speed.py so that the FLOP analysis can use them without importing the script."""

from __future__ import annotations

import contextlib
import tempfile
from typing import Any

import torch

from published import reference_micro_batch_loss

ARCHS = ("sd15", "base", "tiny")


def build_pipeline_for(arch: str, seed: int = 0, build_device: str | None = None) -> Any:
    """A randomly initialised ``StableDiffusionPipeline`` of ``arch`` (float32, on the CPU or ``build_device``)."""
    from noiseclr.architecture import build_pipeline, load_clip_tokenizer, sd15_spec, tiny_spec, write_clip_tokenizer

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(ARCHS)}")
    with tempfile.TemporaryDirectory() as folder:
        if arch == "sd15":
            spec = sd15_spec()
            tokenizer = load_clip_tokenizer(write_clip_tokenizer(folder, max_length=spec.max_length))
        elif arch == "tiny":
            spec = tiny_spec()  # the test suite's "eps" pipeline: 64 px, 8x8x4 latents
            tokenizer = load_clip_tokenizer(write_clip_tokenizer(folder, max_length=spec.max_length))
        else:
            from noiseclr.basemodel.spec import base_model_spec
            from noiseclr.world.tokenizer import MAX_LENGTH, build_world_tokenizer

            tokenizer = load_clip_tokenizer(build_world_tokenizer(folder, MAX_LENGTH))
            spec = base_model_spec(len(tokenizer), MAX_LENGTH)
        # The meta device allocates nothing: an SD-1.5 twin for FLOP counting costs ~nothing.
        where = torch.device(build_device) if build_device else contextlib.nullcontext()
        with where:
            return build_pipeline(spec, tokenizer, seed=seed)


def wrap(pipe: Any, arch: str, device: torch.device | str, dtype: torch.dtype | str) -> Any:
    from noiseclr.model import DiffusionModel

    return DiffusionModel.from_pipeline(pipe, name=f"random-{arch}", device=device, dtype=dtype)


def build_model(arch: str, device: str = "cpu", dtype: str | torch.dtype = "float32", seed: int = 0) -> Any:
    """A :class:`~noiseclr.model.DiffusionModel` with random weights of ``arch``."""
    build_device = "meta" if str(device) == "meta" else None
    return wrap(build_pipeline_for(arch, seed, build_device), arch, device, dtype)


# ============================================================================ inputs
def micro_batch_inputs(model: Any, batch: int, count: int, total: int = 100, seed: int = 0) -> dict[str, Any]:
    """Latents, noise, timestep, drawn indices and a [total, W] direction table, as the trainer has them."""
    from noiseclr.discovery import initial_directions

    generator = torch.Generator().manual_seed(seed)
    shape = (batch, model.latent_channels, model.latent_size, model.latent_size)
    meta = model.device.type == "meta"
    if meta:
        vectors = torch.empty(total, model.token_width, device="meta")
        latents = torch.empty(shape, device="meta")
        noise = torch.empty(shape, device="meta")
    else:
        vectors = initial_directions(model, total, seed).to(model.device)
        latents = torch.randn(shape, generator=generator).to(model.device)
        noise = torch.randn(shape, generator=generator).to(model.device)
    drawn = torch.randperm(total, generator=generator)[:count]
    return {"vectors": vectors, "latents": latents, "noise": noise, "timestep": 500, "drawn": drawn}


# ============================================================================ the two paths
def fast_step(
    model: Any, inputs: dict[str, Any], vectors: torch.nn.Parameter, variant: str, temperature: float = 0.5
) -> torch.Tensor:
    """One micro-batch through the fast path, with backward; returns the (detached) loss."""
    from noiseclr.discovery import micro_batch_loss

    vectors.grad = None
    result = micro_batch_loss(
        model,
        vectors,
        inputs["latents"],
        inputs["timestep"],
        inputs["noise"],
        inputs["drawn"],
        variant=variant,
        temperature=temperature,
    )
    result.loss.backward()
    return result.loss.detach()


def reference_step(
    model: Any, inputs: dict[str, Any], vectors: torch.nn.Parameter, checkpointing: bool
) -> torch.Tensor:
    vectors.grad = None
    loss = reference_micro_batch_loss(
        model,
        vectors,
        inputs["latents"],
        inputs["timestep"],
        inputs["noise"],
        inputs["drawn"],
        checkpointing=checkpointing,
    )
    loss.backward()
    return loss.detach()
