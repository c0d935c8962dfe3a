"""The modern recipe on nanoGPT's character-level Tiny Shakespeare: to beat nanoGPT's baby GPT
(configs/shakespeare_char_nanogpt.py, its README's "I only have a macbook" run) on the same CPU, in wall time.

    python prepare_data.py shakespeare_char --input ../shared/data/tinyshakespeare.txt --out data/shakespeare_char
    python train.py configs/shakespeare_char.py

Tuned on this repo's 2-core development machine; the measurements and the ablations are in docs/benchmarks.md
("Time to quality: nanoGPT's shakespeare_char").
"""
from configs.shakespeare_char_nanogpt import *  # noqa: F401,F403

out_dir = "out/shakespeare_char"

# model: 4 layers as nanoGPT's, but 64 wide (2 heads of 32) with twice its context, and the modern toggles. On two
# CPU cores a narrow model with a longer context learns more per second than 4 x 128 at context 64 (docs/benchmarks.md)
n_embd = 64
n_head = 2
block_size = 128
pos_emb = "rope"
mlp = "relu2"
norm = "layernorm"             # not RMSNorm: the same loss here (1.5330 vs 1.5366, 2 seeds), a 4-11% cheaper eager step
qk_norm = True                 # 0.04 lower final loss (1.5750 without, 2 seeds): worth its 10-18% of the step
tie_embeddings = False
zero_init_proj = True

# optimisation: Muon for the hidden matrices, AdamW for the rest, warmup-stable-decay
batch_size = 24                # 3,072 tokens a step (nanoGPT's 768): the step's cost grows less than its tokens
optimizer = "muon"
muon_lr = 0.02
muon_ns_steps = 3              # two fewer Newton-Schulz iterations: ~15% off each step here, ~0.01 in loss
learning_rate = 4e-3           # AdamW's groups (embeddings, head, gains)
min_lr = 0.0
lr_schedule = "wsd"
cooldown_frac = 0.9            # a long decay: the loss falls all along, so nanoGPT's final loss comes sooner
warmup_iters = 50
max_iters = 1000               # the steps that fit in nanoGPT's own wall time on this machine (~95 s)
eval_interval = 50
eval_iters = 5                 # 5 x 24 x 128 = 15,360 tokens per evaluation, as nanoGPT's 20 x 12 x 64
