"""Tiny sibling of gpt_star_1b: ALiBi, parallel residual and the staged sequence-length warmup
(16 -> 24 -> 32 -> 48 before 64, over 30% of the steps); trains in seconds on a CPU.

bitsandbytes' 8-bit AdamW needs CUDA, so the tiny sibling uses AdamW unless --optimizer=adamw8bit
is given on a GPU machine.

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/gpt_star_1b_tiny.py
"""
from configs.gpt_star_1b import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare"
out_dir = "out/gpt_star_1b_tiny"
optimizer = "adamw"
seq_len_warmup = (16, 24, 32, 48)  # the 128..384 stages scaled to block_size 64
