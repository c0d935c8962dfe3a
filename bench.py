"""Measure training and sampling speed, compare architecture toggles, and plot loss curves.

    python bench.py configs/gpt2_124m.py --steps 20 --compile      # tokens/s, ms/step, MFU, memory, sampling
    python bench.py configs/shakespeare.py --data --profile         # real batches; where the time goes
    python bench.py configs/shakespeare_char.py --data --variant 'plain=--mlp=gelu --norm=layernorm'  # side by side
    python bench.py --ablate [configs/ablation.py] --tokens 400000 --out-dir out/ablate
    python bench.py --ablate --seconds 60 --seeds 1,2 --variants baseline,softcap,x0 --out-dir out/ablate_wall
    python bench.py --plot out/run_a out/run_b --out curves.png
    python bench.py configs/haber_gpt2_100m.py --memory --steps 2 --batch_size=2 --block_size=512 --dtype=float32
    python bench.py configs/llama_style_350m.py --memory --world-size 8      # on 8 GPUs

Speed: builds the model and optimizer with train.py's own Stepper (any `--key=value` config override
works), feeds a synthetic batch (random token ids) or with `--data` a real one from data_dir, warms
up (compilation happens there), then times `--steps` optimizer steps of one micro-batch each with
the device synchronised. MFU uses runtime.py's peak table (the dense bf16 tensor-core peak on GPUs, a
rough fp32 estimate on CPUs) and runtime.flops_per_token (6N + attention, PaLM appendix B). Memory is
the CUDA peak allocation, or the process's peak RSS on CPU. Sampling speed is measured for one
sequence with and without the KV cache.

Memory (`--memory`): for each parallelism:activation_checkpointing variant (DDP / FSDP, with and without
per-block activation checkpointing) starts `--world-size` fresh ranks (Gloo on CPU, NCCL on CUDA), builds
and wraps the model exactly as train.py does, times `--steps` steps and reports the peak memory per rank
(CUDA max allocated, or peak RSS), the parameters + optimizer state each rank holds, and ms/step.

Ablation: trains a small model once per toggle variant (positions, MLP, norm, parallel residual,
GQA groups) for the same token budget from the same seed and data, and prints final validation
loss and training tokens/s, each relative to the baseline, so the seeds' claims (RoPE -2% loss and
-10% speed, GQA +2% speed, parallel residual +5-10% speed, squared ReLU vs SwiGLU) can be checked on
any machine. It writes ablation.md, ablation.json and ablation.png (the loss curves) to --out-dir.

Plot: train and validation loss against tokens seen, from each run directory's metrics.jsonl
(matplotlib is an optional dependency, imported only here).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import resource
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

import checkpoint
import config
import data as datalib
import runtime
import sample
import train
from config import grad_accum_steps, load_config
from model import GPT, GPTConfig

DEFAULT_ABLATE_CONFIG = "configs/ablation.py"


# ----------------------------------------------------------------------------- speed

@dataclass
class SpeedResult:
    """One bench run."""
    device: str
    dtype: str
    compile: bool
    params: int
    batch: str                  # "B x T"
    ms_per_step: float
    tokens_per_s: float
    mfu: float
    peak_flops: float
    peak_flops_source: str
    peak_memory_mb: float
    memory_kind: str
    sample_tok_s_cache: float | None
    sample_tok_s_no_cache: float | None


def peak_memory_mb(device_type: str) -> tuple[float, str]:
    """(peak MiB, what was measured): CUDA max allocated, else this process's peak RSS."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20, "CUDA max allocated"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KiB on Linux, bytes on macOS
    return rss_kb / (2**20 if sys.platform == "darwin" else 2**10), "peak process RSS"


def batch_source(cfg: config.TrainConfig, real: bool, device: str):
    """A function returning (x, y): the same random batch every step, or the next real batch."""
    B, T = cfg.data.batch_size, cfg.model.block_size
    if real:
        loader = datalib.DataLoader(cfg.data.data_dir, "train", B, T, seed=cfg.run.seed)
        return lambda: tuple(t.to(device) for t in loader.next_batch())
    g = torch.Generator().manual_seed(cfg.run.seed)
    x = torch.randint(0, cfg.model.vocab_size, (B, T + 1), generator=g)
    batch = (x[:, :-1].to(device), x[:, 1:].to(device))
    return lambda: batch


