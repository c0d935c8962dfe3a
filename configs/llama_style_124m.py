"""GPT-2 with RoPE + GQA + SwiGLU + RMSNorm (SEEDS.md #5, the llm.c-based course homework), 124M size.

Data: FineWeb sample-10BT (not -Edu), GPT-2 BPE:

    python prepare_data.py HuggingFaceFW/fineweb --name sample-10BT --streaming --out data/fineweb10B
    python train.py configs/llama_style_124m.py

Published setup: pre-norm, RoPE, GQA group 2 (12 query heads, 6 KV heads), SwiGLU with hidden 2/3*4d
(rounded up to a multiple of 64: 2048), RMSNorm; 524,288 tokens per step (micro-batch 8 x 1024),
AdamW (0.9, 0.95, 1e-8), lr 1.2e-3, 715 warmup steps from 10% of the peak, cosine to 10% over 19,073
steps, weight decay 0.1, bf16 autocast (TF32 matmuls), torch.compile; 1x A100. The lowest-val-loss
checkpoint (best.pt) is the one kept. Reported HellaSwag acc_norm 30.78%.
"""

data_dir = "data/fineweb10B"
out_dir = "out/llama_style_124m"

pos_emb = "rope"
n_kv_head = 6
mlp = "swiglu"
norm = "rmsnorm"
bias = False                   # LLaMA-style: no biases (SEEDS does not say; exports to HF Llama as is)

batch_size = 8
total_batch_size = 524288
learning_rate = 1.2e-3
warmup_iters = 715
warmup_start_ratio = 0.1
max_iters = 19073
weight_decay = 0.1

compile = True
tasks = "hellaswag"            # all 10,042, lm-evaluation-harness style (how the seed reported it)
tasks_interval = 250
ckpt_interval = 2000
