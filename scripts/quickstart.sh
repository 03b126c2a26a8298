#!/usr/bin/env bash
# The README's first command: set up an environment and run the main job, `noiseclr demo`.
#
#   bash scripts/quickstart.sh [extra noiseclr demo flags, e.g. --steps 400]
#
# Idempotent: uses the active virtual environment if there is one, else creates (once) and uses
# ./.venv; installs torch==2.13.0 only when no torch is importable (a CUDA build you installed
# yourself is kept; scripts/install_torch.sh takes it from PyTorch's CPU index on Linux without an
# NVIDIA GPU, falling back to the default index with one line; TORCH_INDEX_URL overrides); installs this checkout with `pip install -e .`
# only when `noiseclr` does not already import from it; and the demo reuses its finished
# discovery run in demo-output/ (written in the directory you run this from).
set -euo pipefail
here="$(pwd)"
cd "$(dirname "$0")/.."
root="$(pwd -P)"

if [ -z "${VIRTUAL_ENV:-}" ]; then
    if [ ! -x .venv/bin/python ]; then  # .venv/ of the checkout
        echo "quickstart: creating a virtual environment in .venv/"
        "${PYTHON:-python3}" -m venv .venv
    fi
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
echo "quickstart: using $(command -v python) ($(python --version 2>&1))"

if ! python -c "import torch" >/dev/null 2>&1; then
    bash "$root/scripts/install_torch.sh"  # the CPU build on Linux without an NVIDIA GPU; one line if it falls back
fi

installed_from="$(python -c 'import noiseclr, pathlib; print(pathlib.Path(noiseclr.__file__).resolve().parent)' 2>/dev/null || true)"
if [ "$installed_from" != "$root/src/noiseclr" ] || ! command -v noiseclr >/dev/null 2>&1; then
    echo "quickstart: installing noiseclr from $root (pip install -e .)"
    python -m pip install -e .
fi

cd "$here"
echo "quickstart: running noiseclr demo --out demo-output $*"
exec noiseclr demo --out demo-output "$@"