def timed_steps(stepper: train.Stepper, next_batch, steps: int) -> list[float]:
    """Seconds per optimizer step of one micro-batch, taken exactly as train.py takes it (autocast, scaler,
    clipping, zeroing; DDP or FSDP per the config in a process group), device synchronised around each."""
    times = []
    for _ in range(steps):
        runtime.synchronize(stepper.device)
        t0 = time.perf_counter()
        stepper.forward_backward(next_batch, 1)
        stepper.optimizer_step()
        runtime.synchronize(stepper.device)
        times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def sampling_speed(model, cfg: config.TrainConfig, device: str, new_tokens: int, use_cache: bool,
                   autocast) -> float:
    """Generated tokens per second for one sequence (prompt: 1 token), after one short warm-up."""
    if new_tokens <= 0:
        return float("nan")
    if cfg.model.pos_emb == "learned":
        new_tokens = min(new_tokens, cfg.model.block_size - 1)
    model.eval()
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with autocast:
        sample.generate(model, idx, min(4, new_tokens), sample.Decoding(use_cache=use_cache), generator=g)
        runtime.synchronize(device)
        t0 = time.perf_counter()
        sample.generate(model, idx, new_tokens, sample.Decoding(use_cache=use_cache), generator=g)
        runtime.synchronize(device)
    model.train()
    return new_tokens / (time.perf_counter() - t0)


def profile_steps(runner: train.Stepper, next_batch, steps: int, trace: str | None) -> str:
    """torch.profiler table (operators by self time) over a few steps; optional Chrome trace file."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device_type == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        timed_steps(runner, next_batch, steps)
    if trace:
        prof.export_chrome_trace(trace)
    key = "self_cuda_time_total" if runner.device_type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=20)


def stepper_and_batches(cfg: config.TrainConfig, real_data: bool):
    """A one-rank train.Stepper for cfg on its device, and its batch source (random tokens, or data_dir's)."""
    device = runtime.pick_device(cfg.run.device)
    return train.Stepper(cfg, runtime.DistInfo(0, 0, 1, device)), batch_source(cfg, real_data, device)


def bench_speed(cfg: config.TrainConfig, steps: int = 10, warmup: int = 3, real_data: bool = False,
                sample_tokens: int = 64, profile: bool = False, trace: str | None = None) -> SpeedResult:
    """Time training steps and sampling for cfg; see the module docstring."""
    runner, next_batch = stepper_and_batches(cfg, real_data)
    device = runner.device
    if runner.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed_steps(runner, next_batch, warmup)
    times = timed_steps(runner, next_batch, steps)
    if profile:
        print(profile_steps(runner, next_batch, min(steps, 5), trace))
    ms = 1000 * statistics.median(times)
    tokens = cfg.data.batch_size * cfg.model.block_size
    tok_s = tokens / (ms / 1000)
    peak, source = runtime.peak_flops(runner.device_type, runner.dtype)
    source += runtime.fp8_note(cfg.run.fp8)
    mem, mem_kind = peak_memory_mb(runner.device_type)
    cache = sampling_speed(runner.model, cfg, device, sample_tokens, True, runner.autocast())
    no_cache = sampling_speed(runner.model, cfg, device, sample_tokens, False, runner.autocast())
    return SpeedResult(device, runner.dtype, cfg.run.compile, runner.model.num_params(non_embedding=False),
                       f"{cfg.data.batch_size} x {cfg.model.block_size}", ms, tok_s,
                       runtime.mfu(runtime.flops_per_token(runner.model.config), tok_s, peak), peak, source, mem, mem_kind, cache, no_cache)


def compare_speed(configs: list[tuple[str, config.TrainConfig]], steps: int, warmup: int, real_data: bool,
                  rounds: int = 5) -> list[tuple[str, float]]:
    """Median ms per optimizer step of each (name, config), all built in this one process and timed in alternating
    rounds of `steps` steps, so a machine whose speed drifts slows each alike (the honest way to compare step costs
    on a shared CPU)."""
    runs = []
    for name, cfg in configs:
        runner, next_batch = stepper_and_batches(cfg, real_data)
        timed_steps(runner, next_batch, warmup)
        runs.append((name, runner, next_batch, []))
    for _ in range(rounds):
        for _, runner, next_batch, times in runs:
            times += timed_steps(runner, next_batch, steps)
    return [(name, 1000 * statistics.median(times)) for name, _, _, times in runs]


def variant_configs(config_path: str, overrides: list[str], specs: list[str]) -> list[tuple[str, config.TrainConfig]]:
    """Each --variant NAME=... on top of the config and its overrides, all checked before any model is built."""
    out = []
    for spec in specs:
        name, extra = parse_variant(spec)
        try:
            out.append((name, load_config(config_path, overrides + extra)))
        except config.ConfigError as e:
            raise config.ConfigError(f"--variant {name}: {e}") from None
    return out


def format_comparison(rows: list[tuple[str, float]]) -> str:
    base = rows[0][1]
    return "\n".join(["| run | ms/step (median) | vs config |", "|---|---:|---:|"]
                     + [f"| {name} | {ms:.1f} | {ms / base:.2f}x |" for name, ms in rows])


def format_speed(r: SpeedResult) -> str:
    return (f"device {r.device} | dtype {r.dtype} | compile {r.compile} | params {r.params:,} total | batch {r.batch}\n"
            f"train: {r.ms_per_step:.1f} ms/step | {r.tokens_per_s:,.0f} tokens/s | MFU {r.mfu:.1%} of "
            f"{r.peak_flops / 1e12:.2f} TFLOP/s ({r.peak_flops_source}) | peak memory {r.peak_memory_mb:,.0f} MiB "
            f"({r.memory_kind})\n"
            + ("sampling: skipped" if r.sample_tok_s_cache != r.sample_tok_s_cache else
               f"sampling (batch 1): {r.sample_tok_s_cache:,.1f} tokens/s with KV cache, "
               f"{r.sample_tok_s_no_cache:,.1f} without"))


# ----------------------------------------------------------------------------- memory: DDP vs FSDP

MEMORY_VARIANTS = "ddp:none,ddp:block,fsdp:none,fsdp:block"


def local_bytes(tensors) -> int:
    """Bytes this rank holds of these tensors (a DTensor's local shard only)."""
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local)


