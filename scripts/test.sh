#!/usr/bin/env bash
# Set up and run the checks CI runs: install (scripts/setup.sh --dev), the import contracts (.importlinter),
# then the README's test command. Idempotent. Tests that need ../shared/data look there or at $SHARED_DATA.
#   bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
bash scripts/setup.sh --dev
export SHARED_DATA="${SHARED_DATA:-$(cd .. && pwd)/shared/data}"
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
lint-imports --no-cache
"$PY" -m pytest -q tests "$@"
