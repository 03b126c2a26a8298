"""What discovery draws: named seed streams, each micro-batch's random choices, the starting rows.

Every stream has its own CPU generator, seeded from (seed, name), identical on every process and
saved in each checkpoint, so a resumed or distributed run draws exactly what one process would.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from .discovery_settings import INITS
from .errors import NoiseCLRError

if TYPE_CHECKING:
    from .model import DiffusionModel

RNG_STREAMS = ("directions", "timesteps", "images", "noise")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream of a run seeded ``seed``."""
    # Independent streams: changing e.g. hflip never shifts the noise sequence.
    digest = hashlib.sha256(f"noiseclr-discovery:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class MicroBatchDraw(NamedTuple):
    """The random choices of one micro-batch, for the whole (global) batch."""

    drawn: torch.Tensor
    """[J] direction indices; ``drawn[0]`` is the single-anchor variant's anchor."""
    timestep: int
    image_indices: torch.Tensor
    """[world_size * N] distinct image indices."""
    flips: torch.Tensor
    """[world_size * N] bool, mirror the image."""
    noise: torch.Tensor
    """[world_size * N, C, h, w] float32 on the CPU."""


class Sampler:
    """All randomness of the loop, from named CPU generators (identical on every process)."""

    def __init__(self, seed: int):
        self.generators = {name: torch.Generator().manual_seed(stream_seed(seed, name)) for name in RNG_STREAMS}

    def draw(
        self,
        *,
        num_directions: int,
        num_drawn: int,
        timestep_bounds: tuple[int, int],
        num_images: int,
        global_batch: int,
        latent_shape: tuple[int, ...],
    ) -> MicroBatchDraw:
        g = self.generators
        drawn = torch.randperm(num_directions, generator=g["directions"])[:num_drawn]
        timestep = int(torch.randint(timestep_bounds[0], timestep_bounds[1], (1,), generator=g["timesteps"]))
        image_indices = torch.randperm(num_images, generator=g["images"])[:global_batch]
        flips = torch.rand(global_batch, generator=g["images"]) < 0.5
        noise = torch.randn((global_batch, *latent_shape), generator=g["noise"])
        return MicroBatchDraw(drawn, timestep, image_indices, flips, noise)

    def state(self) -> dict[str, torch.Tensor]:
        return {name: gen.get_state().clone() for name, gen in self.generators.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, gen in self.generators.items():
            gen.set_state(state[name].clone())


def timestep_bounds(model: DiffusionModel, timestep_range: tuple[float, float]) -> tuple[int, int]:
    """``[low, high)`` integer timesteps for fractions of the model's T training timesteps."""
    total = model.num_train_timesteps
    low = min(total - 1, int(math.floor(timestep_range[0] * total)))
    high = max(low + 1, min(total, int(math.ceil(timestep_range[1] * total))))
    return low, high


def initial_directions(model: DiffusionModel, count: int, seed: int, init: str = "random") -> torch.Tensor:
    """[count, width] starting rows.

    ``random``: Gaussian rows rescaled to the typical token-embedding norm (SDXL: per encoder part).
    ``tokens``: the embeddings of ``count`` distinct random real tokens of the vocabulary (specials
    excluded; SDXL: the same token id in both encoders), so every direction starts as a word the
    model knows and already moves the noise prediction.
    """
    generator = torch.Generator().manual_seed(stream_seed(seed, "init"))
    if init == "random":
        rows = torch.randn((count, model.token_width), generator=generator, dtype=torch.float32)
        return model.scale_to_token_norms(rows)
    if init != "tokens":
        raise ValueError(f"unknown init {init!r}; one of {INITS}")
    tables = [encoder.get_input_embeddings().weight.detach().float().cpu() for encoder, _ in model.encoders]
    vocab = min(table.shape[0] for table in tables)
    special = {model.tokenizer.bos_token_id, model.tokenizer.eos_token_id, model.tokenizer.pad_token_id}
    candidates = torch.tensor([i for i in range(vocab) if i not in special])
    if count > len(candidates):
        raise NoiseCLRError(
            f"--init tokens: {count} directions but only {len(candidates)} real tokens; use --init random."
        )
    ids = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    return torch.cat([table[ids] for table in tables], dim=1)