def state_mib(model: torch.nn.Module, optimizers: list) -> float:
    """Parameters + optimizer state held by this rank, in MiB (gradients add the parameters' size again)."""
    states = [v for opt in optimizers for st in opt.state.values() for v in st.values()
              if isinstance(v, torch.Tensor) and v.dim() > 0]
    return (local_bytes(model.parameters()) + local_bytes(states)) / 2**20


def memory_worker(rank: int, world: int, port: int, cfg: config.TrainConfig, steps: int, warmup: int,
                  threads: int, out: str) -> None:
    """One rank of bench_memory: train `steps` steps as train.py would, write the rows (rank 0)."""
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))  # as torchrun would set them
    info = runtime.setup_distributed(cfg.run.device)
    try:
        runner = train.Stepper(cfg, info)
        next_batch = batch_source(cfg, False, info.device)
        timed_steps(runner, next_batch, warmup)
        times = timed_steps(runner, next_batch, steps)
        mem, kind = peak_memory_mb(runner.device_type)
        state = state_mib(runner.model, runner.optimizers)  # FSDP: all sharded now (not after a forward)
        x, y = next_batch()
        with torch.no_grad(), runner.autocast():
            loss = runner.train_model(x, y).item()
        row = {"rank": rank, "peak_mib": mem, "memory_kind": kind, "ms_per_step": 1000 * statistics.median(times),
               "state_mib": state, "loss": loss}
        rows = runtime.gather_object(row)
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
        del runner  # DDP's reducer before the process group goes
        runtime.barrier()
    finally:
        runtime.cleanup_distributed()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_memory(cfg: config.TrainConfig, world_size: int, variants: str = MEMORY_VARIANTS, steps: int = 2,
                 warmup: int = 1, threads: int = 1) -> list[dict]:
    """Peak memory per rank and step time for each parallelism:activation_checkpointing variant, each in
    fresh processes (peak RSS only grows), world_size ranks (Gloo on CPU, NCCL on CUDA), random tokens.
    Returns one dict per variant with the largest peak over the ranks."""
    import tempfile
    # CPU: glibc otherwise keeps FSDP's many short-lived all-gather / reduce-scatter buffers in
    # fragmented heaps and RSS overstates what is live (1.8x for FSDP on a 100M model); spawned ranks
    # read this at start. The CUDA caching allocator is unaffected.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
    results = []
    for variant in variants.split(","):
        parallelism, _, ac = variant.partition(":")
        vcfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, parallelism=parallelism, tasks_interval=0,
                                                                activation_checkpointing=ac or "none"))
        try:
            config.validate(vcfg)
        except config.ConfigError as e:
            raise SystemExit(f"error: --memory variant {variant!r}: {e}") from None
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.json")
            mp.spawn(memory_worker, args=(world_size, free_port(), vcfg, steps, warmup, threads, out),
                     nprocs=world_size)
            rows = json.loads(Path(out).read_text())
        results.append({"parallelism": parallelism, "activation_checkpointing": ac or "none",
                        "world_size": world_size, "peak_mib": max(r["peak_mib"] for r in rows),
                        "memory_kind": rows[0]["memory_kind"], "state_mib": max(r["state_mib"] for r in rows),
                        "ms_per_step": max(r["ms_per_step"] for r in rows), "loss": rows[0]["loss"]})
        print(f"  {variant}: peak {results[-1]['peak_mib']:,.0f} MiB, {results[-1]['ms_per_step']:,.0f} ms/step",
              flush=True)
    return results


