#!/usr/bin/env bash
# Install what the repo needs into the current Python (a venv is wise): torch for this machine, then
# requirements.txt (and requirements-dev.txt with --dev). Idempotent: what is installed is kept.
#   bash scripts/setup.sh [--dev]
# PYTHON: the interpreter (default: python). TORCH_SPEC: the pip requirement for torch (default torch>=2.5).
# TORCH_INDEX_URL: where torch comes from; default: PyPI's CUDA build when nvidia-smi finds a GPU, else
# PyTorch's CPU wheels (https://download.pytorch.org/whl/cpu); set it empty to use pip's own indexes. An index
# that does not answer within 5 s (offline, blocked) is skipped for pip's own, with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"

reachable() {  # one 5 s probe of the index's torch page: pip itself retries every request for minutes
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)' \
    "$1" >/dev/null 2>&1
}

if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL+set}" ]; then
    url="$TORCH_INDEX_URL"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    url=""                                                    # PyPI's Linux wheels are CUDA builds
  else
    url=https://download.pytorch.org/whl/cpu                  # a few hundred MB instead of several GB
  fi
  if [[ "$url" == http* ]] && ! reachable "$url"; then
    echo "setup.sh: $url cannot be reached; installing torch from pip's default index instead" >&2
    url=""
  fi
  "$PY" -m pip install --quiet "${TORCH_SPEC:-torch>=2.5}" ${url:+--index-url "$url"}
fi
"$PY" -m pip install --quiet -r requirements.txt
if [ "${1:-}" = "--dev" ]; then
  "$PY" -m pip install --quiet -r requirements-dev.txt
fi
