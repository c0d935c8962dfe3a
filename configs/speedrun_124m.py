"""Speed-run GPT-2 124M: the modded-nanogpt / nanochat recipe as this repo's toggles, for GPT-2 small's
quality from far fewer tokens than configs/gpt2_124m.py (10B tokens). FineWeb, GPT-2 BPE, <|endoftext|>
before every document:

    python prepare_data.py HuggingFaceFW/fineweb --name sample-10BT --streaming --out data/fineweb10B
    torchrun --standalone --nproc_per_node=8 train.py configs/speedrun_124m.py      # 1 GPU: accumulation x8

Taken from modded-nanogpt (its records of late 2024 to early 2025; the ideas are also nanochat's):
- model: 12 x 768 with 6 heads of 128, rotary positions, RMSNorm, squared-ReLU MLP, no biases, QK-norm,
  an untied head, logit soft-cap 15, three value-embedding tables (layers 0-2 and 9-11), x0 mixing, U-net
  skips, zero-initialised output projections, sliding windows (three 512-token layers, then a full one)
  and document masking at <|endoftext|> (50256).
- data: BOS-aligned rows: each 2048-token row starts at a document, documents packed best-fit.
- optimizer: Muon (lr 0.05, momentum 0.85 -> 0.95 over the first 300 steps, no weight decay) for the
  blocks' matrices; Adam (0.8, 0.95) for the embeddings (lr 0.6), the head (0.008) and the scalars (0.04);
  no gradient clipping; the lr stays at its peak, then falls linearly over the last 40% to 10% (wsd).
- 1,400 steps of 524,288 tokens: 734M tokens, what the January 2025 record trained on.
Left out, and why: FP8 matmuls and custom kernels (throughput: the GPU issue), window-size and batch-size
warm-up and YaRN (one fixed shape keeps torch.compile to one graph), multi-token prediction, bigram hash
embeddings, NorMuon / Polar Express (later records; not in torch.optim), 48K-token rows per GPU (the SDPA
mask fallback is quadratic in the row length; 2048 with document masks keeps it small). What each toggle
is worth at small scale on a CPU, with its seed noise: docs/benchmarks.md (`bench.py --ablate`).
"""

data_dir = "data/fineweb10B"
out_dir = "out/speedrun_124m"
loader = "bos_aligned"

# model
block_size = 2048
n_layer = 12
n_head = 6
n_embd = 768
pos_emb = "rope"
norm = "rmsnorm"
mlp = "relu2"
bias = False
qk_norm = True
tie_embeddings = False
dropout = 0.0
logit_softcap = 15.0
value_embeds = 3
x0_mix = True
unet_skips = True
zero_init_proj = True
window_pattern = "SSSL"
window_short = 512
window_long = None
doc_mask_token = 50256         # GPT-2's <|endoftext|>: prepare_data.py puts it before every document

# optimizer and schedule
optimizer = "muon"
muon_lr = 0.05
muon_momentum = 0.95
muon_momentum_start = 0.85
muon_momentum_warmup = 300
muon_weight_decay = 0.0
learning_rate = 0.008          # the reference the schedule scales; every group has its own peak below
embed_lr = 0.6
head_lr = 0.008
scalar_lr = 0.04
beta1 = 0.8
beta2 = 0.95
weight_decay = 0.0
grad_clip = 0.0
lr_schedule = "wsd"
warmup_iters = 0
cooldown_frac = 0.4
min_lr_ratio = 0.1
max_iters = 1400

batch_size = 32                # 32 x 2048 per GPU micro-step
total_batch_size = 524288      # 2**19 tokens per optimizer step

# run
compile = True
dtype = "auto"
eval_interval = 125
eval_iters = 20
tasks = "quick"                # the multi-task score while it trains (evaluate.py; needs the eval files or the hub)
tasks_interval = 250
ckpt_interval = 700
keep_last = 2
