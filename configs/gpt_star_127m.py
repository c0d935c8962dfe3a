"""GPT-127* (SEEDS.md #2): 6 wide layers, ALiBi, parallel residual; trained at 512, used at 1024-8192.

Data: OpenWebText (+ parts of The Pile in the original), GPT-2 BPE, `<|endoftext|>` between documents:

    python prepare_data.py openwebtext --out data/openwebtext
    torchrun --standalone --nproc_per_node=4 train.py configs/gpt_star_127m.py

Published setup: 6 layers, d_model 1024, 8 heads (head_dim 128), ALiBi, GPT-J parallel residual with
one shared norm, no dropout; 1024 x 512 tokens per step, 51,000 steps (~26B tokens, one epoch), warmup
4000, weight decay 0.1, lr 6e-4 -> 6e-5 cosine, then held for the final 10% of steps.
Parameters: 127,078,400 (tied embedding padded to 50304 rows, counted once).
Length extrapolation: `python perplexity.py out/gpt_star_127m --data data/openwebtext --ctx 512,1024,2048,4096`.
"""

data_dir = "data/openwebtext"
out_dir = "out/gpt_star_127m"

block_size = 512
n_layer = 6
n_head = 8
n_embd = 1024
pos_emb = "alibi"
parallel_residual = True
dropout = 0.0

batch_size = 64                # per GPU; 64 x 512 x 4 GPUs x 4 accumulation = 524,288 = 1024 x 512
total_batch_size = 524288
learning_rate = 6e-4
min_lr = 6e-5
weight_decay = 0.1
max_iters = 51000
warmup_iters = 4000
lr_hold_frac = 0.1             # cosine ends at 90% of the steps, min_lr held for the last 10%

compile = True
eval_interval = 1000
ckpt_interval = 1000           # resuming model + optimizer reliably was a hard requirement
