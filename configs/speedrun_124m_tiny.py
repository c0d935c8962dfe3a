"""Tiny sibling of speedrun_124m: every toggle of the speed-run recipe (value embeddings, x0 mixing, U-net
skips, windows, document masks, soft-cap, Muon with its per-group lrs, BOS-aligned rows) at 2 x 64;
trains in seconds on a CPU. Tiny Shakespeare split into blank-line paragraphs, <|endoftext|> before each:

    python prepare_data.py ../shared/data/tinyshakespeare.txt --sample-by paragraph --tokenizer gpt2 --boundary eot \
        --val-tokens 33000 --out data/shakespeare_docs
    python train.py configs/speedrun_124m_tiny.py
"""
from configs.speedrun_124m import *  # noqa: F401,F403
from configs._tiny import *  # noqa: F401,F403

data_dir = "data/shakespeare_docs"
out_dir = "out/speedrun_124m_tiny"
value_embeds = 1               # one table (layers 0 and 1): two layers have room for no more
window_short = 16              # a window shorter than the 64-token rows
muon_momentum_warmup = 20
learning_rate = 0.008          # _tiny's 3e-3 is an AdamW peak; the speed-run's groups keep their own
