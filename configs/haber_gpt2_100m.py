"""HaberGPT2 (SEEDS.md #1): a ~100M GPT on Turkish news with an 8K sentencepiece vocabulary.

Data (sentencepiece unigram 8192 trained on the corpus, every sample `BOS text EOS`, concatenated):

    python prepare_data.py news-tr --out data/news_tr
    torchrun --standalone --nproc_per_node=2 train.py configs/haber_gpt2_100m.py

Published setup: 32 layers, d_model 512, 8 heads with 4 KV heads (GQA), RoPE, GELU MLP, LayerNorm,
tied embeddings, seq 512; AdamW (0.9, 0.95), lr 1.8e-3, 2000 warmup steps, cosine to 10%,
552,960 tokens per step (1080 sequences), 20K steps (~11B tokens, 11 epochs), 2x T4 in fp16 with
loss scaling (dtype=auto picks fp16 + GradScaler on GPUs without bf16, bf16 elsewhere).
Parameters (our count): 96,666,624 (tied 8192 x 512 embedding counted once); the seed reports ~108M.
"""

data_dir = "data/news_tr"
out_dir = "out/haber_gpt2_100m"

vocab_size = 8192
block_size = 512
n_layer = 32
n_head = 8
n_kv_head = 4
n_embd = 512
pos_emb = "rope"
mlp = "gelu"
norm = "layernorm"
tie_embeddings = True
dropout = 0.0

batch_size = 36                # per GPU; 36 x 512 x 2 GPUs x 15 accumulation = 552,960 tokens
total_batch_size = 552960
learning_rate = 1.8e-3
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
max_iters = 20000
warmup_iters = 2000
min_lr_ratio = 0.1

dtype = "auto"                 # T4: fp16 + GradScaler (no bf16, no flash attention)
compile = True
eval_interval = 500
ckpt_interval = 1000
