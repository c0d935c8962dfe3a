"""GPT-2 with RoPE + GQA + SwiGLU + RMSNorm (SEEDS.md #5), 350M size (GPT-2 medium dims: 24 x 1024, 16 heads).

    python prepare_data.py HuggingFaceFW/fineweb --name sample-10BT --streaming --out data/fineweb10B
    python train.py configs/llama_style_350m.py

Same recipe as llama_style_124m with GQA group 2 (8 KV heads). Reported HellaSwag acc_norm 33.52%.
"""
from configs.llama_style_124m import *  # noqa: F401,F403

out_dir = "out/llama_style_350m"
n_layer = 24
n_head = 16
n_kv_head = 8
n_embd = 1024
