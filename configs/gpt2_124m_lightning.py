"""GPT-2 pretraining workflow (PyTorch Lightning, SEEDS.md #4): GPT-2 small, no dropout, weight decay 0.3.

Data: FineWeb-Edu 10B streamed from the Hugging Face hub and tokenized while sharding (no full download):

    python prepare_data.py fineweb-edu-10B --streaming --out data/fineweb_edu10B
    torchrun --standalone --nproc_per_node=8 train.py configs/gpt2_124m_lightning.py

Published setup: GPT-2 small without dropout, vocab 50304, bf16 mixed precision, grad clip 1.0,
weight decay 0.3, warmup + cosine; DDP. Lightning's loop is our train.py loop; the differences from
gpt2_124m are the weight decay (0.3) and the explicit dropout 0.
"""
from configs.gpt2_124m import *  # noqa: F401,F403

out_dir = "out/gpt2_124m_lightning"
dropout = 0.0
weight_decay = 0.3
grad_clip = 1.0
dtype = "auto"                 # bf16 where the GPU has it
tasks_interval = 0             # the workflow did not evaluate HellaSwag during training
