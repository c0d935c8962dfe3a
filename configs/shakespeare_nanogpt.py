"""nanoGPT's README CPU recipe, identical, on GPT-2 BPE Tiny Shakespeare: the reference configs/shakespeare.py beats.

nanoGPT: `python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
--lr_decay_iters=2000 --dropout=0.0` with its data swapped for nanoGPT's data/shakespeare (GPT-2 BPE,
vocab padded to 50304, no biases: nanoGPT's train.py default). Same data here, split the same way:

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/shakespeare_nanogpt.py
    python bench.py configs/shakespeare_nanogpt.py --data --steps 50      # ms per iteration

Measured on the 2-core CPU of this repo's development machine: see docs/benchmarks.md.
"""

data_dir = "data/shakespeare"
out_dir = "out/shakespeare_nanogpt"

# model: nanoGPT's (4 x 128, 4 heads, block 64, learned positions, GELU, LayerNorm, tied, no bias)
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
pad_vocab_multiple = 64        # 50257 -> 50304 rows, as nanoGPT's meta-less default

# optimisation: train_shakespeare_char.py
batch_size = 12
total_batch_size = 0
learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta1 = 0.9
beta2 = 0.99
warmup_iters = 100
weight_decay = 0.1
grad_clip = 1.0

# run: --device=cpu --compile=False --eval_iters=20 --log_interval=1
device = "cpu"
dtype = "float32"
compile = False
eval_interval = 250
eval_iters = 20
log_interval = 1
sample_tokens = 0
keep_last = 1
