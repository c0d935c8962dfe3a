"""Shared settings of the tiny preset siblings (`*_tiny.py`): not a preset by itself.

A tiny sibling is `from configs.<preset> import *` (every toggle of the full preset), then
`from configs._tiny import *` (these CPU-sized dims and run settings), then its own head counts.
It trains in seconds on a CPU; CI (tests/test_presets.py) trains each one a few steps.
"""
block_size = 64
n_layer = 2
n_head = 4
n_kv_head = None
n_embd = 64
mlp_hidden = None

batch_size = 8
total_batch_size = 0           # no gradient accumulation
learning_rate = 3e-3
min_lr = None
max_iters = 60
warmup_iters = 10
lr_decay_iters = None

compile = False
dtype = "float32"
device = "auto"
eval_interval = 30
eval_iters = 4
log_interval = 10
ckpt_interval = 0
keep_last = 1
tasks_interval = 0
sample_tokens = 0