def format_memory(rows: list[dict], header: str = "") -> str:
    """Markdown table; memory and time relative to the first row."""
    base = rows[0]
    lines = [header, "", f"| parallelism | activation ckpt | peak per rank ({base['memory_kind']}) | vs first | "
             "params + optimizer state per rank | ms/step | vs first |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['parallelism']} | {r['activation_checkpointing']} | {r['peak_mib']:,.0f} MiB | "
                     f"{100 * (r['peak_mib'] / base['peak_mib'] - 1):+.0f}% | {r['state_mib']:,.1f} MiB | "
                     f"{r['ms_per_step']:,.0f} | {100 * (r['ms_per_step'] / base['ms_per_step'] - 1):+.0f}% |")
    return "\n".join(lines).strip() + "\n"


def memory(args, cfg: config.TrainConfig) -> list[dict]:
    device = runtime.pick_device(cfg.run.device)
    world = args.world_size or (torch.cuda.device_count() if device == "cuda" else 2)
    with torch.device("meta"):
        n = GPT(cfg.model).num_params(non_embedding=False)
    print(f"memory: {args.config}, {n / 1e6:.1f}M parameters, {world} ranks on {device}, "
          f"micro-batch {cfg.data.batch_size} x {cfg.model.block_size} per rank, {cfg.optim.optimizer}, "
          f"{args.steps} timed steps after {args.warmup}")
    rows = bench_memory(cfg, world, args.variants or MEMORY_VARIANTS, args.steps, args.warmup, args.threads)
    print(format_memory(rows, f"{Path(args.config).name}: {n / 1e6:.1f}M parameters, {world} ranks, "
                              f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


# ----------------------------------------------------------------------------- ablation

# configs/speedrun_124m.py's model, optimizer and schedule at ablation size (one value-embedding table, 32-token
# short windows, a 50-step momentum warm-up); learning_rate is only the reference the schedule scales
SPEEDRUN = ["--pos_emb=rope", "--norm=rmsnorm", "--mlp=relu2", "--bias=False", "--qk_norm=True", "--tie_embeddings=False",
            "--logit_softcap=15", "--value_embeds=1", "--x0_mix=True", "--unet_skips=True", "--zero_init_proj=True",
            "--window_pattern=SSSL", "--window_short=32", "--optimizer=muon", "--muon_lr=0.05",
            "--muon_momentum_warmup=50", "--muon_weight_decay=0", "--embed_lr=0.6", "--head_lr=0.008",
            "--scalar_lr=0.04", "--learning_rate=0.008", "--beta1=0.8", "--weight_decay=0", "--grad_clip=0",
            "--lr_schedule=wsd", "--cooldown_frac=0.4", "--warmup_iters=0"]


def ablation_variants(n_head: int) -> list[tuple[str, list[str]]]:
    """(name, overrides) per toggle, each changing one thing from the GPT-2 baseline."""
    out = [("baseline (learned, gelu, layernorm)", []),
           ("rope", ["--pos_emb=rope"]),
           ("alibi", ["--pos_emb=alibi"]),
           ("no positions", ["--pos_emb=none"]),
           ("swiglu", ["--mlp=swiglu"]),
           ("relu2", ["--mlp=relu2"]),
           ("rmsnorm", ["--norm=rmsnorm"]),
           ("parallel residual", ["--parallel_residual=True"]),
           ("logit softcap 15", ["--logit_softcap=15"]),
           ("zero-init projections", ["--zero_init_proj=True"]),
           ("value embeddings 1", ["--value_embeds=1"]),
           ("x0 mix", ["--x0_mix=True"]),
           ("u-net skips", ["--unet_skips=True"]),
           ("sliding windows SSSL 32", ["--window_pattern=SSSL", "--window_short=32"]),
           # id 1 = sentencepiece BOS; a corpus prepared without boundaries (shakespeare) times the mask only
           ("document mask (id 1)", ["--doc_mask_token=1"]),
           ("muon (hidden matrices; momentum warm-up 50)", ["--optimizer=muon", "--muon_momentum_warmup=50"]),
           ("label smoothing 0.1", ["--label_smoothing=0.1"]),
           ("speedrun (every configs/speedrun_124m.py toggle)", SPEEDRUN)]
    for kv in sorted({n_head // 2, 1}, reverse=True):
        if 0 < kv < n_head and n_head % kv == 0:
            out.append((f"gqa {n_head // kv} (n_kv_head={kv})", [f"--n_kv_head={kv}"]))
    return out


# The fields that size the model come from the ablation config; every other GPTConfig field starts each variant
# at its default (GPT-2's), so a new toggle is off in the baseline with no change here.
SIZE_FIELDS = {"block_size", "vocab_size", "pad_vocab_multiple", "n_layer", "n_head", "n_embd", "dropout"}
BASELINE_KEYS = [f"--{f.name}={f.default}" for f in dataclasses.fields(GPTConfig)
                 if f.name not in SIZE_FIELDS] + ["--label_smoothing=0"]


def pick_variants(n_head: int, names: list[str] | None, custom: list[str]) -> list[tuple[str, list[str]]]:
    """The built-in variants whose names contain one of `names` (all when None), then each custom variant
    "NAME=--key=value --key2=value" (--variant: any toggle, a new one included, with no change to this file)."""
    chosen = [(n, o) for n, o in ablation_variants(n_head) if not names or any(v in n for v in names)]
    return chosen + [parse_variant(spec) for spec in custom]


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """--variant "NAME=--key=value --key2=value" -> (NAME, overrides)."""
    name, sep, overrides = spec.partition("=")
    if not sep or not overrides.split():
        raise ValueError(f"--variant {spec!r}: write NAME=--key=value [--key2=value ...]")
    return name.strip(), overrides.split()


@dataclass
class AblationRow:
    name: str
    overrides: list[str]
    val_loss: float
    tokens_per_s: float
    seconds: float
    params: int
    run_dir: str
    seed: int = 1337
    steps: int = 0


def train_tokens_per_s(run_dir: Path) -> float:
    """Median training tokens/s of a run's logged steps (the first logged row, which includes warm-up, dropped)."""
    rows = [r for r in read_metrics(run_dir) if r["type"] == "train" and "tok_s" in r]
    rates = [r["tok_s"] for r in rows[1:]] or [r["tok_s"] for r in rows]
    return statistics.median(rates) if rates else float("nan")


def steps_for_budget(cfg: config.TrainConfig, tokens: int | None, seconds: float | None) -> int:
    """Optimizer steps for a fixed token budget, or for a fixed wall time of training steps at the variant's own
    speed (timed on random tokens: 2 warm-up + 5 steps, as train.py steps; evaluation not included)."""
    accum = grad_accum_steps(cfg.data.total_batch_size, cfg.data.batch_size, cfg.model.block_size, 1)
    if seconds is None:
        return max(1, tokens // (cfg.data.batch_size * cfg.model.block_size * accum))
    runner = train.Stepper(cfg, runtime.DistInfo(0, 0, 1, runtime.pick_device(cfg.run.device)))
    next_batch = batch_source(cfg, False, runner.device)
    timed_steps(runner, next_batch, 2)
    micro_s = statistics.median(timed_steps(runner, next_batch, 5))  # one micro-batch per timed step
    return max(1, int(seconds / (micro_s * accum)))


def run_ablation(config_file: str, overrides: list[str], tokens: int, out_dir: Path,
                 variants: list[tuple[str, list[str]]], quiet: bool = True, seeds: tuple[int, ...] = (1337,),
                 seconds: float | None = None) -> list[AblationRow]:
    """Train each (name, overrides) variant once per seed for `tokens` training tokens, or for `seconds` of
    training steps at its own speed; returns the rows."""
    rows = []
    for name, extra in variants:
        for seed in seeds:
            base = load_config(config_file, BASELINE_KEYS + overrides + extra + [f"--seed={seed}"])
            steps = steps_for_budget(base, tokens, seconds)
            run_dir = out_dir / (name.split(" (")[0].replace(" ", "_") + (f"_seed{seed}" if len(seeds) > 1 else ""))
            shutil.rmtree(run_dir, ignore_errors=True)                # a fresh run, never a resume
            cfg = load_config(config_file, BASELINE_KEYS + overrides + extra + [
                f"--seed={seed}", f"--max_iters={steps}", f"--out_dir={run_dir}",
                f"--eval_interval={max(1, steps // 4)}", f"--log_interval={max(1, steps // 20)}", "--sample_tokens=0",
                "--tasks_interval=0", "--wandb_log=False", "--keep_last=1", "--resume="])
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
                result = train.run(cfg)
            took = time.perf_counter() - t0
            with torch.device("meta"):
                params = GPT(cfg.model).num_params(non_embedding=False)
            rows.append(AblationRow(name, extra, result["val_loss"], train_tokens_per_s(run_dir), took, params,
                                    str(run_dir), seed, steps))
            print(f"  {name} (seed {seed}, {steps} steps): val loss {rows[-1].val_loss:.4f}, "
                  f"{rows[-1].tokens_per_s:,.0f} tok/s ({took:.0f} s)", flush=True)
    return rows


def format_ablation(rows: list[AblationRow], header: str = "") -> str:
    """Markdown table, one line per variant (means over seeds; each seed's loss listed); differences relative
    to the first variant (the baseline)."""
    names = list(dict.fromkeys(r.name for r in rows))
    groups = {n: [r for r in rows if r.name == n] for n in names}
    mean = {n: (statistics.fmean(r.val_loss for r in g), statistics.fmean(r.tokens_per_s for r in g))
            for n, g in groups.items()}
    base_loss, base_speed = mean[names[0]]
    lines = [header, "", "| variant | params | steps | val loss (mean) | per seed | vs baseline | tokens/s | vs baseline |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for n, g in groups.items():
        loss, speed = mean[n]
        seeds = ", ".join(f"{r.val_loss:.4f}" for r in g)
        steps = "/".join(sorted({str(r.steps) for r in g}))
        lines.append(f"| {n} | {g[0].params:,} | {steps} | {loss:.4f} | {seeds} | {100 * (loss / base_loss - 1):+.1f}% | "
                     f"{speed:,.0f} | {100 * (speed / base_speed - 1):+.1f}% |")
    return "\n".join(lines).strip() + "\n"


def ablate(args, overrides: list[str]) -> list[AblationRow]:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [v.strip() for v in args.variants.split(",")] if args.variants else None
    try:
        variants = pick_variants(load_config(args.config, BASELINE_KEYS + overrides).model.n_head, names,
                                 args.variant)
    except ValueError as e:
        raise config.ConfigError(str(e)) from None
    seeds = tuple(int(s) for s in args.seeds.split(","))
    budget = f"{args.seconds:g} s of training steps" if args.seconds else f"{args.tokens:,} training tokens"
    print(f"ablation of {args.config}, {budget} per variant and seed {seeds} -> {out_dir}")
    rows = run_ablation(args.config, overrides, args.tokens, out_dir, variants, not args.verbose, seeds, args.seconds)
    table = format_ablation(rows, f"Ablation: {args.config} {' '.join(overrides)}, {budget} per variant, seeds "
                                  f"{', '.join(map(str, seeds))}, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}")
    print(table)
    (out_dir / "ablation.md").write_text(table)
    (out_dir / "ablation.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    try:
        plot_runs([Path(r.run_dir) for r in rows], out_dir / "ablation.png", labels=[r.name for r in rows])
        print(f"wrote {out_dir / 'ablation.md'}, ablation.json, ablation.png")
    except ImportError as e:
        print(f"wrote {out_dir / 'ablation.md'}, ablation.json (no plot: {e})")
    return rows


# ----------------------------------------------------------------------------- curves

def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows; after a resume the later row of a repeated (type, step) wins."""
    path = Path(run_dir) / checkpoint.METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a train.py out_dir (it writes metrics.jsonl)")
    rows = {(row.get("type"), row.get("step")): row for row in checkpoint.read_metrics(path)}
    return sorted(rows.values(), key=lambda r: r["step"])


def tokens_per_step_from_config(run_dir: Path) -> float | None:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    c = json.loads(path.read_text())
    return c.get("total_batch_size") or c["batch_size"] * c["block_size"]


def curves(run_dir: Path) -> dict[str, np.ndarray]:
    """Arrays train_tokens, train_loss, val_tokens, val_loss. Tokens per step come from each logged
    row (tok_s x ms, exact under sequence-length warmup and any rank count), else from config.json."""
    rows = read_metrics(run_dir)
    tr = [r for r in rows if r["type"] == "train"]
    ev = [r for r in rows if r["type"] == "eval" and r.get("val_loss") is not None]
    fallback = tokens_per_step_from_config(run_dir)
    steps, cum, prev_step, total = [0], [0.0], 0, 0.0
    for r in tr:
        per = r["tok_s"] * r["ms"] / 1000 if "tok_s" in r and "ms" in r else fallback
        if per is None:
            raise ValueError(f"{run_dir}: cannot tell tokens per step (no tok_s/ms in metrics, no config.json)")
        total += per * (r["step"] - prev_step)
        prev_step = r["step"]
        steps.append(r["step"])
        cum.append(total)
    if ev and ev[-1]["step"] > steps[-1]:                       # extrapolate past the last train row
        per = (cum[-1] / steps[-1]) if steps[-1] else fallback
        steps.append(ev[-1]["step"])
        cum.append(cum[-1] + per * (ev[-1]["step"] - steps[-2]))
    to_tokens = lambda s: np.interp(np.asarray(s, dtype=float), steps, cum)  # noqa: E731
    return {"train_tokens": to_tokens([r["step"] for r in tr]), "train_loss": np.array([r["loss"] for r in tr]),
            "val_tokens": to_tokens([r["step"] for r in ev]), "val_loss": np.array([r["val_loss"] for r in ev])}


def plot_runs(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Train (thin) and validation (thick, dots) loss against tokens, one colour per run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, run_dir in enumerate(run_dirs):
        c = curves(run_dir)
        color, label = f"C{i % 10}", (labels[i] if labels else Path(run_dir).name)
        if len(c["train_loss"]):
            ax.plot(c["train_tokens"], c["train_loss"], color=color, alpha=0.4, lw=1)
        if len(c["val_loss"]):
            ax.plot(c["val_tokens"], c["val_loss"], "o-", color=color, lw=2, ms=3, label=f"{label} (val)")
        else:
            ax.plot([], [], color=color, label=f"{label} (train)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title("train (thin) and validation (thick) loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- command line

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False,
                                epilog="Any other --key=value is a train.py config override (train.py --help).")
    p.add_argument("config", nargs="?", help="config file (configs/*.py)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (compilation happens here)")
    p.add_argument("--data", action="store_true", help="real batches from data_dir instead of random tokens")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of a few steps")
    p.add_argument("--trace", help="with --profile: write a Chrome trace to this file")
    p.add_argument("--sample-tokens", type=int, default=64, help="tokens generated to time sampling (0 = skip)")
    p.add_argument("--json", help="write the speed result to this JSON file")
    p.add_argument("--memory", action="store_true",
                   help="peak memory per rank and step time: DDP vs FSDP, with and without activation checkpointing")
    p.add_argument("--world-size", type=int, default=0, help="--memory: ranks (default: all GPUs, or 2 on CPU)")
    p.add_argument("--threads", type=int, default=1, help="--memory: torch threads per rank on CPU")
    p.add_argument("--ablate", action="store_true", help="train one tiny model per toggle variant")
    p.add_argument("--tokens", type=int, default=500_000, help="--ablate: training tokens per variant")
    p.add_argument("--seconds", type=float, default=None,
                   help="--ablate: a fixed wall time of training steps per variant instead of --tokens (each variant "
                        "gets the steps its own speed allows)")
    p.add_argument("--seeds", default="1337", help="--ablate: comma-separated seeds, one run of each variant per seed")
    p.add_argument("--variants", help="--ablate: comma-separated subset by name (e.g. baseline,rope,gqa); "
                                      f"--memory: parallelism:activation_checkpointing pairs ({MEMORY_VARIANTS})")
    p.add_argument("--variant", action="append", default=[], metavar="'NAME=--key=value ...'",
                   help="--ablate: one more variant, any config keys (repeatable); speed: time the config and these "
                        "variants side by side in alternating rounds of --steps steps")
    p.add_argument("--rounds", type=int, default=5, help="speed with --variant: alternating rounds of --steps steps")
    p.add_argument("--out-dir", default="out/ablate", help="--ablate: where runs, table and plot go")
    p.add_argument("--verbose", action="store_true", help="--ablate: show the training logs")
    p.add_argument("--plot", nargs="+", metavar="RUN_DIR", help="plot loss curves of these run directories")
    p.add_argument("--out", default="curves.png", help="--plot: output image")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None):
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    bad = [o for o in overrides if not o.startswith("--")]
    if bad:
        raise SystemExit(f"error: unexpected arguments {bad}")
    if args.plot:
        try:
            out = plot_runs([Path(d) for d in args.plot], Path(args.out))
        except (FileNotFoundError, checkpoint.MetricsFileError) as e:
            raise SystemExit(f"error: {e}") from None
        print(f"wrote {out}")
        return out
    if args.ablate:
        args.config = args.config or DEFAULT_ABLATE_CONFIG
        try:
            return ablate(args, overrides)
        except config.ConfigError as e:  # e.g. the ablation data is not prepared yet
            raise SystemExit(f"error: {e}") from None
    if not args.config:
        raise SystemExit("error: give a config file (e.g. configs/gpt2_124m.py), --ablate or --plot")
    try:
        cfg = load_config(args.config, overrides)
    except config.ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    clash = [flag for flag, on in (("--memory", args.memory), ("--profile", args.profile), ("--trace", args.trace),
                                   ("--json", args.json)) if on and args.variant]
    if clash:
        raise SystemExit(f"error: --variant times configs side by side, {', '.join(clash)} one config; drop one")
    if args.memory:
        return memory(args, cfg)
    if args.variant:
        try:
            configs = [("config", cfg)] + variant_configs(args.config, overrides, args.variant)
        except ValueError as e:  # a malformed --variant, or a config error in one (ConfigError is a ValueError)
            raise SystemExit(f"error: {e}") from None
        rows = compare_speed(configs, args.steps, args.warmup, args.data, args.rounds)
        print(format_comparison(rows))
        return rows
    result = bench_speed(cfg, args.steps, args.warmup, args.data, args.sample_tokens, args.profile, args.trace)
    print(format_speed(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.__dict__, indent=1))
    return result


if __name__ == "__main__":
    main()
