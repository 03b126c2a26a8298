"""The embedded base model's architecture: Stable Diffusion's component classes, small.

* ``AutoencoderKL``: 128x128 RGB <-> 16x16x4 latents (8x downsampling, 4 channels, as SD);
* ``CLIPTextModel`` + ``CLIPTokenizer`` (BPE files generated from the world's caption grammar);
* ``UNet2DConditionModel`` with cross-attention at every level (16x16, 8x8, 4x4), epsilon prediction;
* SD 1.x's DDPM training schedule (scaled-linear betas 0.00085..0.012, 1000 steps).

Sizes were chosen so that one discovery step (6 images x 8 directions, with backward) stays
well under 1.5 s on a 2-core CPU and the fp16 weights stay under 40 MB.
"""

from __future__ import annotations

from ..architecture import SD_SCHEDULER, PipelineSpec

IMAGE_SIZE = 128
TEXT_WIDTH = 256


def base_model_spec(vocab_size: int, max_length: int) -> PipelineSpec:
    """The base model's configs for a tokenizer of ``vocab_size`` tokens and ``max_length`` positions."""
    return PipelineSpec(
        unet={
            "sample_size": IMAGE_SIZE // 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (64, 128, 192),
            "layers_per_block": 1,
            # Cross-attention at 16x16 too: mouth, mustache and lips are 2-3 latent pixels there
            # and about one at 8x8, where text alone reached them for 30-70% of captions (model
            # card, diffusion step 4 000). Two heads of 32 at 16x16 cost +36% per training step
            # on the CPU (eight heads of 8: +63%); 8x8 and 4x4 keep their eight heads.
            "down_block_types": ("CrossAttnDownBlock2D",) * 3,
            "up_block_types": ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": TEXT_WIDTH,
            "attention_head_dim": (2, 8, 8),
            "norm_num_groups": 32,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            # Narrow at high resolution (CPU cost), full width where the 16x16 latent is formed.
            "block_out_channels": (16, 32, 64, 128),
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 8,
            "sample_size": IMAGE_SIZE,
        },
        text_encoder={
            "vocab_size": vocab_size,
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 4 * TEXT_WIDTH,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "hidden_act": "quick_gelu",
            "projection_dim": TEXT_WIDTH,
        },
        scheduler=dict(SD_SCHEDULER),
        max_length=max_length,
    )
