"""Train a GPT (model.py) on prepared token shards (data.py): one loop for CPU, one GPU, many GPUs, many nodes.

    python train.py configs/shakespeare_tiny.py --max_iters=40 --out_dir=/tmp/run
    torchrun --standalone --nproc_per_node=8 train.py configs/gpt2_124m.py
    python train.py configs/X.py --resume            # continue the newest checkpoint in out_dir

A config file is a Python file whose public top-level simple values are config keys (see configs/base.py
for every key and its meaning); `--key=value` overrides them. Keys are flat and unique; internally they
are grouped in typed dataclasses (model / data / optim / schedule / run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import platform
import random
import re
import runpy
import signal
import subprocess
import sys
import threading
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import data as datalib
import parallel
from model import GPT, GPTConfig, resolve_checkpoint

REPO_ROOT = Path(__file__).resolve().parent
CHECKPOINT_FORMAT = 1

# ----------------------------------------------------------------------------- config

ModelConfig = GPTConfig  # the model section is model.py's GPTConfig, field for field


@dataclass
class DataConfig:
    """Where the tokens come from and how many go into one optimizer step."""
    data_dir: str = "data/fineweb10B"      # prepare_data.py output: meta.json + *_train_*.bin / *_val_*.bin
    batch_size: int = 16                   # micro-batch, in sequences, per rank
    total_batch_size: int = 524288         # tokens per optimizer step over all ranks (0 = no accumulation)
    seq_len_warmup: tuple[int, ...] = ()   # staged sequence lengths used before block_size, e.g. (128, 256)
    seq_len_warmup_frac: float = 0.0       # fraction of max_iters the stages span (split equally)


@dataclass
class OptimConfig:
    """Optimizer and its hyper-parameters."""
    optimizer: str = "adamw"               # adamw | muon | adamw8bit
    learning_rate: float = 6e-4            # peak lr (AdamW part)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0                 # max global grad norm (0 = no clipping)
    muon_lr: float = 0.02                  # optimizer=muon: peak lr of the hidden 2-D matrices
    muon_momentum: float = 0.95


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (multiplies every param group's peak lr)."""
    max_iters: int = 19073                 # optimizer steps
    lr_schedule: str = "cosine"            # cosine | wsd | constant
    warmup_iters: int = 715
    warmup_start_ratio: float = 0.0        # warmup starts at this fraction of the peak lr (0.1 = from 10%)
    lr_decay_iters: int | None = None      # cosine ends here (None = max_iters * (1 - lr_hold_frac))
    lr_hold_frac: float = 0.0              # cosine: hold min_lr for this final fraction of steps (GPT*: 0.1)
    min_lr: float | None = None            # floor; None = learning_rate * min_lr_ratio
    min_lr_ratio: float = 0.1
    cooldown_frac: float = 0.2             # wsd: final fraction of steps spent cooling down
    cooldown_shape: str = "linear"         # wsd: linear | 1-sqrt


@dataclass
class RunConfig:
    """Everything about running: output, evaluation, checkpoints, precision, logging."""
    out_dir: str = "out"
    eval_interval: int = 250               # val loss every N steps (and at the end)
    eval_iters: int = 20                   # fixed validation batches per rank
    log_interval: int = 10                 # one log line / metrics.jsonl row every N steps
    ckpt_interval: int = 0                 # checkpoint every N steps (0 = every eval_interval) and at the end
    keep_last: int = 3                     # keep this many ckpt_*.pt (plus best.pt)
    dtype: str = "auto"                    # auto | float32 | bfloat16 | float16
    compile: bool = False                  # torch.compile the model
    compile_mode: str = "default"          # torch.compile mode: default | max-autotune-no-cudagraphs | ...
    fused_loss: str = "auto"               # auto (on for CPU) | on | off: chunked output layer + loss (model.py)
    device: str = "auto"                   # auto (cuda > mps > cpu) | cpu | cuda | mps
    wandb_log: bool = False
    wandb_project: str = "gpt"
    wandb_run_name: str = ""
    init_from: str = "scratch"             # scratch | resume | gpt2 | gpt2-medium | ... (OpenAI weights)
    resume: str = ""                       # "" | latest (bare --resume) | path to a checkpoint or run dir
    seed: int = 1337
    max_nonfinite: int = 5                 # stop after this many non-finite losses in a row
    sample_tokens: int = 64                # print a sample of this many tokens at each eval (0 = off)
    hellaswag_interval: int = 0            # HellaSwag every N steps (0 = off; needs hellaswag.py)
    hellaswag_limit: int = 0               # examples scored (0 = all 10,042)
    hellaswag_data: str = ""               # hellaswag_val.jsonl ("" = $HELLASWAG_FILE or download)
    parallelism: str = "ddp"               # ddp | fsdp (FSDP2: weights/grads/optimizer sharded; parallel.py)
    activation_checkpointing: str = "none"  # none | block (recompute each block's activations in backward)


SECTIONS = {"model": GPTConfig, "data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
            "run": RunConfig}
CHOICES = {"optimizer": ("adamw", "muon", "adamw8bit"), "lr_schedule": ("cosine", "wsd", "constant"),
           "cooldown_shape": ("linear", "1-sqrt"), "dtype": ("auto", "float32", "bfloat16", "float16"),
           "fused_loss": ("auto", "on", "off"),
           "compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
           "parallelism": parallel.PARALLELISMS, "activation_checkpointing": parallel.ACTIVATION_CHECKPOINTING}
