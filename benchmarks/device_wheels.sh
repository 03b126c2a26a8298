#!/usr/bin/env bash
# Download the wheels the lent GPU machines lack into .whl/ (git-ignored), for a later session.
#
# The GPU image has torch 2.11 (CUDA), transformers 5.17, accelerate 1.15, safetensors, numpy,
# pillow and tqdm (so also huggingface_hub, filelock and regex, which transformers needs), but no
# diffusers. diffusers checks at import that `requests` is installed (dependency_versions_check:
# python, requests, filelock, numpy), and huggingface_hub >= 1 no longer pulls requests in, so
# requests and its own dependencies come too. importlib_metadata is only imported on Python < 3.8.
#
# Run from anywhere; the machine has no internet, so the wheels travel with the working tree:
#   bash benchmarks/device_wheels.sh
#   # on the device (see benchmarks/README.md):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep the wheels out of git even where .gitignore lacks the entry.
if ! grep -qxF "/.whl/" .gitignore 2>/dev/null; then
    mkdir -p .git/info && grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
fi
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"  # the GPU image's Python
PACKAGES=(
    diffusers==0.42.1
    requests==2.34.2
    urllib3==2.8.0
    idna==3.20
    certifi==2026.10.19.post1
    charset-normalizer==3.5.2
)
python3 -m pip download --no-deps --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${PACKAGES[@]}"
ls -l .whl
