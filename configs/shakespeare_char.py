"""The modern recipe on nanoGPT's character-level Tiny Shakespeare: to beat nanoGPT's baby GPT
(configs/shakespeare_char_nanogpt.py, its README's "I only have a macbook" run) on the same CPU, in wall time.

    python prepare_data.py shakespeare_char --input ../shared/data/tinyshakespeare.txt --out data/shakespeare_char
    python train.py configs/shakespeare_char.py

Tuned on this repo's 2-core development machine; the measurements and the ablations are in docs/benchmarks.md
("Time to quality: nanoGPT's shakespeare_char").
"""
from configs.shakespeare_char_nanogpt import *  # noqa: F401,F403

out_dir = "out/shakespeare_char"

# model: the same 4 x 128, with the modern toggles
pos_emb = "rope"
mlp = "relu2"
norm = "rmsnorm"
qk_norm = True
tie_embeddings = False
zero_init_proj = True

# optimisation: Muon for the hidden matrices, AdamW for the rest, warmup-stable-decay
optimizer = "muon"
muon_lr = 0.02
muon_ns_steps = 3              # two fewer Newton-Schulz iterations: ~15% off each step here, ~0.01 in loss
learning_rate = 2e-3           # AdamW's groups (embeddings, head, gains)
min_lr = 0.0
lr_schedule = "wsd"
cooldown_frac = 0.9            # a long decay: the loss falls all along, so nanoGPT's final loss comes sooner
warmup_iters = 50
max_iters = 1100               # the steps that fit nanoGPT's own wall time on this machine (~100 s)
eval_interval = 50             # (20 batches, ~0.2 s each: the curve and the time to a loss, read off metrics.jsonl)