SIMPLE_TYPES = (bool, int, float, str, tuple, list, type(None))


@dataclass
class TrainConfig:
    """The whole run: one dataclass per section; `flat()` gives the unique flat keys."""
    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def flat(self) -> dict:
        """All keys in one dict (tuples as lists, JSON-ready)."""
        out = {}
        for name in SECTIONS:
            out.update(asdict(getattr(self, name)))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def min_lr(self) -> float:
        s = self.schedule
        return s.min_lr if s.min_lr is not None else self.optim.learning_rate * s.min_lr_ratio


class ConfigError(ValueError):
    """Bad configuration or bad input, detected before any training work."""


def key_types() -> dict[str, tuple[str, typing.Any]]:
    """flat key -> (section, resolved type)."""
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name not in out, f"duplicate config key {f.name}"
            out[f.name] = (section, hints[f.name])
    return out


def coerce(key: str, value, tp):
    """Convert value to tp, or raise ConfigError. Strings (`--key=value`) are parsed to tp; ints are
    accepted as floats; anything else of the wrong type is an error."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        items = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()] \
            if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key} expects a list like 128,256, got {value!r}")
        return tuple(coerce(key, v, args[0]) for v in items)
    try:
        return _coerce_scalar(value, tp)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} expects {tp.__name__}, got {value!r} ({type(value).__name__})") from None


def _coerce_scalar(value, tp):
    """bool / int / float / str from a value of that type or a command-line string; TypeError/ValueError if not."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
        return words[value.lower()] if isinstance(value, str) and value.lower() in words else _fail()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    if tp is str:
        return value if isinstance(value, str) else _fail()
    if tp is float:
        return float(value)
    if tp is int:
        number = float(value) if isinstance(value, str) and not value.lstrip("+-").isdigit() else value
        number = int(number) if isinstance(number, float) and number.is_integer() else number
        return int(number) if isinstance(number, (int, str)) else _fail()  # "5e3" ok, 2.5 not
    raise TypeError


def _fail():
    raise TypeError


def read_config_file(path: str | os.PathLike) -> dict:
    """Run a config file and return its public top-level simple values (modules, functions, _names ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (configs live in {REPO_ROOT / 'configs'})")
    if str(REPO_ROOT) not in sys.path:  # so presets can `from configs.base import *`
        sys.path.insert(0, str(REPO_ROOT))
    namespace = runpy.run_path(str(path))
    return {k: v for k, v in namespace.items() if not k.startswith("_") and isinstance(v, SIMPLE_TYPES)}


def parse_overrides(args: list[str]) -> dict:
    """['--key=value', '--flag'] -> {'key': 'value', 'flag': True}."""
    out = {}
    for arg in args:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --key=value")
        key, eq, value = arg[2:].partition("=")
        out[key.replace("-", "_")] = value if eq else True
    return out


def build_config(values: dict) -> TrainConfig:
    """Typed TrainConfig from flat {key: value}; unknown keys suggest the nearest valid one."""
    types_ = key_types()
    sections = {name: {} for name in SECTIONS}
    for key, value in values.items():
        if key not in types_:
            near = difflib.get_close_matches(key, types_, n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"unknown config key '{key}'{hint} (all keys: configs/base.py)")
        section, tp = types_[key]
        if value is True and tp is str and key == "resume":
            value = "latest"  # bare --resume
        sections[section][key] = coerce(key, value, tp)
    try:
        return TrainConfig(**{name: SECTIONS[name](**kw) for name, kw in sections.items()})
    except ValueError as e:  # GPTConfig's own checks
        raise ConfigError(str(e)) from None


def validate(cfg: TrainConfig) -> None:
    """Every check on config values in one place (inputs on disk are checked by check_inputs)."""
    flat = cfg.flat()
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key}={flat[key]!r} is not one of {', '.join(choices)}")
    for key in ("batch_size", "max_iters", "eval_interval", "log_interval", "keep_last", "max_nonfinite"):
        if flat[key] < (0 if key == "max_iters" else 1):
            raise ConfigError(f"{key}={flat[key]} must be positive")
    for key in ("total_batch_size", "warmup_iters", "eval_iters", "ckpt_interval", "sample_tokens",
                "hellaswag_interval", "hellaswag_limit", "grad_clip"):
        if flat[key] < 0:
            raise ConfigError(f"{key}={flat[key]} must be >= 0")
    for key in ("warmup_start_ratio", "lr_hold_frac", "min_lr_ratio", "cooldown_frac", "seq_len_warmup_frac"):
        if not 0.0 <= flat[key] <= 1.0:
            raise ConfigError(f"{key}={flat[key]} must be a fraction in [0, 1]")
    if cfg.min_lr > cfg.optim.learning_rate:
        raise ConfigError(f"min_lr={cfg.min_lr} is above learning_rate={cfg.optim.learning_rate}")
    bad = [s for s in cfg.data.seq_len_warmup if not 0 < s <= cfg.model.block_size]
    if bad:
        raise ConfigError(f"seq_len_warmup stages {bad} must be in 1..block_size={cfg.model.block_size}")
    if cfg.data.seq_len_warmup and cfg.data.seq_len_warmup_frac == 0:
        raise ConfigError("seq_len_warmup is set but seq_len_warmup_frac=0; set e.g. --seq_len_warmup_frac=0.3")
    if cfg.run.hellaswag_interval % cfg.run.eval_interval:
        raise ConfigError(f"hellaswag_interval={cfg.run.hellaswag_interval} must be a multiple of "
                          f"eval_interval={cfg.run.eval_interval} (HellaSwag runs at evaluations)")
    try:
        parallel.check_parallel_config(cfg.run.parallelism, cfg.run.activation_checkpointing, cfg.optim.optimizer,
                                       cfg.run.dtype)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.run.parallelism == "fsdp" and cfg.run.hellaswag_interval:
        raise ConfigError("hellaswag_interval is not available with parallelism=fsdp; set --hellaswag_interval=0 "
                          "and score the consolidated checkpoint with hellaswag.py")
    init = cfg.run.init_from
    if init not in ("scratch", "resume") and not init.startswith("gpt2"):
        raise ConfigError(f"init_from={init!r}: use scratch, resume, or a GPT-2 name (gpt2, gpt2-medium, ...)")


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Config file (optional) + `--key=value` overrides -> validated TrainConfig."""
    values = read_config_file(path) if path else {}
    values.update(parse_overrides(overrides or []))
    cfg = build_config(values)
    if cfg.run.init_from == "resume" and not cfg.run.resume:
        cfg.run.resume = "latest"  # nanoGPT spelling
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- schedules (pure functions)

