"""The model `python bench.py --ablate` varies one toggle at a time: 4 x 128 on Tiny Shakespeare with a
2048-piece sentencepiece vocabulary, so the transformer blocks (not a 50K-row output layer) dominate the
time and the toggles' speed differences show. About a minute per variant on a 2-core CPU.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer sentencepiece --vocab-size 2048 --out data/shakespeare_sp
    python bench.py --ablate configs/ablation.py --tokens 500000 --out-dir out/ablate
"""

data_dir = "data/shakespeare_sp"
out_dir = "out/ablation"
vocab_size = 2048

block_size = 128
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

batch_size = 16
total_batch_size = 0
learning_rate = 2e-3
max_iters = 250                # bench.py --ablate sets max_iters from --tokens
warmup_iters = 20
weight_decay = 0.1

compile = False
dtype = "float32"
eval_interval = 50
eval_iters = 10
log_interval = 10
sample_tokens = 0
keep_last = 1
