"""Peak memory per rank and step time: DDP vs FSDP, with and without activation checkpointing.

    python scripts/mem_bench.py                                   # CPU, 2 Gloo ranks, HaberGPT2 ~100M model
    python scripts/mem_bench.py --device=cuda --world_size=8 --config=configs/llama_style_350m.py

Every (parallelism, activation checkpointing) combination runs in fresh processes (peak RSS only grows)
for --steps AdamW steps on random tokens. CPU: peak RSS per rank (ru_maxrss) and its growth over the RSS
after `import torch` (the model, gradients, optimizer state, communication buffers and activations).
CUDA: torch.cuda.max_memory_allocated, bf16 autocast and FSDP's bf16/fp32 mixed precision.

On CPU, run with MALLOC_MMAP_THRESHOLD_=1048576: glibc otherwise raises its mmap threshold as large
buffers are freed and keeps FSDP's many short-lived all-gather / reduce-scatter buffers in fragmented
heaps, so RSS overstates what is live (1.8x for FSDP on the ~100M model here; DDP hardly changes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import socket
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import parallel  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

def model_config(path: str) -> GPTConfig:
    """The model keys of a train.py config file."""
    sys.path.insert(0, str(REPO))  # presets import configs.base
    values = runpy.run_path(path)
    return GPTConfig(**{f.name: values[f.name] for f in fields(GPTConfig) if f.name in values})


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(rank: int, world: int, port: int, args, variant: tuple[str, str], out: str) -> None:
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    device, dtype = (f"cuda:{rank}", "bfloat16") if cuda else ("cpu", "float32")
    base = rss_mib()
    torch.manual_seed(0)
    model = GPT(model_config(args.config)).to(device)
    parallelism, ac = variant
    if ac == "block":
        parallel.apply_activation_checkpointing(model)
    if parallelism == "fsdp":
        wrapped = parallel.apply_fsdp(model, "cuda" if cuda else "cpu", dtype)
    else:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print(f"  [{parallelism}/{ac} rank {rank}] built: RSS {rss_mib():,.0f} MiB (base {base:,.0f}), "
          f"peak {peak_rss_mib():,.0f} MiB", file=sys.stderr, flush=True)
    g = torch.Generator().manual_seed(rank)
    times = []
    for _ in range(args.steps):
        x = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq_len + 1), generator=g).to(device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            _, loss = wrapped(x[:, :-1], x[:, 1:])
        loss.backward()
        parallel.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"  [{parallelism}/{ac} rank {rank}] step {len(times)}: {times[-1]:.1f} s, "
              f"RSS {rss_mib():,.0f} MiB, peak {peak_rss_mib():,.0f} MiB", file=sys.stderr, flush=True)
    row = {"parallelism": parallelism, "activation_checkpointing": ac, "rank": rank,
           "step_s": min(times[1:] or times), "rss_base_mib": base, "peak_rss_mib": peak_rss_mib()}
    if cuda:
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    rows = [None] * world
    dist.all_gather_object(rows, row)
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    del wrapped, model, opt  # DDP's reducer first: rank 0 sometimes hung in destroy_process_group otherwise
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "haber_gpt2_100m.py"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--world_size", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--variants", default="ddp:none,ddp:block,fsdp:none,fsdp:block",
                   help="comma-separated parallelism:activation_checkpointing pairs")
    args = p.parse_args()
    cfg = model_config(args.config)
    with torch.device("meta"):
        n = sum(t.numel() for t in GPT(cfg).parameters())
    print(f"{Path(args.config).name}: {n / 1e6:.1f}M parameters, {args.world_size} ranks on {args.device}, "
          f"micro-batch {args.batch_size} x {args.seq_len} per rank, AdamW, {args.steps} steps")
    key = "peak_cuda_mib" if args.device == "cuda" else "peak_rss_mib"
    print(f"| parallelism | activation_checkpointing | {key} per rank (max) | growth over base | step s |")
    print("|---|---|---|---|---|")
    for variant in [tuple(v.split(":")) for v in args.variants.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.json")
            mp.spawn(worker, args=(args.world_size, free_port(), args, variant, out), nprocs=args.world_size)
            rows = json.loads(Path(out).read_text())
        peak = max(r[key] for r in rows)
        growth = max(r["peak_rss_mib"] - r["rss_base_mib"] for r in rows)
        step = max(r["step_s"] for r in rows)
        print(f"| {variant[0]} | {variant[1]} | {peak:,.0f} MiB | {growth:,.0f} MiB | {step:.1f} |", flush=True)


if __name__ == "__main__":
    main()
