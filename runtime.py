"""Where and how code runs: device, processes, precision, timing and hardware peaks. Every script uses this.

- Device: `pick_device("auto")` is CUDA, else MPS, else CPU.
- Processes: `setup_distributed()` reads torchrun's RANK / LOCAL_RANK / WORLD_SIZE (multi-node rendezvous
  sets the same) and starts a process group (NCCL on CUDA, Gloo otherwise); without them it is one
  process. Scripts read `info.rank`, `info.world_size`, `info.is_master`; they never ask who launched them.
- Precision: `resolve_dtype("auto", ...)` is bf16 on CUDA GPUs that have it, fp16 on those that do not
  (with a GradScaler in training), fp32 on CPU and MPS. `autocast(device, dtype)` is the one autocast
  context of the repo; float32 (or None) means no autocast. The optional CUDA extras: float8 Linear layers
  (`convert_to_fp8`, torchao) and liger-kernel's fused output layer + loss (`liger_linear_cross_entropy`).
- RNG: `rng_state()` / `set_rng_state()` carry every generator of a process (torch, CUDA, NumPy, Python) as
  tensors and plain types, so checkpoints that hold them load with weights_only=True.
- Peaks and MFU: dense bf16 tensor-core peaks per GPU (TF32 = half for fp32 runs), a rough estimate on CPU.
"""
from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPES = ("auto", "float32", "bfloat16", "float16")


# ----------------------------------------------------------------------------- device and processes

@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: str

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device_type(self) -> str:
        return device_type(self.device)


def device_type(device: str | torch.device) -> str:
    """'cuda:1' -> 'cuda', 'cpu' -> 'cpu'."""
    return torch.device(device).type


def pick_device(name: str | None = "auto") -> str:
    """auto: cuda, else mps, else cpu. An explicit device this torch cannot use is a ValueError naming the fix."""
    if name not in (None, "auto"):
        kind = device_type(name)
        if kind == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
            raise ValueError(f"device={name}: torch {torch.__version__} is {build}; use --device=cpu (or auto), "
                             f"or install a CUDA build of torch on a machine with a GPU")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device={name}: MPS (Apple GPU) is not available here; use --device=cpu (or auto)")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def setup_distributed(device: str | None = "auto") -> DistInfo:
    """The process group of a torchrun launch (one per rank), or a single process without torchrun."""
    device = pick_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 0, 1, device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank, local_rank, world, device)


def cleanup_distributed() -> None:
    global _control_group
    _control_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


_control_group = None  # a Gloo group for small control messages (a flag), made on first use


def any_rank(flag: bool) -> bool:
    """Whether flag is set on any rank. Through Gloo on the CPU, so it never waits for queued GPU work."""
    global _control_group
    if not is_distributed():
        return flag
    if _control_group is None:
        _control_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group)
    return t.item() > 0


def gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (in place; the tensor itself in a single process)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class StopSignal:
    """SIGTERM/SIGINT set a flag (the loop finishes the step, saves, exits); a second SIGINT aborts.
    `received`: the name of the first signal this process got (None: none, or only another rank did)."""

    def __init__(self):
        self.requested = False
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.received = self.received or signal.Signals(signum).name
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, exiting",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- random number generators

