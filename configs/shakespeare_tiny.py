"""A tiny GPT on Tiny Shakespeare (GPT-2 BPE) that trains in a few minutes on a laptop CPU.

    python prepare_data.py shakespeare --tokenizer gpt2 --out data/shakespeare
    python train.py configs/shakespeare_tiny.py
"""

data_dir = "data/shakespeare"
out_dir = "out/shakespeare_tiny"

# model: 4 layers x 128 wide (the tied 50304 x 128 embedding is most of its 7.2M parameters)
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

# 8 x 128 = 1,024 tokens per step, no accumulation on one process
batch_size = 8
total_batch_size = 0

learning_rate = 2e-3
max_iters = 500
warmup_iters = 25
min_lr_ratio = 0.1
weight_decay = 0.1

eval_interval = 100
eval_iters = 10
log_interval = 25
keep_last = 2
sample_tokens = 64
