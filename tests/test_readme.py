"""What the README promises a first-time user, and the pins CI's oldest-dependencies run uses."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_install_says_how_to_get_the_cpu_wheel_and_that_the_model_ships():
    install = section("Install")
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    assert "CUDA build" in install  # why the plain command is the wrong one on a CPU-only Linux box
    assert "--model embedded" in install and "ships inside the package" in install
    assert "noiseclr --version" in install


def test_oldest_pins_are_the_lower_bounds_of_pyproject():
    bounds = dict(
        re.findall(r'^\s*"([A-Za-z0-9_.-]+)>=([0-9.]+)",', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    )
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines()]
    pins = dict(line.split("==") for line in lines if line)
    for name in ("transformers", "diffusers"):
        assert Version(pins[name]) == Version(bounds[name]), name
    assert "oldest.txt" in (ROOT / ".ci" / "run").read_text()
