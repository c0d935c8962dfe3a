#!/usr/bin/env bash
# Install what the repo needs into the current Python (a venv is wise): torch for this machine, then
# requirements.txt (and requirements-dev.txt with --dev). Idempotent: what is installed is kept.
#   bash scripts/setup.sh [--dev]
# PYTHON: the interpreter (default: python). TORCH_SPEC: the pip requirement for torch (default torch>=2.5).
# TORCH_INDEX_URL: where torch comes from; default: PyPI's CUDA build when nvidia-smi finds a GPU, else
# PyTorch's CPU wheels (https://download.pytorch.org/whl/cpu); set it empty to use pip's own indexes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL+set}" ]; then
    index=(${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"})
  elif command -v nvidia-smi >/dev/null 2>&1; then
    index=()                                                  # PyPI's Linux wheels are CUDA builds
  else
    index=(--index-url https://download.pytorch.org/whl/cpu)  # a few hundred MB instead of several GB
  fi
  "$PY" -m pip install --quiet "${TORCH_SPEC:-torch>=2.5}" ${index[@]+"${index[@]}"}
fi
"$PY" -m pip install --quiet -r requirements.txt
if [ "${1:-}" = "--dev" ]; then
  "$PY" -m pip install --quiet -r requirements-dev.txt
fi
