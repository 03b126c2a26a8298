"""Stable-Diffusion-layout pipelines built from configs, with fresh random weights.

One place that knows how to assemble ``StableDiffusionPipeline(vae, text_encoder, tokenizer,
unet, scheduler)`` from plain config dicts. It serves the test suite (tiny models of odd sizes),
the GPU benchmarks (Stable Diffusion 1.5's exact architecture; random weights cost the same
time as trained ones) and the embedded base model (its architecture before training).

Tokenizers are real CLIP byte-level BPE files (``vocab.json`` + ``merges.txt``) that
``CLIPTokenizer.from_pretrained`` reads like any Stable Diffusion tokenizer; the writer lives with
the world's tokenizer (:mod:`noiseclr.world.tokenizer`) and is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .world.tokenizer import BOS, EOS, bytes_to_unicode, clip_vocab, write_clip_tokenizer  # noqa: F401 (re-exported)

SD_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
"""Stable Diffusion 1.x's noise schedule and sampler settings."""


def load_clip_tokenizer(folder: str | Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


@dataclass
class PipelineSpec:
    """Config dicts for the four model components and the scheduler."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD_SCHEDULER))
    max_length: int = 77

    def with_changes(self, **changes: dict[str, Any]) -> PipelineSpec:
        """A copy with some config entries replaced, e.g. ``with_changes(scheduler={...})``."""
        merged = {name: {**getattr(self, name), **changes.get(name, {})} for name in ("unet", "vae", "text_encoder", "scheduler")}
        return PipelineSpec(**merged, max_length=self.max_length)


def build_pipeline(spec: PipelineSpec, tokenizer: Any, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A ``StableDiffusionPipeline`` with randomly initialised weights, deterministic in ``seed``."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = dict(spec.text_encoder)
    text_config.setdefault("max_position_embeddings", spec.max_length)
    text_config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    scheduler_config = {k: v for k, v in spec.scheduler.items() if not k.startswith("_")}
    scheduler_class = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler, "DDPMScheduler": DDPMScheduler}[
        spec.scheduler.get("_class_name", "PNDMScheduler")
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    tokenizer.model_max_length = spec.max_length
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler_class.from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


# ---------------------------------------------------------------------------- specs
def tiny_spec(
    *, text_width: int = 32, max_length: int = 16, prediction_type: str = "epsilon", cross_attention_levels: int = 2
) -> PipelineSpec:
    """A model of a few hundred thousand parameters: 64x64 images, 8x8x4 latents."""
    down = ["CrossAttnDownBlock2D"] * cross_attention_levels + ["DownBlock2D"] * (2 - cross_attention_levels)
    return PipelineSpec(
        unet={
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (16, 32),
            "layers_per_block": 1,
            "down_block_types": tuple(down),
            "up_block_types": tuple(b.replace("Down", "Up") for b in reversed(down)),
            "cross_attention_dim": text_width,
            "attention_head_dim": 4,
            "norm_num_groups": 8,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": (8, 8, 16, 16),
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 8,
            "sample_size": 64,
        },
        text_encoder={
            "vocab_size": len(clip_vocab()),
            "hidden_size": text_width,
            "intermediate_size": 2 * text_width,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "hidden_act": "quick_gelu",
        },
        scheduler={**SD_SCHEDULER, "prediction_type": prediction_type},
        max_length=max_length,
    )


def sd15_spec() -> PipelineSpec:
    """Stable Diffusion 1.5's exact architecture (UNet, CLIP ViT-L/14 text encoder, VAE)."""
    return PipelineSpec(
        unet={
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
            "downsample_padding": 1,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "act_fn": "silu",
            "center_input_sample": False,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-5,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": 512,
            "act_fn": "silu",
        },
        text_encoder={
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "hidden_act": "quick_gelu",
            "projection_dim": 768,
        },
        scheduler=dict(SD_SCHEDULER),
        max_length=77,
    )
