#!/usr/bin/env bash
# From a fresh clone to a sample in one command: install (scripts/setup.sh), prepare Tiny Shakespeare with the
# GPT-2 tokenizer, train configs/shakespeare_tiny.py, print a sample. Idempotent: a second run installs nothing
# new, keeps the prepared data, resumes a stopped run (a finished one is done at once) and samples again.
#   bash scripts/quickstart.sh [--key=value ...]    # extra arguments go to train.py
# SHARED_DATA: a folder with tinyshakespeare.txt and gpt2.tiktoken (default ../shared/data); without it both
# are downloaded. PYTHON, TORCH_SPEC, TORCH_INDEX_URL: see scripts/setup.sh. Ctrl-C while training saves a
# checkpoint and stops here (train.py exits 130; run the script again to resume); it never goes on to sample.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
SHARED="${SHARED_DATA:-../shared/data}"
bash scripts/setup.sh

if [ ! -f data/shakespeare/meta.json ]; then
  local_files=()
  [ -f "$SHARED/tinyshakespeare.txt" ] && local_files+=(--input "$SHARED/tinyshakespeare.txt")
  [ -f "$SHARED/gpt2.tiktoken" ] && local_files+=(--tiktoken-file "$SHARED/gpt2.tiktoken")
  "$PY" prepare_data.py shakespeare --tokenizer gpt2 ${local_files[@]+"${local_files[@]}"} --out data/shakespeare \
    --overwrite   # only reached when no complete preparation is there (a killed one is redone)
fi

out=out/shakespeare_tiny
if ls "$out"/ckpt_*.pt >/dev/null 2>&1; then
  "$PY" train.py configs/shakespeare_tiny.py --resume "$@"
else
  "$PY" train.py configs/shakespeare_tiny.py "$@"
fi
"$PY" sample.py --ckpt "$out" --max-new-tokens 200