def rng_state() -> dict:
    """This process's RNG states (torch CPU/CUDA, numpy, python) as tensors and plain types (weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(n)  # older checkpoints (--trust_checkpoint) hold np.random.get_state() itself
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- precision

def use_fused_loss(setting: str, device_type: str) -> bool:
    """fused_loss=auto: the chunked output layer + loss on CPU (memory-bound there); on accelerators the
    (compiled) full-logits path, which is the well-trodden fast one. on / liger: fused everywhere."""
    return setting in ("on", "liger") or (setting == "auto" and device_type == "cpu")


def model_loss(setting: str, device_type: str):
    """GPT's `loss` for the fused_loss setting: "chunked" (fused), "full" (logits), or liger's function."""
    if setting == "liger":
        return liger_linear_cross_entropy
    return "chunked" if use_fused_loss(setting, device_type) else "full"


def convert_to_fp8(model: torch.nn.Module, include_head: bool) -> int:
    """Swap the model's Linear layers for torchao's Float8Linear (dynamic tensorwise scaling: matmuls in
    float8 on the tensor cores, master weights and parameter names unchanged, so checkpoints stay plain).
    The output layer only with include_head (its logits are the most precision-sensitive product); layers
    whose sizes are not multiples of 16 (what float8 matmuls need) stay as they are. Returns how many swapped."""
    from torchao.float8 import convert_to_float8_training  # optional (CUDA); config.check_gpu_extras said if missing

    def wanted(module: torch.nn.Module, name: str) -> bool:
        sizes_ok = module.in_features % 16 == 0 and module.out_features % 16 == 0
        return isinstance(module, torch.nn.Linear) and sizes_ok and (include_head or name != "lm_head")

    before = sum(type(m) is torch.nn.Linear for m in model.modules())
    convert_to_float8_training(model, module_filter_fn=wanted)
    return before - sum(type(m) is torch.nn.Linear for m in model.modules())


def fp8_note(fp8: str) -> str:
    """For headers next to the dtype: float8 runs still count MFU against the dense bf16 peak."""
    return "" if fp8 == "off" else f" + fp8 ({fp8} Linear layers; MFU against the bf16 peak)"


def liger_linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                               softcap: float = 0.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """model.linear_cross_entropy's contract (mean loss over targets >= 0, padded weight rows excluded) through
    liger-kernel's Triton fused linear + cross-entropy (CUDA). Under autocast its matmuls take the autocast
    dtype; the weight gradient accumulates in float32."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy  # optional (CUDA)
    return liger_fused_linear_cross_entropy(x.reshape(-1, x.size(-1)), weight[:vocab_size], targets.reshape(-1),
                                            ignore_index=-1, softcap=softcap or None, accum_dtype=torch.float32,
                                            label_smoothing=label_smoothing)


def resolve_dtype(dtype: str | None, device_type: str) -> str:
    """auto (or None): bf16 on CUDA that supports it, else fp16 on CUDA, fp32 on CPU/MPS. An explicit
    bfloat16 on a CUDA GPU without it is an error that names the fix."""
    if dtype not in (None, "auto"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if dtype == "bfloat16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU has no bfloat16; use --dtype float16")
        return dtype
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


@functools.cache
def cpu_has_bf16_dot() -> bool:
    """AVX512_BF16 / AMX: this CPU multiplies bf16 natively."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def decode_dtype(device: str | torch.device, dtype: str | None = None) -> str:
    """The dtype to generate in: resolve_dtype's, except bf16 on CPUs with native bf16 (decoding reads every
    weight once per token, so half the bytes is up to twice the tokens/s)."""
    if dtype in (None, "auto") and device_type(device) == "cpu" and cpu_has_bf16_dot():
        return "bfloat16"
    return resolve_dtype(dtype, device_type(device))


def decode_threads(requested: int | None = None) -> int:
    """Threads for token-by-token decoding: per-token matmuls are small and memory-bound, so more than 4
    threads mostly spin (and hurt on a busy machine)."""
    return requested or min(torch.get_num_threads(), 4)


def autocast_dtype(device: str | torch.device, dtype: str | None = None) -> torch.dtype | None:
    """The torch dtype autocast runs in for a dtype setting (None = auto); None for float32 (no autocast)."""
    name = resolve_dtype(dtype, device_type(device))
    return None if name == "float32" else getattr(torch, name)


def autocast(device: str | torch.device, dtype: str | torch.dtype | None):
    """The autocast context for `dtype` (a name, a torch dtype, or None); none at all for float32/None."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=dtype)


