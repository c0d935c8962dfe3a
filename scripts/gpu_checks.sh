#!/usr/bin/env bash
# The GPU checks and benchmarks recorded in docs/benchmarks.md and docs/multinode.md, in one go:
#
#   SHARED_DATA=../shared/data bash scripts/gpu_checks.sh [OUT_DIR] [tests|speed|extras|modes|fp8curve|quality|nanogpt|memory|eval ...]
#
# tests:    tests/test_gpu.py (bf16, fp16 + GradScaler, flash / memory-efficient attention, torch.compile,
#           KV cache, fused loss, fp8 and liger where installed, NCCL DDP and FSDP2 + compile) and the
#           compiled FlexAttention test -- needs tinyshakespeare.txt and gpt2.tiktoken in SHARED_DATA
# speed:    bench.py on gpt2_124m (bf16, compiled, flash attention) at micro-batch 16, 32 and 64 x 1024, and
#           with the fused chunked loss at 32
# extras:   the same at 64 x 1024 with fused_loss=liger, fp8=linear and fp8=all (torchao, liger-kernel)
# modes:    the same at 64 x 1024 with compile_mode reduce-overhead and max-autotune-no-cudagraphs (slow to
#           compile; not in the default list)
# fp8curve: gpt2_124m trained 300 steps on Tiny Shakespeare (GPT-2 BPE) in bf16 and with fp8=linear: the loss
#           curves side by side (issue 16: fp8 must track bf16)
# quality:  issue 15's quality per token at 124M: gpt2_124m and speedrun_124m on the same 200 x 16 x 1024 tokens
#           of QUALITY_DATA (prepared shards with document markers, e.g. scripts/offline_corpus.py's corpus
#           where FineWeb cannot be reached), validation loss side by side
# nanogpt:  scripts/nanogpt_side_by_side.sh (karpathy/nanoGPT's train.py vs ours, same model and batch) --
#           needs NANOGPT_DIR, a nanoGPT checkout
# memory:   bench.py --memory on llama_style_350m: DDP vs FSDP, with and without activation checkpointing,
#           on all GPUs here
# eval:     evaluate.py --tasks all,-lambada on a gpt2_124m-sized model (random weights: the time is what counts;
#           issue 13's goal is the whole suite in under 3 minutes) -- needs hellaswag_val.jsonl and evals/
#
# torchao and liger-kernel are optional (requirements-gpu.txt); on a machine without a package index, install
# their wheels into a folder and put it on PYTHONPATH first (docs/benchmarks.md, "GPU extras").
set -uo pipefail
out=${1:-out/gpu_checks}; shift || true
parts=${*:-tests speed extras fp8curve quality nanogpt memory eval}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export TIKTOKEN_GPT2_FILE=${TIKTOKEN_GPT2_FILE:-${SHARED_DATA:-../shared/data}/gpt2.tiktoken}  # offline: the ranks file
# validation loss of run B against run A at each evaluation (both dirs hold metrics.jsonl)
compare_val() { python -c "
import sys
from pathlib import Path
import bench
a, b = (Path(d) for d in sys.argv[1:3])
evals = [[r for r in bench.read_metrics(d) if r['type'] == 'eval'] for d in (a, b)]
print(f'step  {a.name:>16}  {b.name:>16}  rel. diff')
for x, y in zip(*evals):
    print(f\"{x['step']:4d}  {x['val_loss']:16.4f}  {y['val_loss']:16.4f}  {y['val_loss'] / x['val_loss'] - 1:+.2%}\")
" "$1" "$2"; }
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
    extras) for variant in --fused_loss=liger --fp8=linear "--fp8=all --fused_loss=off"; do
              python bench.py configs/gpt2_124m.py --steps 30 --warmup 5 --batch_size=64 $variant 2>&1 \
                | tee -a "$out/extras.txt"
            done ;;
    modes) for mode in reduce-overhead max-autotune-no-cudagraphs; do   # CUDA graphs; Triton matmul templates
             timeout 600 python bench.py configs/gpt2_124m.py --steps 30 --warmup 5 --batch_size=64 \
               --compile_mode=$mode 2>&1 | tee -a "$out/modes.txt"
           done ;;
    fp8curve) python prepare_data.py shakespeare --input "$SHARED_DATA/tinyshakespeare.txt" --tokenizer gpt2 \
                --tiktoken-file "$SHARED_DATA/gpt2.tiktoken" --out "$out/shakespeare" > /dev/null
              for fp8 in off linear; do
                python train.py configs/gpt2_124m.py --data_dir="$out/shakespeare" --out_dir="$out/fp8_$fp8" \
                  --overwrite --fp8=$fp8 --batch_size=16 --total_batch_size=0 --max_iters=300 --lr_decay_iters=300 \
                  --warmup_iters=30 --eval_interval=50 --eval_iters=10 --tasks_interval=0 --sample_tokens=0 \
                  --log_interval=10 --keep_last=1 2>&1 | tail -n 3
              done
              compare_val "$out/fp8_off" "$out/fp8_linear" 2>&1 | tee "$out/fp8curve.txt" ;;
    quality) for preset in gpt2_124m speedrun_124m; do     # the same 200 x 16 x 1024 tokens, schedules compressed
               python train.py configs/$preset.py --data_dir="${QUALITY_DATA:?set QUALITY_DATA to prepared shards}" \
                 --out_dir="$out/quality_$preset" --overwrite --block_size=1024 --batch_size=16 --total_batch_size=0 \
                 --max_iters=200 --lr_decay_iters=200 --warmup_iters=$([ $preset = gpt2_124m ] && echo 20 || echo 0) \
                 $([ $preset = speedrun_124m ] && echo --muon_momentum_warmup=40) --eval_interval=50 --eval_iters=15 \
                 --tasks_interval=0 --sample_tokens=0 --log_interval=25 --keep_last=1 2>&1 | tail -n 3
             done
             compare_val "$out/quality_gpt2_124m" "$out/quality_speedrun_124m" 2>&1 | tee "$out/quality.txt" ;;
    nanogpt) bash scripts/nanogpt_side_by_side.sh "${NANOGPT_DIR:?set NANOGPT_DIR to a nanoGPT checkout}" \
               "$out/side_by_side" 16 60 2>&1 | tail -n 4 | tee "$out/nanogpt.txt" ;;
    memory) python bench.py configs/llama_style_350m.py --memory --steps 10 --warmup 3 --batch_size=8 \
              --compile=False --json "$out/memory_350m.json" 2>&1 | tee "$out/memory.txt" ;;
    eval) python -c "
import dataclasses, os, sys, torch, tokenization
from model import GPT, GPTConfig
cfg = GPTConfig(); os.makedirs(sys.argv[1], exist_ok=True)
tok = tokenization.gpt2_tokenizer(os.path.join(os.environ['SHARED_DATA'], 'gpt2.tiktoken'))
torch.save({'format': 1, 'model_config': dataclasses.asdict(cfg), 'model': GPT(cfg).state_dict(),
            'tokenizer': tok.spec(), 'config': {}, 'step': 0}, os.path.join(sys.argv[1], 'ckpt_0000000.pt'))
" "$out/random_124m" && HELLASWAG_FILE="$SHARED_DATA/hellaswag_val.jsonl" /usr/bin/time -v python evaluate.py \
            --ckpt "$out/random_124m" --tasks all,-lambada --data-dir "$SHARED_DATA/evals" --quiet \
            --tiktoken-file "$SHARED_DATA/gpt2.tiktoken" --out "$out/eval_all.json" 2>&1 | tee "$out/eval.txt" ;;
    *) echo "unknown part $part (tests, speed, extras, modes, fp8curve, quality, nanogpt, memory, eval)"; exit 2 ;;
  esac
done
