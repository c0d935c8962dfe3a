"""nanoGPT's README CPU recipe, identical, on GPT-2 BPE Tiny Shakespeare: the reference configs/shakespeare.py beats.

nanoGPT: `python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
--lr_decay_iters=2000 --dropout=0.0` with its data swapped for nanoGPT's data/shakespeare (GPT-2 BPE,
vocab padded to 50304, no biases: nanoGPT's train.py default). Same data here, split the same way:

    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare
    python train.py configs/shakespeare_nanogpt.py
    python bench.py configs/shakespeare_nanogpt.py --data --steps 50      # ms per iteration

Measured on the 2-core CPU of this repo's development machine: see docs/benchmarks.md.
"""

from configs.shakespeare_char_nanogpt import *  # noqa: F401,F403  (the same run and model, on GPT-2 BPE)

data_dir = "data/shakespeare"
out_dir = "out/shakespeare_nanogpt"
pad_vocab_multiple = 64        # 50257 -> 50304 rows, as nanoGPT's meta-less default
