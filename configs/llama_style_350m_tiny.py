"""Tiny sibling of llama_style_350m (the llama_style toggles; trains in seconds on a CPU).

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/llama_style_350m_tiny.py
"""
from configs.llama_style_350m import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare"
out_dir = "out/llama_style_350m_tiny"
n_layer = 3                    # deeper than the 124m sibling, like its parent
n_kv_head = 2
