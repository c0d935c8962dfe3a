"""Tiny sibling of haber_gpt2_100m: sentencepiece vocabulary, GQA (4 query heads, 2 KV heads), RoPE,
GELU, LayerNorm, tied; trains in seconds on a CPU on Tiny Shakespeare with a small sentencepiece vocab.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer sentencepiece --vocab-size 2048 --out data/shakespeare_sp
    python train.py configs/haber_gpt2_100m_tiny.py
"""
from configs.haber_gpt2_100m import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare_sp"
out_dir = "out/haber_gpt2_100m_tiny"
vocab_size = 2048
n_kv_head = 2                  # group of 2, as 8 heads / 4 KV heads
