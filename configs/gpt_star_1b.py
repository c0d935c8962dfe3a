"""GPT-1B*-style (SEEDS.md #2): GPT* architecture at ~1B parameters with an 8-bit AdamW and a staged
sequence-length warmup 128 -> 192 -> 256 -> 384 -> 512 over the first 30% of the steps.

Data: as gpt_star_127m (GPT-2 BPE, `<|endoftext|>` between documents):

    python prepare_data.py openwebtext --out data/openwebtext
    torchrun --standalone --nproc_per_node=8 train.py configs/gpt_star_1b.py

SEEDS.md gives the GPT-1B* options, not its dimensions: 18 layers x 2048 (16 heads of 128) is our
choice in the GPT* spirit (few wide layers), 1,009,401,856 parameters. The 8-bit optimizer needs
bitsandbytes on CUDA (`pip install bitsandbytes`); use --optimizer=adamw elsewhere.
"""
from configs.gpt_star_127m import *  # noqa: F401,F403

out_dir = "out/gpt_star_1b"

n_layer = 18
n_head = 16
n_embd = 2048

batch_size = 16                # per GPU; 16 x 512 x 8 GPUs x 8 accumulation = 524,288 tokens
learning_rate = 3e-4
min_lr = 3e-5
optimizer = "adamw8bit"
seq_len_warmup = (128, 192, 256, 384)
seq_len_warmup_frac = 0.3
