"""Two processes under ``accelerate launch`` (gloo on the CPU) == one process with twice the batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noiseclr.directions import Directions
from noiseclr.discovery import discover

WORKER = Path(__file__).with_name("discovery_accelerate_worker.py")
sys.path.insert(0, str(WORKER.parent))
from discovery_accelerate_worker import worker_pixels, worker_settings  # noqa: E402

pytest.importorskip("accelerate")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_process_with_double_batch(tiny_model_dir, tmp_path):
    steps, batch = 4, 3
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(WORKER.parent), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(WORKER),
        str(tiny_model_dir),
        str(tmp_path / "two"),
        str(batch),
        str(steps),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0 of 2: main True" in done.stdout and "rank 1 of 2: main False" in done.stdout

    one = discover(
        str(tiny_model_dir), worker_pixels(), tmp_path / "one", worker_settings(2 * batch, steps), progress=False
    )
    two = Directions.load(tmp_path / "two" / "directions.safetensors")
    assert two.settings["world_size"] == 2 and two.settings["global_batch"] == 2 * batch
    # Same draws, same global loss; only float summation order differs.
    torch.testing.assert_close(two.vectors, one.directions.vectors, atol=1e-5, rtol=0)
    # The directions did move during those steps, so the agreement is not trivial.
    assert (two.vectors - worker_initial(tiny_model_dir)).abs().max() > 1e-3
    assert len((tmp_path / "two" / "loss.csv").read_text().splitlines()) == steps + 1


def worker_initial(model_dir: Path) -> torch.Tensor:
    from noiseclr.discovery import initial_directions
    from noiseclr.model import DiffusionModel

    model = DiffusionModel.load(model_dir, device="cpu", dtype="float32")
    return initial_directions(model, worker_settings(2, 1).num_directions, worker_settings(2, 1).seed)
