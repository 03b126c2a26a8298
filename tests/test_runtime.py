"""How jobs run: OpenMP wait policy set before torch starts, --threads, runtime settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from noiseclr.errors import NoiseCLRError
from noiseclr.runtime import RuntimeSettings

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Records OMP_WAIT_POLICY at the moment torch is first imported, then runs the CLI's path to torch
# (the parser imports the settings classes; ``import noiseclr.cli`` alone no longer loads torch).
PROBE = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Watch())
import noiseclr.cli
noiseclr.cli.build_parser()
print(seen[0])
"""


def _policy_when_torch_starts(environment: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")} | environment | {"PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_passive_waiting_is_set_before_torch_starts_its_thread_pool():
    # Spin-waiting OpenMP threads made the CLI 5-8x slower beside another busy process.
    assert _policy_when_torch_starts({}) == "PASSIVE"


def test_a_users_own_wait_policy_is_kept():
    assert _policy_when_torch_starts({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_threads_setting():
    import torch

    before = torch.get_num_threads()
    try:
        RuntimeSettings(threads=1).apply_threads()
        assert torch.get_num_threads() == 1
        RuntimeSettings().apply_threads()  # no --threads: torch's own setting stands
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(NoiseCLRError, match="--threads 0"):
        RuntimeSettings(threads=0).validate()


def test_threads_flag_is_validated(capsys, tmp_path):
    from noiseclr.cli import main

    code = main(["generate", "--prompt", "x", "--out", str(tmp_path / "o"), "--threads", "0"])
    assert code == 2 and "--threads 0" in capsys.readouterr().err
