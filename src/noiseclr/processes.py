"""One process, or the processes of an ``accelerate launch`` run.

Discovery runs unchanged on one device or many: :class:`Processes` is the only place that knows
whether Accelerate is involved. With several processes every process draws the same global
micro-batch, takes its own slice of images, and the delta features are all-gathered (without
grad; the local slice keeps its grad) so every process's images serve as positives.
"""

from __future__ import annotations

import os
from typing import Any

import torch


class Processes:
    """One process, or the processes of an ``accelerate launch`` run (via Accelerate)."""

    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator
        self.size = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.is_main = accelerator.is_main_process if accelerator is not None else True

    @classmethod
    def detect(cls, device: str) -> Processes:
        """Accelerate when launched with several processes; a plain single process otherwise."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls(None)
        from accelerate import Accelerator

        return cls(Accelerator(cpu=str(device) == "cpu"))

    @property
    def device(self) -> torch.device | None:
        return self.accelerator.device if self.accelerator is not None else None

    @property
    def mixed_precision(self) -> str:
        return str(self.accelerator.mixed_precision) if self.accelerator is not None else "no"

    def gather_features(self, local: torch.Tensor) -> torch.Tensor:
        """[J, n, F] local features -> [J, size*n, F]; only the local slice keeps its grad."""
        if self.size == 1:
            return local
        gathered = self.accelerator.gather(local.detach().transpose(0, 1).contiguous()).transpose(0, 1)
        n = local.shape[1]
        start = self.rank * n
        return torch.cat([gathered[:, :start], local, gathered[:, start + n :]], dim=1)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return tensor
        return self.accelerator.reduce(tensor, reduction="sum")

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.size == 1 else self.accelerator.gather(tensor.contiguous())

    def barrier(self) -> None:
        if self.size > 1:
            self.accelerator.wait_for_everyone()