def warmup_lr(step: int, warmup_iters: int, max_lr: float, start_ratio: float = 0.0) -> float:
    """Linear warmup: step 0 -> max_lr*(start_ratio + (1-start_ratio)/warmup_iters), step warmup_iters-1 -> max_lr."""
    return max_lr * (start_ratio + (1.0 - start_ratio) * (step + 1) / warmup_iters)


def cosine_lr(step: int, max_lr: float, min_lr: float, warmup_iters: int, decay_iters: int,
              start_ratio: float = 0.0) -> float:
    """Warmup, cosine from max_lr to min_lr at decay_iters, then min_lr held (GPT* holds the last 10%)."""
    if step < warmup_iters:
        return warmup_lr(step, warmup_iters, max_lr, start_ratio)
    if step >= decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / (decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def wsd_lr(step: int, max_lr: float, min_lr: float, warmup_iters: int, max_iters: int,
           cooldown_frac: float, shape: str = "linear", start_ratio: float = 0.0) -> float:
    """Warmup-stable-decay: warmup, max_lr until the last cooldown_frac of steps, then linear or 1-sqrt to min_lr."""
    if step < warmup_iters:
        return warmup_lr(step, warmup_iters, max_lr, start_ratio)
    cool_start = max_iters - round(cooldown_frac * max_iters)
    if step < cool_start:
        return max_lr
    progress = min(1.0, (step - cool_start) / max(1, max_iters - cool_start))
    factor = 1.0 - math.sqrt(progress) if shape == "1-sqrt" else 1.0 - progress
    return min_lr + (max_lr - min_lr) * factor


def constant_lr(step: int, max_lr: float, warmup_iters: int, start_ratio: float = 0.0) -> float:
    return warmup_lr(step, warmup_iters, max_lr, start_ratio) if step < warmup_iters else max_lr


def get_lr(step: int, cfg: TrainConfig) -> float:
    """The peak-lr-scale learning rate at a (0-based) optimizer step, per the config's schedule."""
    s, max_lr = cfg.schedule, cfg.optim.learning_rate
    if s.lr_schedule == "wsd":
        return wsd_lr(step, max_lr, cfg.min_lr, s.warmup_iters, s.max_iters, s.cooldown_frac,
                      s.cooldown_shape, s.warmup_start_ratio)
    if s.lr_schedule == "constant":
        return constant_lr(step, max_lr, s.warmup_iters, s.warmup_start_ratio)
    decay = s.lr_decay_iters if s.lr_decay_iters is not None else round(s.max_iters * (1 - s.lr_hold_frac))
    return cosine_lr(step, max_lr, cfg.min_lr, s.warmup_iters, decay, s.warmup_start_ratio)


def seq_len_at(step: int, max_iters: int, block_size: int, stages: tuple[int, ...], frac: float) -> int:
    """Staged sequence-length warmup: stages split the first frac*max_iters steps equally, then block_size."""
    span = int(frac * max_iters)
    if not stages or step >= span:
        return block_size
    return stages[step * len(stages) // span]


def grad_accum_steps(total_batch_size: int, batch_size: int, block_size: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that one step sees total_batch_size tokens."""
    per_micro = batch_size * block_size * world_size
    if total_batch_size == 0:
        return 1
    if total_batch_size % per_micro:
        nearest = max(1, round(total_batch_size / per_micro)) * per_micro
        raise ConfigError(
            f"total_batch_size={total_batch_size} is not divisible by batch_size*block_size*world_size = "
            f"{batch_size}*{block_size}*{world_size} = {per_micro}; set --total_batch_size={nearest} "
            f"(or 0 for no accumulation) or change batch_size")
    return total_batch_size // per_micro


# ----------------------------------------------------------------------------- distributed / device

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
    def ddp(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def setup_distributed(device: str = "auto") -> DistInfo:
    """torchrun's env (RANK, LOCAL_RANK, WORLD_SIZE) -> process group (NCCL on CUDA, Gloo otherwise);
    without it a single process. Multi-node: torchrun's rendezvous sets the same variables."""
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
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_object(obj, info: DistInfo) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not info.ddp:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def resolve_dtype(dtype: str, device_type: str) -> str:
    """auto: bf16 on CUDA that supports it, else fp16 on CUDA, fp32 on CPU/MPS."""
    if dtype != "auto":
        return dtype
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def autocast_context(device_type: str, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def use_fused_loss(setting: str, device_type: str) -> bool:
    """fused_loss=auto: the chunked output layer + loss on CPU (memory-bound there); on accelerators the
    (compiled) full-logits path, which is the well-trodden fast one."""
    return setting == "on" or (setting == "auto" and device_type == "cpu")


def synchronize(device_type: str) -> None:
    if device_type == "cuda":
        torch.cuda.synchronize()
    elif device_type == "mps":
        torch.mps.synchronize()


# Dense bf16/fp16 tensor-core peak FLOP/s per device (first substring match of the device name wins).
PEAK_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("A100", 312e12),
              ("L40S", 362e12), ("A10", 125e12), ("L4", 121e12), ("4090", 165e12), ("3090", 71e12), ("V100", 125e12), ("T4", 65e12))
CPU_FLOPS_PER_CORE = 2.5e9 * 32  # rough estimate: 2.5 GHz x 32 fp32 FLOP/cycle (2 AVX2 FMA units)


@functools.cache
def cpu_has_bf16_dot() -> bool:
    """AVX512_BF16 / AMX: bf16 matmuls run at twice the fp32 FMA rate."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    threads = torch.get_num_threads()
    bf16 = dtype == "bfloat16" and cpu_has_bf16_dot()
    return (threads * CPU_FLOPS_PER_CORE * (2 if bf16 else 1),
            f"CPU x{threads} threads, {'bf16 dot products' if bf16 else 'fp32 FMA'} (rough estimate)")


# ----------------------------------------------------------------------------- startup checks

def check_data(cfg: TrainConfig):
    """Shards exist and the tokenizer in meta.json matches vocab_size; returns the tokenizer (or None)."""
    d = Path(cfg.data.data_dir)
    fix = f"run `python prepare_data.py ... --out {d}` or set --data_dir"
    if not d.is_dir():
        raise ConfigError(f"data_dir {d} does not exist; {fix}")
    for split in ("train",) + (("val",) if cfg.run.eval_iters else ()):
        try:
            found = datalib.list_shards(d, split)
        except (FileNotFoundError, RuntimeError) as e:
            raise ConfigError(f"{e}; {fix}") from None
        if not found:
            raise ConfigError(f"data_dir {d} has no {split} shards; {fix}")
    tokenizer = datalib.load_tokenizer_for(d)
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise ConfigError(
            f"the shards in {d} use a {tokenizer.kind} tokenizer with vocab_size={tokenizer.vocab_size} (meta.json) "
            f"but the model has vocab_size={cfg.model.vocab_size}; set --vocab_size={tokenizer.vocab_size} "
            f"(embedding padding is pad_vocab_multiple's job) or point data_dir at matching shards")
    return tokenizer


def find_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from, or None; clear error if --resume finds nothing."""
    if not cfg.run.resume:
        return None
    where = cfg.run.out_dir if cfg.run.resume == "latest" else cfg.run.resume
    try:
        if cfg.run.parallelism == "fsdp" or parallel.is_sharded_checkpoint(where):
            return parallel.resolve_sharded(where)  # sharded ckpt_NNNNNNN/ directories (parallel.py)
        return resolve_checkpoint(where)
    except FileNotFoundError as e:
        raise ConfigError(f"--resume: {e}. Drop --resume to start a new run, or pass --resume=PATH") from None


def check_model_config(cfg: TrainConfig, ckpt: dict, path: Path) -> None:
    diff = [f"{k}={v!r} (config says {getattr(cfg.model, k)!r})" for k, v in ckpt["model_config"].items()
            if hasattr(cfg.model, k) and getattr(cfg.model, k) != v]
    if diff:
        raise ConfigError(f"checkpoint {path} was trained with {', '.join(diff)}; use the checkpoint's model "
                          f"settings (--{diff[0].split('=')[0]}=...) or a new out_dir without --resume")


def check_optimizer_available(cfg: TrainConfig) -> None:
    if cfg.optim.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("optimizer=adamw8bit needs bitsandbytes (a CUDA machine): `pip install "
                              "bitsandbytes`, or use --optimizer=adamw") from None
    if cfg.optim.optimizer == "muon" and not hasattr(torch.optim, "Muon"):
        raise ConfigError(f"optimizer=muon needs torch.optim.Muon (torch >= 2.9); torch is {torch.__version__}")


# ----------------------------------------------------------------------------- building

def build_optimizers(raw: GPT, cfg: TrainConfig, device_type: str) -> list[torch.optim.Optimizer]:
    """adamw (model.configure_optimizers), muon (Muon for hidden matrices + AdamW rest), or adamw8bit."""
    o = cfg.optim
    betas = (o.beta1, o.beta2)
    if o.optimizer == "adamw":
        return [raw.configure_optimizers(o.weight_decay, o.learning_rate, betas, o.eps, device_type)]
    if o.optimizer == "adamw8bit":
        import bitsandbytes as bnb
        return [bnb.optim.AdamW8bit(raw.param_groups(o.weight_decay), lr=o.learning_rate, betas=betas, eps=o.eps)]
    hidden = [p for n, p in raw.named_parameters() if p.requires_grad and p.dim() == 2 and n.startswith("transformer.h.")]
    hidden_ids = {id(p) for p in hidden}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in hidden_ids]} for g in raw.param_groups(o.weight_decay)]
    rest = [g for g in rest if g["params"]]
    muon = torch.optim.Muon(hidden, lr=o.muon_lr, weight_decay=o.weight_decay, momentum=o.muon_momentum)
    fused = {"fused": True} if device_type == "cuda" else {}
    return [muon, torch.optim.AdamW(rest, lr=o.learning_rate, betas=betas, eps=o.eps, **fused)]


