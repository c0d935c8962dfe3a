"""Tiny sibling of gpt2_124m_lightning (no dropout, weight decay 0.3) at 2 x 64; trains in seconds on a CPU.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/gpt2_124m_lightning_tiny.py
"""
from configs.gpt2_124m_lightning import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare"
out_dir = "out/gpt2_124m_lightning_tiny"
