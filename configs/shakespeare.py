"""The CPU recipe: GPT-2 BPE Tiny Shakespeare, nanoGPT's architecture and schedule, made fast on a CPU.

Data: nanoGPT's data/shakespeare split (last 10% of the characters is validation, train and val encoded
separately, no end-of-text tokens), so validation losses compare with nanoGPT's directly:

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/shakespeare.py

Same model, batch and schedule as configs/shakespeare_nanogpt.py (nanoGPT's README CPU recipe); the
step is cheaper: bf16 autocast (AVX-512 BF16 matmuls; softmax, loss, weights and AdamW stay fp32), and,
once model.py has it, the fused chunked output layer + loss and fused AdamW (docs/benchmarks.md).
Tried and not kept: context 256 x batch 3 with 8 layers, RoPE and dropout 0.1 reached the same
validation loss per step (5.02 vs 5.05 at step 600) at 1.5x the cost per step.
"""
from configs.shakespeare_nanogpt import *  # noqa: F401,F403

out_dir = "out/shakespeare"
dtype = "bfloat16"             # CPU autocast
log_interval = 10
