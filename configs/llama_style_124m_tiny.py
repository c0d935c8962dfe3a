"""Tiny sibling of llama_style_124m: RoPE, GQA group 2, SwiGLU, RMSNorm, warmup from 10%; trains in
seconds on a CPU.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/llama_style_124m_tiny.py
"""
from configs.llama_style_124m import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare"
out_dir = "out/llama_style_124m_tiny"
n_kv_head = 2                  # group 2: 4 query heads share 2 KV heads