def build_data(cfg: TrainConfig, info: DistInfo) -> tuple:
    """The training DataLoader of this rank and its fixed validation batches."""
    d = cfg.data
    try:
        loader = datalib.DataLoader(d.data_dir, "train", d.batch_size, cfg.model.block_size, rank=info.rank,
                                    world_size=info.world_size, seed=cfg.run.seed)
        val = (datalib.val_batches(d.data_dir, d.batch_size, cfg.model.block_size, cfg.run.eval_iters,
                                   rank=info.rank, world_size=info.world_size) if cfg.run.eval_iters else [])
    except ValueError as e:  # too little data for one batch
        raise ConfigError(f"{e}; lower batch_size or block_size, or prepare more data") from None
    return loader, val


def build_model(cfg: TrainConfig) -> GPT:
    if cfg.run.init_from.startswith("gpt2"):
        model = GPT.from_pretrained(cfg.run.init_from, pad_vocab_multiple=cfg.model.pad_vocab_multiple)
        cfg.model = model.config
        return model
    return GPT(cfg.model)


def place_model(raw: GPT, cfg: TrainConfig, device: str, dtype: str, distributed: bool) -> bool:
    """Activation checkpointing if asked, then FSDP sharding (parallelism=fsdp with a process group; block by
    block onto the device, so it never holds a full copy) or a move to the device. Returns whether sharded."""
    if cfg.run.activation_checkpointing == "block":
        parallel.apply_activation_checkpointing(raw)
    if distributed and cfg.run.parallelism == "fsdp":
        parallel.apply_fsdp(raw, torch.device(device).type, dtype)
        return True
    raw.to(device)
    return False