def variable_shape_attention():
    """SDPA without the cuDNN backend, for inference whose shapes change call to call (generation, scoring).
    Recent PyTorch prefers cuDNN attention on Hopper GPUs, which builds a plan for every new shape: right
    for training's fixed shapes, but it made token-by-token generation 12x slower on an H100."""
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def enable_tf32(device: str | torch.device) -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions on CUDA (no-op elsewhere)."""
    if device_type(device) == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def synchronize(device: str | torch.device) -> None:
    """Wait for queued device work, so a wall-clock time covers it."""
    kind = device_type(device)
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------- peaks and MFU

# Dense bf16/fp16 tensor-core peak FLOP/s per device (first substring match of the device name wins).
PEAK_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("A100", 312e12),
              ("L40S", 362e12), ("A10", 125e12), ("L4", 121e12), ("4090", 165e12), ("3090", 71e12), ("V100", 125e12),
              ("T4", 65e12))


@functools.cache
def measured_cpu_flops(dtype: str, threads: int, n: int = 1024) -> float:
    """FLOP/s of an n^3 matmul in `dtype` on this CPU with `threads` threads (the best of ~0.1 s of repeats):
    what dense matmuls reach here, the CPU's practical peak. Measured once per process."""
    g = torch.Generator().manual_seed(0)  # never the global RNG: a resumed run must draw what it would have
    a, b = (torch.randn(n, n, generator=g).to(getattr(torch, dtype)) for _ in range(2))
    with torch.no_grad():
        a @ b  # warm-up (thread pool, caches)
        best, spent = float("inf"), 0.0
        while spent < 0.1:
            t0 = time.perf_counter()
            a @ b
            took = time.perf_counter() - t0
            best, spent = min(best, took), spent + took
    return 2 * n ** 3 / best


def peak_flops(device_type: str, dtype: str = "bfloat16") -> tuple[float, str]:
    """(peak FLOP/s of one device for matmuls in `dtype`, where the number comes from)."""
    if device_type == "cuda":
        name = torch.cuda.get_device_name()
        flops, src = next(((f, name) for key, f in PEAK_FLOPS if key in name),
                          (312e12, f"{name} (unknown, assuming A100)"))
        if dtype == "float32":  # TF32 tensor cores: half the bf16 rate on A100/H100
            return flops / 2, f"{src}, TF32"
        return flops, src
    if device_type == "mps":
        return 10e12, "Apple GPU (rough estimate)"
    threads, kind = torch.get_num_threads(), "bfloat16" if dtype == "bfloat16" else "float32"
    return measured_cpu_flops(kind, threads), f"CPU x{threads} threads, measured {kind} 1024^3 matmul rate"


def flops_per_token(c, seq_len: int | None = None) -> int:
    """Training FLOPs per token (forward + backward) of a GPTConfig c = 6 * matmul weights + 12 * L * H * hd * T
    (PaLM, Chowdhery et al. 2022, arXiv:2204.02311, appendix B).

    Counts what the toggles compute: the fused q,k,v width under GQA/MQA, three SwiGLU matrices,
    the padded lm_head; the attention term uses the full (unmasked) T as PaLM does, min(T, window) in
    a windowed layer. Lookups (value embeddings), scalar mixes and document masks count nothing.
    """
    T = seq_len or c.block_size
    attn = c.n_embd * (c.n_head + 2 * c.kv_heads) * c.head_dim + c.n_embd * c.n_embd
    mlp = (3 if c.mlp == "swiglu" else 2) * c.n_embd * c.hidden_dim
    matmul = c.n_layer * (attn + mlp) + c.n_embd * c.padded_vocab_size
    keys = sum(T if w is None else min(T, w) for w in c.layer_windows)     # keys per query, all layers
    return 6 * matmul + 12 * c.n_head * c.head_dim * keys


def mfu(flops_per_token: float, tokens_per_s: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s of one device over its peak."""
    return flops_per_token * tokens_per_s / peak
