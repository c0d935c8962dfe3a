#!/usr/bin/env bash
# nanoGPT's own train.py and ours on the same GPU in the same hour: the same model (GPT-2 124M as our
# gpt2_124m preset: biases, learned positions, GELU, vocab padded to 50304, context 1024), the same micro-batch,
# both compiled in bf16, on the same tokens (random ids in nanoGPT's train.bin/val.bin format, which our loader
# reads too). Each logs every iteration with a device sync; the median of the iterations after the first
# WARMUP gives ms/iter and tokens/s.
#
#   bash scripts/nanogpt_side_by_side.sh NANOGPT_DIR [OUT_DIR] [BATCH] [ITERS] [--key=value ...]
#
# NANOGPT_DIR: a checkout of github.com/karpathy/nanoGPT kept outside this repository (or in a folder git
# ignores); its code is only run, never committed here. --key=value arguments go to both train.py's (keys both
# know: n_layer, n_head, n_embd, block_size, device, dtype, compile), e.g. a CPU smoke test:
#   SHARED_DATA=../shared/data bash scripts/nanogpt_side_by_side.sh /tmp/nanoGPT /tmp/sbs 4 8 --device=cpu --compile=False \
#     --dtype=float32 --n_layer=1 --n_embd=64 --n_head=2 --block_size=64
set -euo pipefail
nano=$(cd "$1" && pwd); out=${2:-out/side_by_side}; batch=${3:-16}; iters=${4:-60}; shift $(( $# < 4 ? $# : 4 ))
common=(--block_size=1024 --compile=True --dtype=bfloat16 "$@")
mkdir -p "$out"; out=$(cd "$out" && pwd); repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1
# our train.py loads the GPT-2 tokenizer (for samples): offline, from $SHARED_DATA's ranks file
[ -n "${SHARED_DATA:-}" ] && export TIKTOKEN_GPT2_FILE=${TIKTOKEN_GPT2_FILE:-$SHARED_DATA/gpt2.tiktoken}
python - "$out/data" <<'EOF'
import os, sys
import numpy as np
os.makedirs(sys.argv[1], exist_ok=True)
rng = np.random.default_rng(0)
for split, n in (("train", 20_000_000), ("val", 1_000_000)):   # headerless uint16, nanoGPT's format
    rng.integers(0, 50257, n, dtype=np.uint16).tofile(os.path.join(sys.argv[1], f"{split}.bin"))
EOF
# nanoGPT: its data_dir is os.path.join('data', dataset), so an absolute dataset path is used as it is
(cd "$nano" && python train.py --dataset="$out/data" --out_dir="$out/nanogpt_run" --batch_size="$batch" \
   --gradient_accumulation_steps=1 --max_iters="$iters" --lr_decay_iters="$iters" --eval_interval=1000000 \
   --eval_iters=1 --log_interval=1 --bias=True --wandb_log=False --always_save_checkpoint=False \
   "${common[@]}") 2>&1 | tee "$out/nanogpt.log"
(cd "$repo" && python train.py configs/gpt2_124m.py --data_dir="$out/data" --out_dir="$out/ours_run" --overwrite \
   --batch_size="$batch" --total_batch_size=0 --max_iters="$iters" --lr_decay_iters="$iters" --eval_iters=1 \
   --eval_interval="$iters" --tasks_interval=0 --sample_tokens=0 --log_interval=1 --keep_last=1 \
   "${common[@]}") 2>&1 | tee "$out/ours.log"
python - "$out" "$batch" "${common[@]}" <<'EOF'
import json, re, statistics, sys
out, batch = sys.argv[1], int(sys.argv[2])
block = int([a.split("=")[1] for a in sys.argv[3:] if a.startswith("--block_size=")][-1])  # the last one given
WARMUP = 10                                    # compilation and allocator warm-up
nano = [float(m) for m in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", open(f"{out}/nanogpt.log").read(), re.M)]
ours = [r["ms"] for r in map(json.loads, open(f"{out}/ours_run/metrics.jsonl")) if r["type"] == "train"]
rows = {}
for name, ms in (("nanoGPT train.py", nano), ("this repo's train.py", ours)):
    if len(ms) <= WARMUP:
        sys.exit(f"{name}: only {len(ms)} timed iterations; run more than {WARMUP}")
    med = statistics.median(ms[WARMUP:])
    rows[name] = (med, batch * block / med * 1000)
    print(f"{name:22s} {med:8.1f} ms/iter  {rows[name][1]:>12,.0f} tokens/s  (median of {len(ms) - WARMUP})")
(n_ms, n_tok), (o_ms, o_tok) = rows.values()
print(f"ours / nanoGPT: {o_tok / n_tok:.2f}x tokens/s")
json.dump({"batch": batch, "block_size": block, "nanogpt_ms": n_ms, "ours_ms": o_ms, "nanogpt_tok_s": n_tok,
           "ours_tok_s": o_tok, "speedup": o_tok / n_tok}, open(f"{out}/side_by_side.json", "w"), indent=1)
EOF
