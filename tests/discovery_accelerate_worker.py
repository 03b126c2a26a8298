"""Run by tests/test_discovery_accelerate.py under ``accelerate launch`` (not a test module).

Usage: discovery_accelerate_worker.py MODEL_DIR OUT_DIR BATCH_SIZE STEPS
Trains on :func:`worker_pixels` with :func:`worker_settings`; the main process writes OUT_DIR.
"""

from __future__ import annotations

import os
import sys

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def worker_pixels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    return torch.rand(10, 3, 64, 64, generator=generator) * 2 - 1


def worker_settings(batch_size: int, steps: int):
    from noiseclr.discovery import DiscoverySettings

    return DiscoverySettings(
        num_directions=5,
        batch_size=batch_size,
        num_negatives=3,
        micro_batches=2,
        steps=steps,
        checkpoint_every=0,
        seed=7,
    )


def main(argv: list[str]) -> int:
    from noiseclr.discovery import discover
    from noiseclr.runtime import RuntimeSettings

    model_dir, out, batch_size, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    result = discover(
        model_dir,
        worker_pixels(),
        out,
        worker_settings(batch_size, steps),
        runtime=RuntimeSettings(device="cpu", dtype="float32"),
        progress=False,
    )
    rank, size = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    print(f"rank {rank} of {size}: main {result.is_main_process}, loss {result.final_loss:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
