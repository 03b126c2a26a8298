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

from .loading import assemble_pipeline
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
    """Config dicts for the model components and the scheduler.

    With ``text_encoder_2`` (a ``CLIPTextModelWithProjection`` config) it is an SDXL pipeline.
    """

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD_SCHEDULER))
    max_length: int = 77
    text_encoder_2: dict[str, Any] | None = None
    force_zeros_for_empty_prompt: bool = True
    """SDXL only: the null conditioning is all zeros (SDXL base's setting), not the empty prompt's."""

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def with_changes(self, **changes: dict[str, Any]) -> PipelineSpec:
        """A copy with some config entries replaced, e.g. ``with_changes(scheduler={...})``."""
        names = ("unet", "vae", "text_encoder", "scheduler") + (("text_encoder_2",) if self.is_sdxl else ())
        merged = {name: {**getattr(self, name), **changes.get(name, {})} for name in names}
        return PipelineSpec(
            **merged, max_length=self.max_length, force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt
        )


def _text_config(config: dict[str, Any], tokenizer: Any, max_length: int) -> dict[str, Any]:
    config = dict(config)
    config.setdefault("max_position_embeddings", max_length)
    config.update(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return config


def build_pipeline(
    spec: PipelineSpec, tokenizer: Any, seed: int = 0, dtype: torch.dtype = torch.float32, tokenizer_2: Any = None
) -> Any:
    """A ``StableDiffusionPipeline`` (``StableDiffusionXLPipeline`` for an SDXL spec, which also
    needs ``tokenizer_2``) with randomly initialised weights, deterministic in ``seed``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.schedulers import (
        DDIMScheduler,
        DDPMScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = _text_config(spec.text_encoder, tokenizer, spec.max_length)
    scheduler_config = {k: v for k, v in spec.scheduler.items() if not k.startswith("_")}
    scheduler_class = {
        "PNDMScheduler": PNDMScheduler,
        "DDIMScheduler": DDIMScheduler,
        "DDPMScheduler": DDPMScheduler,
        "EulerDiscreteScheduler": EulerDiscreteScheduler,
    }[spec.scheduler.get("_class_name", "PNDMScheduler")]
    if spec.is_sdxl and tokenizer_2 is None:
        raise ValueError("an SDXL spec needs tokenizer_2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        if spec.is_sdxl:
            from transformers import CLIPTextModelWithProjection

            config_2 = _text_config(spec.text_encoder_2, tokenizer_2, spec.max_length)
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config_2))
    tokenizer.model_max_length = spec.max_length
    second: dict[str, Any] = {}
    if spec.is_sdxl:
        tokenizer_2.model_max_length = spec.max_length
        second = {
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
            "force_zeros_for_empty_prompt": spec.force_zeros_for_empty_prompt,
        }
    pipe = assemble_pipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler_class.from_config(scheduler_config),
        **second,
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


SDXL_SCHEDULER: dict[str, Any] = {
    **SD_SCHEDULER,
    "_class_name": "EulerDiscreteScheduler",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "sample_max_value": 1.0,
}
"""SDXL base's noise schedule (the same betas as SD 1.x) and its Euler sampler."""

SDXL_SCALING_FACTOR = 0.13025
"""SDXL's VAE latent scaling factor."""


def tiny_sdxl_spec(
    *,
    text_widths: tuple[int, int] = (32, 48),
    pooled_width: int = 40,
    max_length: int = 16,
    sample_size: int = 12,
    time_embed_dim: int = 8,
    prediction_type: str = "epsilon",
    force_zeros_for_empty_prompt: bool = True,
) -> PipelineSpec:
    """A tiny SDXL-layout model: two text encoders of different widths (the second with a
    projection of ``pooled_width``), a ``text_time`` UNet and an 8x VAE; 96x96 images, 12x12x4 latents."""
    width_1, width_2 = text_widths
    base = tiny_spec(text_width=width_1, max_length=max_length, prediction_type=prediction_type)
    unet = {
        **base.unet,
        "sample_size": sample_size,
        "cross_attention_dim": width_1 + width_2,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_embed_dim,
        # time ids are (orig H, W, crop top, left, target H, W): 6 embedded numbers + the pooled text
        "projection_class_embeddings_input_dim": 6 * time_embed_dim + pooled_width,
    }
    text_encoder_2 = {
        "vocab_size": len(clip_vocab()),
        "hidden_size": width_2,
        "intermediate_size": 2 * width_2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "hidden_act": "gelu",
        "projection_dim": pooled_width,
    }
    return PipelineSpec(
        unet=unet,
        vae={**base.vae, "sample_size": sample_size * 8, "scaling_factor": SDXL_SCALING_FACTOR},
        text_encoder=base.text_encoder,
        scheduler={**SDXL_SCHEDULER, "prediction_type": prediction_type},
        max_length=max_length,
        text_encoder_2=text_encoder_2,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
    )


def sdxl_spec() -> PipelineSpec:
    """Stable Diffusion XL 1.0 base's exact architecture (UNet, CLIP ViT-L + OpenCLIP ViT-bigG, VAE)."""
    return PipelineSpec(
        unet={
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280),
            "layers_per_block": 2,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "cross_attention_dim": 2048,
            "attention_head_dim": (5, 10, 20),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
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
            **sd15_spec().vae,
            "sample_size": 1024,
            "scaling_factor": SDXL_SCALING_FACTOR,
            "force_upcast": True,
        },
        text_encoder=sd15_spec().text_encoder,
        scheduler=dict(SDXL_SCHEDULER),
        max_length=77,
        text_encoder_2={
            "vocab_size": 49408,
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 20,
            "hidden_act": "gelu",
            "projection_dim": 1280,
        },
        force_zeros_for_empty_prompt=True,
    )


def build_tiny_sdxl_pipeline(folder: str | Path, spec: PipelineSpec | None = None, seed: int = 0) -> Any:
    """A random SDXL pipeline of ``spec`` (default :func:`tiny_sdxl_spec`); its two tokenizers are
    written under ``folder`` and pad like SDXL's (EOS, then ``"!"``)."""
    from transformers import CLIPTokenizer

    spec = spec or tiny_sdxl_spec()
    folder = Path(folder)
    tokenizer = load_clip_tokenizer(write_clip_tokenizer(folder / "tokenizer", max_length=spec.max_length))
    # SDXL's second tokenizer pads with "!" (id 0), not EOS; the pipeline saves it that way.
    source_2 = write_clip_tokenizer(folder / "tokenizer_2", max_length=spec.max_length)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(source_2), pad_token="!")
    return build_pipeline(spec, tokenizer, seed=seed, tokenizer_2=tokenizer_2)
