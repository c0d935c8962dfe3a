"""nanoGPT's character-level "baby GPT" from its README ("I only have a macbook"), identical:

    nanoGPT: python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
             --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
             --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

Same data, split the same way (the first 90% of the characters train, the last 10% validation; one id per
character, the sorted set of the corpus's characters, as data/shakespeare_char/prepare.py makes it):

    python prepare_data.py shakespeare_char --input ../shared/data/tinyshakespeare.txt --out data/shakespeare_char
    python train.py configs/shakespeare_char_nanogpt.py

nanoGPT publishes val loss 1.88 for it. configs/shakespeare_char.py is the modern recipe on the same data and
machine; scripts/shakespeare_char_side_by_side.py runs nanoGPT's own code and both configs back to back.
"""

data_dir = "data/shakespeare_char"
out_dir = "out/shakespeare_char_nanogpt"

# model: 4 x 128, 4 heads, block 64, learned positions, GELU, LayerNorm, tied, no bias (nanoGPT's default)
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
pad_vocab_multiple = 1         # 65 rows, as meta.pkl's vocab_size

# optimisation: config/train_shakespeare_char.py and nanoGPT's train.py defaults
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

# run: --device=cpu --compile=False --eval_iters=20 --log_interval=1 (float32 on a CPU, as nanoGPT's)
device = "cpu"
dtype = "float32"
compile = False
eval_interval = 250
eval_iters = 20
log_interval = 1
sample_tokens = 0
keep_last = 1
