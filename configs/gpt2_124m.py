"""GPT-2 124M reproduction ("Let's reproduce GPT-2", SEEDS.md #3): FineWeb-Edu sample-10BT, one epoch.

Data (GPT-2 BPE, 100M-token shards, shard 0 = validation):

    python prepare_data.py fineweb-edu-10B --out data/fineweb_edu10B
    torchrun --standalone --nproc_per_node=3 train.py configs/gpt2_124m.py

Published setup: 12 x 768, 12 heads, learned positions, GELU, LayerNorm, tied embeddings, vocab padded
50257 -> 50304; 524,288 tokens per step (gradient accumulation), 19,073 steps, AdamW (0.9, 0.95, 1e-8,
fused on CUDA), weight decay 0.1, grad clip 1.0, lr 6e-4 with 715 warmup steps, cosine to 10%; bf16
autocast, TF32, torch.compile, flash attention; HellaSwag during training. The model and optimizer
defaults (config.py) are exactly this recipe; this file sets the data and the run.
Parameters: 124,475,904 with the padded 50304-row embedding (124,439,808 with 50257 rows).
"""

data_dir = "data/fineweb_edu10B"
out_dir = "out/gpt2_124m"

batch_size = 64                # 64 x 1024 per GPU micro-step (drop to 16/32 on smaller GPUs: accumulation grows)
total_batch_size = 524288      # 2**19 tokens per optimizer step

compile = True
dtype = "auto"                 # bf16 on A100/H100
eval_interval = 250
eval_iters = 20
tasks = "hellaswag"            # all 10,042, llm.c's completion style (comparable with its GPT-2 numbers)
tasks_style = "completion"
tasks_interval = 250
ckpt_interval = 5000           # the seed's checkpoints every 50 steps filled 179 GB
keep_last = 2
