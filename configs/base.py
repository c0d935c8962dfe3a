"""Every config key with its default: the GPT-2 124M reproduction (FineWeb-Edu 10B, 524,288-token steps).

Presets derive from this file without copying it:

    from configs.base import *   # noqa: F401,F403
    n_layer = 6
    max_iters = 1000

Keys are the public top-level simple values of a config file (names starting with `_`, modules and
functions are ignored); any key can be overridden on the command line with `--key=value`.
These values equal train.py's dataclass defaults (a test checks it).
"""

# --- model (model.GPTConfig) ------------------------------------------------------------------
block_size = 1024            # context length (tokens)
vocab_size = 50257           # the tokenizer's real vocabulary: must equal meta.json's tokenizer
pad_vocab_multiple = 64      # embedding / lm_head rows rounded up to a multiple of this (50257 -> 50304)
n_layer = 12
n_head = 12
n_kv_head = None             # None = n_head (multi-head); fewer = grouped-query; 1 = multi-query
n_embd = 768
pos_emb = "learned"          # learned | rope | alibi | none
rope_theta = 10000.0
mlp = "gelu"                 # gelu | swiglu | relu2
mlp_hidden = None            # None = 4 * n_embd (swiglu: 2/3 of that, rounded up to 64)
norm = "layernorm"           # layernorm | rmsnorm
norm_eps = 1e-5
parallel_residual = False    # GPT-J style x + attn(ln(x)) + mlp(ln(x))
tie_embeddings = True
bias = True
dropout = 0.0
qk_norm = False

# --- data ---------------------------------------------------------------------------------------
data_dir = "data/fineweb10B"  # output of prepare_data.py: meta.json + *_train_*.bin + *_val_*.bin
batch_size = 16               # micro-batch per rank, in sequences
total_batch_size = 524288     # tokens per optimizer step over all ranks -> gradient accumulation
                              # = total / (batch_size * block_size * world_size); 0 = no accumulation
seq_len_warmup = ()           # staged sequence lengths before block_size, e.g. (128, 192, 256, 384)
seq_len_warmup_frac = 0.0     # ...spread equally over this fraction of max_iters (GPT-1B*: 0.3)

# --- optimizer ----------------------------------------------------------------------------------
optimizer = "adamw"           # adamw (fused on CUDA) | muon (torch.optim.Muon on hidden matrices,
                              # AdamW on embeddings/head/gains/biases) | adamw8bit (bitsandbytes)
learning_rate = 6e-4          # peak lr
weight_decay = 0.1            # on 2-D weights only (model.param_groups)
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
grad_clip = 1.0               # max global gradient norm; 0 = off
muon_lr = 0.02                # optimizer=muon: peak lr of the Muon group (scaled by the same schedule)
muon_momentum = 0.95

# --- learning-rate schedule ---------------------------------------------------------------------
max_iters = 19073             # optimizer steps
lr_schedule = "cosine"        # cosine | wsd | constant
warmup_iters = 715            # linear warmup steps
warmup_start_ratio = 0.0      # warmup starts at this fraction of the peak (0.1 = "warmup from 10%")
lr_decay_iters = None         # cosine reaches min_lr here; None = max_iters * (1 - lr_hold_frac)
lr_hold_frac = 0.0            # cosine: hold min_lr for the final fraction of steps (GPT*: 0.1)
min_lr = None                 # floor of the schedule; None = learning_rate * min_lr_ratio
min_lr_ratio = 0.1
cooldown_frac = 0.2           # wsd: the final fraction of steps decays to min_lr
cooldown_shape = "linear"     # wsd: linear | 1-sqrt

# --- run ----------------------------------------------------------------------------------------
out_dir = "out"               # checkpoints, config.json, metrics.jsonl, wandb/
eval_interval = 250           # val loss (+ sample, + HellaSwag if due) every N steps and at the end
eval_iters = 20               # fixed validation batches per rank (0 = no validation)
log_interval = 10             # log line + metrics.jsonl row every N steps
ckpt_interval = 0             # checkpoint every N steps (0 = every eval_interval); always at the end
keep_last = 3                 # ckpt_*.pt files kept (best.pt, the lowest val loss, is kept besides)
dtype = "auto"                # auto (bf16 if the GPU has it, else fp16 + GradScaler; fp32 on CPU/MPS)
                              # | float32 | bfloat16 | float16
compile = False               # torch.compile (checkpoints still hold plain parameter names)
compile_mode = "default"      # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
                              # (autotuned matmul kernels: minutes more compilation, see docs/benchmarks.md)
fused_loss = "auto"            # auto | on | off: chunked fused output layer + loss; auto = on for CPU, where it
                              # halves the step of small models; on GPU the compiled full-logits path is used
device = "auto"               # auto (cuda > mps > cpu) | cpu | cuda | mps
wandb_log = False             # log to Weights & Biases (WANDB_MODE=offline works)
wandb_project = "gpt"
wandb_run_name = ""
init_from = "scratch"         # scratch | resume (= --resume) | gpt2 | gpt2-medium | ... (needs transformers)
resume = ""                   # "" | latest (bare --resume: newest ckpt in out_dir) | a checkpoint file or dir
seed = 1337
max_nonfinite = 5             # this many non-finite losses in a row stop the run (updates are skipped)
sample_tokens = 64            # print a sample of this many tokens at each eval (0 = off)
hellaswag_interval = 0        # HellaSwag accuracy every N steps, a multiple of eval_interval (0 = off)
hellaswag_limit = 0           # examples scored (0 = all 10,042)
hellaswag_data = ""           # path of hellaswag_val.jsonl ("" = $HELLASWAG_FILE or download)
parallelism = "ddp"           # ddp | fsdp: FSDP2 shards weights, grads and optimizer state (docs/multinode.md)
activation_checkpointing = "none"  # none | block: recompute each block's activations in backward
