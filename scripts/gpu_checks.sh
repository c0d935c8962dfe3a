#!/usr/bin/env bash
# The GPU checks and benchmarks recorded in docs/benchmarks.md and docs/multinode.md, in one go:
#
#   SHARED_DATA=../shared/data bash scripts/gpu_checks.sh [OUT_DIR] [tests|speed|memory ...]
#
# tests:  tests/test_gpu.py (bf16, fp16 + GradScaler, flash / memory-efficient attention, torch.compile,
#         KV cache, fused loss, NCCL DDP and FSDP2 + compile) -- needs tinyshakespeare.txt and gpt2.tiktoken
#         in SHARED_DATA
# speed:  bench.py on gpt2_124m (bf16, compiled, flash attention) at micro-batch 16, 32 and 64 x 1024, and
#         with the fused chunked loss at 32
# memory: bench.py --memory on llama_style_350m: DDP vs FSDP, with and without activation checkpointing,
#         on all GPUs here
# eval:   evaluate.py --tasks core,-lambada on a gpt2_124m-sized model (random weights: the time is what counts;
#         issue 13's goal is the whole suite in under 3 minutes) -- needs hellaswag_val.jsonl and evals/
set -uo pipefail
out=${1:-out/gpu_checks}; shift || true
parts=${*:-tests speed memory eval}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
  date -u; } 2>&1 | tee "$out/gpu.txt"
for part in $parts; do
  case $part in
    tests) python -m pytest -q -rs tests/test_gpu.py 2>&1 | tee "$out/test_gpu.txt"
           python -m pytest -q -rs tests/test_model.py -k flex 2>&1 | tee -a "$out/test_gpu.txt" ;;  # FlexAttention
    speed) for bs in 16 32 64; do
             python bench.py configs/gpt2_124m.py --steps 30 --warmup 5 --batch_size=$bs 2>&1 | tee -a "$out/speed.txt"
           done
           python bench.py configs/gpt2_124m.py --steps 30 --warmup 5 --batch_size=32 --fused_loss=on 2>&1 \
             | tee -a "$out/speed.txt" ;;
    memory) python bench.py configs/llama_style_350m.py --memory --steps 10 --warmup 3 --batch_size=8 \
              --compile=False --json "$out/memory_350m.json" 2>&1 | tee "$out/memory.txt" ;;
    eval) python -c "
import dataclasses, os, sys, torch, data
from model import GPT, GPTConfig
cfg = GPTConfig(); os.makedirs(sys.argv[1], exist_ok=True)
tok = data.gpt2_tokenizer(os.path.join(os.environ['SHARED_DATA'], 'gpt2.tiktoken'))
torch.save({'format': 1, 'model_config': dataclasses.asdict(cfg), 'model': GPT(cfg).state_dict(),
            'tokenizer': tok.spec(), 'config': {}, 'step': 0}, os.path.join(sys.argv[1], 'ckpt_0000000.pt'))
" "$out/random_124m" && HELLASWAG_FILE="$SHARED_DATA/hellaswag_val.jsonl" /usr/bin/time -v python evaluate.py \
            --ckpt "$out/random_124m" --tasks core,-lambada --data-dir "$SHARED_DATA/evals" --quiet \
            --tiktoken-file "$SHARED_DATA/gpt2.tiktoken" --out "$out/eval_core.json" 2>&1 | tee "$out/eval.txt" ;;
    *) echo "unknown part $part (tests, speed, memory, eval)"; exit 2 ;;
  esac
done
