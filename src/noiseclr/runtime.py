"""How a job runs, as opposed to what it computes: device, dtype, CPU threads, speed-ups.

:class:`RuntimeSettings` is passed beside the settings of a job (discovery, demo, bench, ...);
nothing in it changes a result beyond float rounding.

CPU threads: PyTorch's OpenMP threads spin-wait between parallel regions by default. On a machine
where another process also wants the cores, that spinning steals the time the other threads need,
and a run gets 5-8x slower (README, "CPU threads"). ``import noiseclr`` therefore sets
``OMP_WAIT_POLICY=PASSIVE`` unless the user has set it -- it only takes effect when torch is
imported after noiseclr, as the command line does. ``--threads N`` (or ``threads=N``) sets
torch's intra-op threads; without it, torch's own default (or ``OMP_NUM_THREADS``) stands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .options import check_count, check_positive, option

if TYPE_CHECKING:
    from .model import DiffusionModel

WAIT_POLICY = "OMP_WAIT_POLICY"


def default_wait_policy(environ: dict[str, str] | Any = os.environ) -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; returns the policy in force."""
    return environ.setdefault(WAIT_POLICY, "PASSIVE")


@dataclass
class RuntimeSettings:
    """Device, dtype, threads and opt-in speed-ups of one job."""

    device: str = option("auto", flag="--device", help="auto, cpu, cuda or cuda:N")
    dtype: str = option("auto", flag="--dtype", help="auto (bf16 on GPU, float32 on CPU), float32, float16, bfloat16")
    threads: int | None = option(
        None,
        flag="--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch",
        default_text="torch's default, or OMP_NUM_THREADS",
    )
    gradient_checkpointing: bool = option(
        False, flag="--gradient-checkpointing", help="recompute UNet activations (saves memory)"
    )
    channels_last: bool = option(False, flag="--channels-last", help="channels-last memory format (GPU)")
    compile: bool = option(False, flag="--compile", help="torch.compile the UNet (GPU)")
    max_megapixels: float = option(
        64.0,
        flag="--max-megapixels",
        type=float,
        metavar="MP",
        help="refuse input images larger than this, from their header before decoding (a small file can declare a huge canvas)",
    )

    def validate(self) -> RuntimeSettings:
        if self.threads is not None:
            check_count(self.threads, "--threads", why="must be a whole number of at least 1 (CPU threads).")
        check_positive(self.max_megapixels, "--max-megapixels", "megapixels, e.g. 64")
        return self

    @property
    def max_pixels(self) -> int:
        """The image-size limit in pixels."""
        return int(self.max_megapixels * 1_000_000)

    def apply_threads(self) -> None:
        """Set torch's CPU threads when asked (a no-op otherwise)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(int(self.validate().threads))

    def load(self, model: str) -> DiffusionModel:
        """Load ``model`` (a name for :meth:`DiffusionModel.load`) on this device and dtype, with the speed-ups."""
        from .model import DiffusionModel

        self.apply_threads()
        return self.apply(DiffusionModel.load(model, device=self.device, dtype=self.dtype))

    def apply(self, model: DiffusionModel) -> DiffusionModel:
        """Apply the opt-in speed-ups to a loaded model."""
        if self.gradient_checkpointing or self.channels_last or self.compile:
            model.optimize(
                channels_last=self.channels_last,
                gradient_checkpointing=self.gradient_checkpointing,
                compile_unet=self.compile,
            )
        return model
