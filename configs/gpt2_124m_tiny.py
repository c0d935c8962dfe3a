"""Tiny sibling of gpt2_124m: the same toggles (learned positions, GELU, LayerNorm, tied, padded vocab,
AdamW 0.9/0.95, warmup + cosine to 10%) at 2 x 64; trains in seconds on a CPU.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/gpt2_124m_tiny.py
"""
from configs.gpt2_124m import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare"
out_dir = "out/gpt2_124m_tiny"
