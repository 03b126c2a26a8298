#!/usr/bin/env bash
# Install torch into the active Python environment, the way both README commands need it:
#
#   bash scripts/install_torch.sh        (used by scripts/quickstart.sh and .ci/run)
#
# On Linux without an NVIDIA GPU the plain PyPI wheel is the CUDA build (several GB of GPU
# libraries), so torch comes from PyTorch's CPU index there. When that index cannot be reached,
# it falls back to the default index and says so in one line (pip's own retry chatter goes to a
# log file). TORCH_INDEX_URL overrides the index (TORCH_INDEX_URL=pypi: the default index);
# TORCH_VERSION the version (2.13.0, what CI tests).
set -euo pipefail
version="${TORCH_VERSION:-2.13.0}"
py="${PYTHON:-python}"
index="${TORCH_INDEX_URL:-}"
if [ -z "$index" ] && [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    index=https://download.pytorch.org/whl/cpu
fi
if [ -z "$index" ] || [ "$index" = pypi ]; then
    echo "install_torch: torch==$version from the default index"
    exec "$py" -m pip install -q "torch==$version"
fi

log="$(mktemp "${TMPDIR:-/tmp}/install_torch.XXXXXX.log")"
echo "install_torch: torch==$version (CPU build) from $index"
if "$py" -m pip install -q "torch==$version" --index-url "$index" --retries 1 --timeout 20 >"$log" 2>&1; then
    if grep -q -E "NewConnectionError|Name or service not known|Network is unreachable|timed out" "$log"; then
        # pip's find-links (a local wheel folder) can satisfy it while the index is unreachable.
        echo "install_torch: $index was unreachable; pip found $("$py" -c 'import torch; print("torch", torch.__version__)') in a local wheel folder (pip's find-links)"
    fi
    rm -f "$log"
    exit 0
fi
echo "install_torch: $index failed ($(grep -m1 -E 'ERROR' "$log" || tail -n1 "$log")); installing torch==$version from the default index instead -- on Linux that is the CUDA build unless a CPU wheel is at hand (full pip output: $log)"
"$py" -m pip install -q "torch==$version"
