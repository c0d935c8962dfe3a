"""Tiny sibling of gpt_star_127m: ALiBi, parallel residual, cosine held for the last 10%; trains in
seconds on a CPU.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/gpt_star_127m_tiny.py
"""
from configs.gpt_star_127m import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare"
out_dir = "out/gpt_star_127m_tiny"