def wrap_model(raw: GPT, cfg: TrainConfig, device: str, ddp: bool) -> tuple[nn.Module, nn.Module]:
    """(model for evaluation: compiled or raw, model for training: the same, under DDP if ddp)."""
    model = torch.compile(raw, mode=cfg.run.compile_mode) if cfg.run.compile else raw
    if not ddp:
        return model, model
    dev = torch.device(device)
    return model, DDP(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def strip_prefix(state: dict) -> dict:
    return {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}


def rng_state() -> dict:
    """This process's RNG states (torch CPU/CUDA, numpy, python)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def atomic_save(obj, path: Path) -> None:
    """torch.save to a hidden temporary file, then os.replace: a crash never leaves a half-written path."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prune_checkpoints(out_dir: Path, keep_last: int) -> None:
    found = sorted((int(m.group(1)), p) for p in out_dir.glob("ckpt_*.pt")
                   if (m := re.fullmatch(r"ckpt_(\d+)\.pt", p.name)))
    for _, p in found[:-keep_last]:
        p.unlink(missing_ok=True)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class StopSignal:
    """SIGTERM/SIGINT set a flag (the loop finishes the step, saves, exits); a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
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
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, exiting",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """Rows to out_dir/metrics.jsonl (rank 0) and to wandb when enabled."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.wandb = init_wandb(cfg, out_dir) if enabled and cfg.run.wandb_log else None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            prefix = "val" if row["type"] == "eval" else "train"
            self.wandb.log({f"{prefix}/{k}": v for k, v in row.items() if isinstance(v, (int, float))
                            and k != "step"}, step=row["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def init_wandb(cfg: TrainConfig, out_dir: Path):
    import wandb  # optional dependency, imported only when used
    return wandb.init(project=cfg.run.wandb_project, name=cfg.run.wandb_run_name or None, config=cfg.flat(),
                      dir=str(out_dir))


class NonFiniteLoss(RuntimeError):
    """Raised after max_nonfinite non-finite losses in a row."""


# ----------------------------------------------------------------------------- the trainer

@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    seq_len: int
    tokens: int
    seconds: float
    stop: bool
    finite: bool


def optimizer_step(optimizers: list, scaler, model: nn.Module, grad_clip: float,
                   loss_finite: bool = True) -> tuple[float, bool]:
    """Unscale, clip, step (skipped if non-finite; fp16's scaler skips and backs off by itself), zero grads.
    Returns (grad norm, whether the update was taken)."""
    for opt in optimizers:
        scaler.unscale_(opt)
    norm = parallel.clip_grad_norm(model.parameters(), grad_clip or float("inf"))
    fp16 = scaler.is_enabled()
    finite = loss_finite and (math.isfinite(norm) or fp16)
    if finite or fp16:
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return norm, finite


class Trainer:
    """Holds the run's state; train() = Trainer(cfg, info).fit()."""

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.device = info.device
        self.device_type = "cuda" if info.device.startswith("cuda") else info.device
        self.out_dir = Path(cfg.run.out_dir)
        # --- bad input, before any work
        self.grad_accum = grad_accum_steps(cfg.data.total_batch_size, cfg.data.batch_size,
                                           cfg.model.block_size, info.world_size)
        check_optimizer_available(cfg)
        self.tokenizer = check_data(cfg)
        self.resume_path = find_resume(cfg)
        ckpt = self.load_resume_checkpoint()
        # --- build
        self.dtype = resolve_dtype(cfg.run.dtype, self.device_type)
        self.autocast = autocast_context(self.device_type, self.dtype)
        self.fused_loss = use_fused_loss(cfg.run.fused_loss, self.device_type)
        if self.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.run.seed)  # identical init on every rank
        self.raw_model = build_model(cfg)
        self.sharded = cfg.run.parallelism == "fsdp"  # sharded (DCP) checkpoints, also in a single process
        if self.sharded and self.dtype == "float16":
            raise ConfigError("parallelism=fsdp needs bfloat16 or float32 and this GPU has no bf16 (dtype=auto "
                              "picked float16); use --parallelism=ddp or --dtype=float32")
        self.fsdp = place_model(self.raw_model, cfg, self.device, self.dtype, distributed=info.ddp)
        self.optimizers = build_optimizers(self.raw_model, cfg, self.device_type)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.dtype == "float16")
        self.loader, self.val_data = build_data(cfg, info)
        torch.manual_seed(cfg.run.seed + info.rank)  # dropout differs per rank
        self.step, self.best_val, self.last_val, self.val_step = 0, float("inf"), None, -1
        if ckpt is not None:
            self.restore(ckpt)
        self.model, self.ddp_model = wrap_model(self.raw_model, cfg, self.device, ddp=info.ddp and not self.fsdp)
        self.metrics = None

    # -- resume

    def load_resume_checkpoint(self) -> dict | None:
        if self.resume_path is None:
            return None
        if parallel.is_sharded_checkpoint(self.resume_path):  # weights/optimizer are loaded later, sharded
            ckpt = torch.load(self.resume_path / parallel.META, map_location="cpu", weights_only=False)
        else:
            ckpt = torch.load(self.resume_path, map_location="cpu", weights_only=False)
            if ckpt.get("optimizer") is None:
                raise ConfigError(f"{self.resume_path} holds weights only (a consolidated checkpoint); resume from "
                                  f"its sharded directory {ckpt.get('consolidated_from', '')}")
        check_model_config(self.cfg, ckpt, self.resume_path)
        return ckpt

    def restore(self, ckpt: dict) -> None:
        """Model, optimizer, scaler, step, data position and RNG from a checkpoint."""
        if parallel.is_sharded_checkpoint(self.resume_path):  # resharded onto this world size
            parallel.load_sharded(self.resume_path, self.raw_model, self.optimizers)
        else:
            self.raw_model.load_state_dict(strip_prefix(ckpt["model"]))
            for opt, state in zip(self.optimizers, ckpt["optimizer"]):
                opt.load_state_dict(state)
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = ckpt["step"]
        self.best_val = ckpt.get("best_val_loss", float("inf"))
        self.last_val = ckpt.get("val_loss")
        old_world, rank = len(ckpt["rng"]), self.info.rank
        self.loader.load_state_dict(ckpt["loader"][0])  # a position in the global stream, same on all ranks
        if old_world == self.info.world_size:
            set_rng_state(ckpt["rng"][rank])
            note = "data order and RNG continue exactly"
        else:
            torch.manual_seed(self.cfg.run.seed + rank + self.step)
            note = (f"checkpoint was written by {old_world} rank(s), now {self.info.world_size}: the data stream "
                    f"continues from the same position (no window skipped or repeated), but each step now deals "
                    f"{self.cfg.data.batch_size}x{self.info.world_size} windows across the ranks; per-rank RNG "
                    f"(dropout) re-seeded, so results are not bit-identical to an uninterrupted run")
        self.print(f"resumed from {self.resume_path} at step {self.step}: {note}")

    # -- one optimizer step

    def set_lr(self, lr: float) -> None:
        scale = lr / self.cfg.optim.learning_rate
        for opt, bases in zip(self.optimizers, self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * scale

    def forward_backward(self, seq_len: int) -> tuple[torch.Tensor, int]:
        """grad_accum micro-steps; gradient sync only on the last. Returns (mean loss, tokens on this rank)."""
        loss_sum = torch.zeros((), device=self.device)
        tokens = 0
        for micro in range(self.grad_accum):
            x, y = self.loader.next_batch(seq_len=seq_len)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            tokens += x.numel()
            last = micro == self.grad_accum - 1
            parallel.set_micro_step(self.raw_model, last)  # FSDP: communicate on the last micro-step only
            ddp = isinstance(self.ddp_model, DDP)
            sync = contextlib.nullcontext() if last or not ddp else self.ddp_model.no_sync()
            with sync:
                with self.autocast:
                    _, loss = self.ddp_model(x, y, return_logits=not self.fused_loss)
                loss = loss / self.grad_accum
                loss_sum += loss.detach()
                self.scaler.scale(loss).backward()
        return loss_sum, tokens

    def all_reduce_stats(self, loss: torch.Tensor, stop: bool) -> tuple[float, bool]:
        """Mean loss over ranks and whether any rank was asked to stop (one collective)."""
        stats = torch.stack([loss.float(), torch.tensor(float(stop), device=self.device)])
        if self.info.ddp:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            stats[0] /= self.info.world_size
        return stats[0].item(), stats[1].item() > 0

    def optimizer_step(self, loss_finite: bool) -> tuple[float, bool]:
        return optimizer_step(self.optimizers, self.scaler, self.raw_model, self.cfg.optim.grad_clip, loss_finite)

    def train_step(self, stop: StopSignal) -> StepResult:
        """One optimizer step; also agrees across ranks whether a stop signal has arrived (by the step's end)."""
        cfg = self.cfg
        synchronize(self.device_type)
        t0 = time.perf_counter()
        lr = get_lr(self.step, cfg)
        self.set_lr(lr)
        seq_len = seq_len_at(self.step, cfg.schedule.max_iters, cfg.model.block_size,
                             cfg.data.seq_len_warmup, cfg.data.seq_len_warmup_frac)
        self.ddp_model.train()
        loss, tokens = self.forward_backward(seq_len)
        loss, stopping = self.all_reduce_stats(loss, stop.requested)
        norm, finite = self.optimizer_step(math.isfinite(loss))
        synchronize(self.device_type)
        return StepResult(loss, norm, lr, seq_len, tokens * self.info.world_size, time.perf_counter() - t0,
                          stopping, finite)

    # -- evaluation

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches of all ranks."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for x, y in self.val_data:
            with self.autocast:
                _, loss = self.model(x.to(self.device), y.to(self.device), return_logits=not self.fused_loss)
            total += loss.float()
        total /= max(1, len(self.val_data))
        if self.info.ddp:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            total /= self.info.world_size
        self.model.train()
        return total.item()

    def run_evals(self) -> None:
        """Val loss, optional HellaSwag and a sample; logged as one eval row."""
        row = {"type": "eval", "step": self.step}
        if self.val_data:
            row["val_loss"] = self.last_val = self.evaluate()
            self.val_step = self.step
            self.print(f"step {self.step}: val loss {self.last_val:.4f}")
        row.update(self.hellaswag())
        self.metrics.write(row)
        self.print_sample()

    def hellaswag(self) -> dict:
        n = self.cfg.run.hellaswag_interval
        if not n or self.step % n or not (REPO_ROOT / "hellaswag.py").exists() or self.tokenizer is None:
            return {}
        import hellaswag  # lazy: only when enabled
        res = hellaswag.evaluate(self.raw_model, self.tokenizer, limit=self.cfg.run.hellaswag_limit or None,
                                 device=self.device, rank=self.info.rank, world_size=self.info.world_size,
                                 data=self.cfg.run.hellaswag_data or None,
                                 autocast_dtype=None if self.dtype == "float32" else getattr(torch, self.dtype))
        self.print(f"step {self.step}: hellaswag acc {res['acc']:.4f} acc_norm {res['acc_norm']:.4f} "
                   f"({res['num_examples']} examples, {res['style']} style)")
        return {"hellaswag_acc": res["acc"], "hellaswag_acc_norm": res["acc_norm"]}

    def print_sample(self) -> None:
        n = self.cfg.run.sample_tokens
        if not n or self.tokenizer is None or not (self.info.is_master or self.fsdp):
            return  # FSDP: every rank takes part in each forward (same seed, same tokens); rank 0 prints
        tok = self.tokenizer
        start = next((t for t in (tok.bos_id, tok.eot_id) if t is not None), None)
        prompt = [start] if start is not None else tok.encode("\n")
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.run.seed)  # never touches global RNG
        idx = torch.tensor([prompt], dtype=torch.long, device=self.device)
        with self.autocast:
            out = self.raw_model.generate(idx, n, temperature=0.8, top_k=200, generator=gen)
        self.raw_model.train()
        self.print(f"sample: {tok.decode(out[0, len(prompt):].tolist())!r}")

    # -- checkpoints

    def save_checkpoint(self) -> None:
        """Gather every rank's RNG and loader state; rank 0 writes ckpt_{step}.pt (and best.pt), keeps last K.
        parallelism=fsdp: every rank writes its shard of ckpt_{step}/ instead (see save_sharded)."""
        rngs = gather_object(rng_state(), self.info)
        loaders = gather_object(self.loader.state_dict(), self.info)
        is_best = self.val_step == self.step and self.last_val < self.best_val
        if is_best:
            self.best_val = self.last_val
        ckpt = {"format": CHECKPOINT_FORMAT, "model_config": asdict(self.cfg.model),
                "tokenizer": self.tokenizer.spec() if self.tokenizer is not None else None,
                "config": self.cfg.flat(), "step": self.step, "scaler": self.scaler.state_dict(),
                "loader": loaders, "rng": rngs, "val_loss": self.last_val, "best_val_loss": self.best_val,
                "world_size": self.info.world_size}
        if self.sharded:
            return self.save_sharded(ckpt)
        if not self.info.is_master:
            return
        ckpt.update(model=self.raw_model.state_dict(), optimizer=[opt.state_dict() for opt in self.optimizers])
        path = self.out_dir / f"ckpt_{self.step:07d}.pt"
        atomic_save(ckpt, path)
        if is_best:
            atomic_save(ckpt, self.out_dir / "best.pt")
        prune_checkpoints(self.out_dir, self.cfg.run.keep_last)
        self.print(f"saved {path}" + (" (best)" if is_best else ""))

    def save_sharded(self, meta: dict) -> None:
        """FSDP: ckpt_{step}/ via torch.distributed.checkpoint (parallel.py; no best.pt); the final step is
        also consolidated into ckpt_{step}.pt for sample.py / hellaswag.py / export_hf.py."""
        path = parallel.save_sharded(self.out_dir, self.step, self.raw_model, self.optimizers, meta,
                                     self.cfg.run.keep_last)
        self.print(f"saved {path}/ (sharded)")
        if self.step >= self.cfg.schedule.max_iters:
            single = parallel.consolidate_on_rank0(path, self.out_dir / f"ckpt_{self.step:07d}.pt")
            self.print(f"consolidated {single}")

    # -- logging

    def print(self, *args) -> None:
        if not self.info.is_master:
            return
        if getattr(self, "bar", None) is not None and not self.bar.disable:
            self.bar.write(" ".join(map(str, args)))   # log lines scroll above the progress bar
        else:
            print(*args, flush=True)

    def progress_bar(self) -> tqdm:
        """A tqdm bar over the steps, shown only on rank 0 when stdout is a terminal (logs stay plain)."""
        return tqdm(total=self.cfg.schedule.max_iters, initial=self.step, unit="step", dynamic_ncols=True,
                    disable=not (self.info.is_master and sys.stdout.isatty()), leave=False)

    def header(self) -> None:
        cfg, info = self.cfg, self.info
        tokens = cfg.data.batch_size * cfg.model.block_size * info.world_size * self.grad_accum
        peak, peak_src = peak_flops(self.device_type, self.dtype)
        self.print(json.dumps({name: asdict(getattr(cfg, name)) for name in SECTIONS}, indent=1))
        self.print(
            f"git {git_commit()} | python {platform.python_version()} torch {torch.__version__} numpy {np.__version__}\n"
            f"device {self.device} x{info.world_size} ranks | dtype {self.dtype} | compile {cfg.run.compile} | "
            f"peak {peak / 1e12:.2f} TFLOP/s per device ({peak_src})\n"
            f"params {self.raw_model.num_params():,} (non-embedding) | tokens/step {tokens:,} = {cfg.data.batch_size} "
            f"x {cfg.model.block_size} x {info.world_size} ranks x {self.grad_accum} accum | "
            f"steps {self.step} -> {cfg.schedule.max_iters} | out_dir {self.out_dir}")

    def log_step(self, r: StepResult, ema_s: float) -> None:
        if self.step % self.cfg.run.log_interval:
            return
        tok_s = r.tokens / r.seconds
        peak, _ = peak_flops(self.device_type, self.dtype)
        mfu = self.raw_model.estimate_mfu(tok_s / self.info.world_size, peak, r.seq_len)
        eta = (self.cfg.schedule.max_iters - self.step) * (ema_s if ema_s is not None else r.seconds)
        self.print(f"step {self.step}/{self.cfg.schedule.max_iters} | loss {r.loss:.4f} | lr {r.lr:.3e} | "
                   f"norm {r.grad_norm:.3f} | {r.seconds * 1000:.0f} ms | {tok_s:,.0f} tok/s | mfu {mfu:.2%} | "
                   f"eta {eta / 60:.1f} min" + ("" if r.finite else " | SKIPPED (non-finite)"))
        self.metrics.write({"type": "train", "step": self.step, "loss": r.loss, "lr": r.lr,
                            "grad_norm": r.grad_norm, "ms": r.seconds * 1000, "tok_s": tok_s, "mfu": mfu,
                            "seq_len": r.seq_len})

    # -- the loop

    def due(self, interval: int) -> bool:
        return self.step % interval == 0 or self.step >= self.cfg.schedule.max_iters

    def fit(self) -> dict:
        cfg = self.cfg
        if self.info.is_master:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(cfg.flat(), indent=1))
        self.metrics = MetricsLog(cfg, self.out_dir, self.info.is_master)
        self.header()
        self.bar = self.progress_bar()
        start, nonfinite, ema_s, result, reason = self.step, 0, None, None, "done"
        try:
            with StopSignal() as stop:
                while True:
                    if self.due(cfg.run.eval_interval) and not (self.step == start and start > 0):
                        self.run_evals()
                    if self.step > start and self.due(cfg.run.ckpt_interval or cfg.run.eval_interval):
                        self.save_checkpoint()
                    if self.step >= cfg.schedule.max_iters:
                        break
                    result = self.train_step(stop)
                    self.step += 1
                    nonfinite = 0 if result.finite else nonfinite + 1
                    if nonfinite >= cfg.run.max_nonfinite:
                        raise NonFiniteLoss(
                            f"{nonfinite} non-finite losses in a row, the last at step {self.step}; stopping. "
                            f"The last good checkpoint in {self.out_dir} is intact: lower learning_rate or "
                            f"check the data, then --resume")
                    if self.step > start + 1:  # the first step (compilation, allocator warmup) is not typical
                        ema_s = result.seconds if ema_s is None else 0.9 * ema_s + 0.1 * result.seconds
                    self.log_step(result, ema_s)
                    self.bar.update(1)
                    self.bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)
                    if result.stop:
                        self.save_checkpoint()
                        reason = "signal"
                        self.print(f"stopped by signal at step {self.step}; resume with --resume")
                        break
        finally:
            self.bar.close()
            self.metrics.close()
        return {"step": self.step, "train_loss": result.loss if result else None, "val_loss": self.last_val,
                "best_val_loss": self.best_val, "stopped": reason}


def train(cfg: TrainConfig) -> dict:
    """Train per cfg (single process or under torchrun); returns final metrics."""
    info = setup_distributed(cfg.run.device)
    try:
        return Trainer(cfg, info).fit()
    finally:
        cleanup_distributed()


USAGE = "usage: python train.py [CONFIG.py] [--key=value ...]   (keys: configs/base.py; --help lists them)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + USAGE)
        for key, value in TrainConfig().flat().items():
            print(f"  --{key}={value}")
        return
    path = argv[0] if argv and not argv[0].startswith("--") else None
    is_master = int(os.environ.get("RANK", 0)) == 0
    try:
        train(load_config(path, argv[1:] if path else argv))
    except ConfigError as e:
        if is_master:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as e:
        if is_master:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
