"""Train a GPT (model.py) on prepared token shards (data.py): one loop for CPU, one GPU, many GPUs, many nodes.

    python train.py configs/shakespeare_tiny.py --max_iters=40 --out_dir=/tmp/run
    torchrun --standalone --nproc_per_node=8 train.py configs/gpt2_124m.py
    python train.py configs/X.py --resume            # continue the newest checkpoint in out_dir

A config file is a Python file whose public top-level simple values are config keys; `--key=value`
overrides them (config.py: the keys, their defaults and checks; `--help` lists them). Device, processes
and precision come from runtime.py, checkpoint files from checkpoint.py; this file is the loop.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoint
import data as datalib
import evaluate
import optim
import parallel
import runtime
import sample
from config import (SECTIONS, ConfigError, TrainConfig, check_data, check_gpu_extras, check_optimizer_available,
                    grad_accum_steps, help_text, load_config)
from load import load_model
from model import GPT
from runtime import DistInfo

REPO_ROOT = Path(__file__).resolve().parent
CHECKPOINT_FORMAT = 1
TASK_FLAGS = evaluate.Flags(data_dir="--tasks_dir", tasks="--tasks=")  # task errors name train.py's keys
INTERRUPTED = 130  # exit status after a Ctrl-C save (128 + SIGINT): `set -e` scripts stop instead of going on


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


def stage_at(step: int, max_iters: int, final: int, stages: tuple[int, ...], frac: float) -> int:
    """Staged warmup (sequence length, batch size): stages split the first frac*max_iters steps equally, then final."""
    span = int(frac * max_iters)
    if not stages or step >= span:
        return final
    return stages[step * len(stages) // span]


# ----------------------------------------------------------------------------- startup checks

def find_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from, or None; clear error if --resume finds nothing."""
    if not cfg.run.resume:
        return None
    where = cfg.run.out_dir if cfg.run.resume == "latest" else cfg.run.resume
    try:
        if cfg.run.parallelism == "fsdp" or parallel.is_sharded_checkpoint(where):
            return parallel.resolve_sharded(where)  # sharded ckpt_NNNNNNN/ directories (parallel.py)
        return checkpoint.resolve_checkpoint(where)
    except FileNotFoundError as e:
        raise ConfigError(f"--resume: {e}. Drop --resume to start a new run, or pass --resume=PATH") from None


def check_resumable(cfg: TrainConfig, ckpt: dict, path: Path, tokenizer) -> None:
    """The checkpoint's model settings and tokenizer are the run's."""
    diff = [f"{k}={v!r} (config says {getattr(cfg.model, k)!r})" for k, v in ckpt["model_config"].items()
            if hasattr(cfg.model, k) and getattr(cfg.model, k) != v]
    if diff:
        raise ConfigError(f"checkpoint {path} was trained with {', '.join(diff)}; use the checkpoint's model "
                          f"settings (--{diff[0].split('=')[0]}=...) or a new out_dir without --resume")
    if ckpt.get("tokenizer") and tokenizer is not None:
        try:
            datalib.check_same_tokenizer(ckpt["tokenizer"], tokenizer.spec(), str(path), f"data_dir {cfg.data.data_dir}")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def read_history(out_dir: Path, step: int) -> list[dict]:
    """metrics.jsonl's rows up to a resumed step (read at start-up: a damaged line stops the run before work)."""
    path = out_dir / checkpoint.METRICS_FILE
    try:
        rows = checkpoint.read_metrics(path) if path.exists() else []
    except checkpoint.MetricsFileError as e:
        raise ConfigError(f"--resume: {e}, then --resume again") from None
    return [row for row in rows if row.get("step", 0) <= step]


def claim_out_dir(cfg: TrainConfig, info: DistInfo) -> None:
    """A fresh run never mixes with another run's files: stop, or with overwrite=True move them aside."""
    out_dir = Path(cfg.run.out_dir)
    old = checkpoint.run_files(out_dir)
    if old and not cfg.run.overwrite:
        names = ", ".join(p.name for p in old[:4]) + (", ..." if len(old) > 4 else "")
        raise ConfigError(f"out_dir {out_dir} holds another run ({names}); continue it with --resume, choose a new "
                          f"--out_dir, or pass --overwrite=True to move its files into {out_dir}/replaced_<time>/")
    if old and info.is_master:
        print(f"moved the previous run's files into {checkpoint.move_aside(out_dir, old)}", flush=True)
    runtime.barrier()


# ----------------------------------------------------------------------------- building

def build_data(cfg: TrainConfig, info: DistInfo, tokenizer) -> tuple:
    """The training loader of this rank (random windows or BOS-aligned rows) and its share of the fixed validation
    batches: (loader, (batches, how many of them count); data.val_batches)."""
    d, where = cfg.data, dict(rank=info.rank, world_size=info.world_size, seed=cfg.run.seed)
    try:
        loader = (datalib.DataLoader(d.data_dir, "train", d.batch_size, cfg.model.block_size, **where)
                  if d.loader == "random" else
                  datalib.BOSLoader(d.data_dir, "train", d.batch_size, cfg.model.block_size, buffer_size=d.pack_buffer,
                                    bos_id=datalib.document_start_id(d.data_dir, tokenizer), **where))
        val = (datalib.val_batches(d.data_dir, d.batch_size, cfg.model.block_size, cfg.run.eval_iters,
                                   rank=info.rank, world_size=info.world_size) if cfg.run.eval_iters else ([], 0))
    except datalib.ShardFormatError as e:  # damaged, truncated or foreign file
        raise ConfigError(f"{e}; re-run prepare_data.py for {d.data_dir} (or remove the file)") from None
    except ValueError as e:  # too little data for one batch
        raise ConfigError(f"{e}; lower batch_size or block_size, or prepare more data") from None
    return loader, val


def build_model(cfg: TrainConfig, loss) -> GPT:
    """The run's GPT (its loss chosen here, see GPT): new, or with init_from's weights."""
    if cfg.run.init_from in ("scratch", "resume"):
        return GPT(cfg.model, loss)
    pretrained, _ = load_model(cfg.run.init_from, trust=cfg.run.trust_checkpoint, tokenizer="skip",
                               pad_vocab_multiple=cfg.model.pad_vocab_multiple)
    cfg.model = pretrained.config
    model = GPT(cfg.model, loss)
    model.load_state_dict(pretrained.state_dict())
    return model


def place_model(raw: GPT, cfg: TrainConfig, device: str, dtype: str, distributed: bool) -> bool:
    """float8 Linear layers if asked, activation checkpointing if asked, then FSDP sharding (parallelism=fsdp
    with a process group; block by block onto the device, so it never holds a full copy) or a move to the
    device. Returns whether sharded."""
    if cfg.run.fp8 != "off":
        runtime.convert_to_fp8(raw, include_head=cfg.run.fp8 == "all")
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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class MetricsLog:
    """Rows to out_dir/metrics.jsonl (rank 0) and to wandb when enabled."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, enabled: bool, history: list[dict] | None = None):
        self.enabled = enabled
        self.path = out_dir / checkpoint.METRICS_FILE
        if enabled and history is not None:
            self.rewrite(history)
        self.wandb = init_wandb(cfg, out_dir) if enabled and cfg.run.wandb_log else None

    def rewrite(self, rows: list[dict]) -> None:
        """On resume: the rows up to the checkpoint only (the steps after it run again), so one history."""
        with datalib.atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {k: v if not (isinstance(v, float) and not math.isfinite(v)) else None for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")  # NaN/inf as null: strict JSON readers
        if self.wandb is not None:
            prefix = "val" if row["type"] == "eval" else "train"
            self.wandb.log({f"{prefix}/{k}": v for k, v in row.items() if isinstance(v, (int, float))
                            and k != "step"}, step=row["step"])  # (None, i.e. NaN, is left out)

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


def check_setup(cfg: TrainConfig, info: DistInfo) -> None:
    """The run's precision, parallelism and GPU extras work on this device (Stepper; train() checks it first)."""
    if cfg.run.parallelism == "fsdp" and runtime.resolve_dtype(cfg.run.dtype, info.device_type) == "float16":
        raise ConfigError("parallelism=fsdp needs bfloat16 or float32 and this GPU has no bf16 (dtype=auto "
                          "picked float16); use --parallelism=ddp or --dtype=float32")
    check_gpu_extras(cfg, info.device, runtime.use_fused_loss(cfg.run.fused_loss, info.device_type))


class Stepper:
    """The model, optimizers and precision of a run, and one optimizer step over them. Trainer is a Stepper
    with data, evaluation, checkpoints and logging; bench.py times a bare Stepper."""

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info, self.device = cfg, info, info.device
        self.device_type = info.device_type
        check_setup(cfg, info)
        self.dtype = runtime.resolve_dtype(cfg.run.dtype, self.device_type)
        self.sharded = cfg.run.parallelism == "fsdp"  # sharded (DCP) checkpoints, also in a single process
        runtime.enable_tf32(self.device)
        torch.manual_seed(cfg.run.seed)  # identical init on every rank
        self.raw_model = build_model(cfg, runtime.model_loss(cfg.run.fused_loss, self.device_type))
        self.fsdp = place_model(self.raw_model, cfg, self.device, self.dtype, distributed=info.distributed)
        self.optimizers = optim.build_optimizers(self.raw_model, cfg, self.device_type)
        self.peak_lrs = optim.peak_lrs(self.optimizers)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.dtype == "float16")
        self.model, self.ddp_model = wrap_model(self.raw_model, cfg, self.device,
                                                ddp=info.distributed and not self.fsdp)
        self.is_ddp = isinstance(self.ddp_model, DDP)

    def autocast(self):
        return runtime.autocast(self.device, self.dtype)

    def set_lr(self, lr: float) -> None:
        """lr is the schedule's value for learning_rate; every param group moves by the same factor."""
        optim.set_lr(self.optimizers, self.peak_lrs, lr / self.cfg.optim.learning_rate)

    def forward_backward(self, next_batch, grad_accum: int, interrupted=None) -> tuple[torch.Tensor, int] | None:
        """grad_accum micro-steps on next_batch() batches, gradients synced on the last only. Returns (mean loss,
        tokens on this rank), or None when interrupted() turned true between two micro-steps (grads zeroed)."""
        loss_sum = torch.zeros((), device=self.device)
        tokens = 0
        for micro in range(grad_accum):
            if micro and interrupted is not None and interrupted():
                for opt in self.optimizers:
                    opt.zero_grad(set_to_none=True)
                return None
            x, y = next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            tokens += x.numel()
            last = micro == grad_accum - 1
            parallel.set_micro_step(self.raw_model, last)  # FSDP: communicate on the last micro-step only
            with contextlib.nullcontext() if last or not self.is_ddp else self.ddp_model.no_sync():
                with self.autocast():
                    loss = self.ddp_model(x, y, label_smoothing=self.cfg.optim.label_smoothing)
                loss = loss / grad_accum
                loss_sum += loss.detach()
                self.scaler.scale(loss).backward()
        return loss_sum, tokens

    def optimizer_step(self, loss_finite: bool = True) -> tuple[float, bool]:
        """Unscale, clip, step (skipped if non-finite; fp16's scaler skips and backs off by itself), zero grads.
        Returns (grad norm, whether the update was taken)."""
        for opt in self.optimizers:
            self.scaler.unscale_(opt)
        norm = parallel.clip_grad_norm(self.raw_model.parameters(), self.cfg.optim.grad_clip or float("inf"))
        fp16 = self.scaler.is_enabled()
        finite = loss_finite and (math.isfinite(norm) or fp16)
        if finite or fp16:
            for opt in self.optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return norm, finite


def load_resume_checkpoint(cfg: TrainConfig, tokenizer, is_master: bool = True) -> tuple[Path | None, dict | None]:
    """(path, checkpoint dict) to resume from, or (None, None). With --resume (latest), a corrupt newest
    checkpoint is named and the previous good one is used instead."""
    path = find_resume(cfg)
    if path is None:
        return None, None
    sharded = parallel.is_sharded_checkpoint(path)
    candidates = [path]
    if cfg.run.resume == "latest" and not sharded:
        candidates = checkpoint.list_checkpoints(cfg.run.out_dir)[::-1]
    for i, candidate in enumerate(candidates):
        try:  # sharded: only meta.pt now, the weights/optimizer shards after the model is built
            ckpt = checkpoint.load_file(candidate / parallel.META if sharded else candidate, cfg.run.trust_checkpoint)
            if sharded and not cfg.run.trust_checkpoint:  # its DCP metadata is a pickle too: checked now, not later
                parallel.check_metadata(candidate)
        except checkpoint.CheckpointError as e:
            if isinstance(e, checkpoint.UntrustedCheckpoint) or i + 1 == len(candidates):
                raise ConfigError(f"--resume: {e}") from None
            if is_master:
                print(f"warning: {e}; resuming from the previous checkpoint {candidates[i + 1]} instead",
                      file=sys.stderr, flush=True)
            continue
        if not sharded and ckpt.get("optimizer") is None:
            origin = ckpt.get("consolidated_from") or f"a ckpt_*.pt in {candidate.parent}"
            raise ConfigError(f"{candidate} holds weights only (best.pt or a consolidated checkpoint), no optimizer "
                              f"or data state to resume; resume from {origin}")
        check_resumable(cfg, ckpt, candidate, tokenizer)
        return candidate, ckpt


@dataclass
class RunInputs:
    """What start-up reads and checks before anything is written or built (check_inputs)."""
    grad_accums: list[int]   # micro-steps per step: the run's, then each batch-warmup stage's
    tokenizer: object        # the shards' tokenizer (data.py), or None
    tasks: list              # the downstream tasks' data (evaluate.py), read now
    resume_path: Path | None  # the checkpoint to resume from (and its dict), or None
    ckpt: dict | None


def check_inputs(cfg: TrainConfig, info: DistInfo) -> RunInputs:
    """Bad input stops the run here, before out_dir is touched: batch sizes, optimizer, data, task files, and
    the checkpoint to resume from."""
    accums = [grad_accum_steps(tokens, cfg.data.batch_size, cfg.model.block_size, info.world_size)
              for tokens in (cfg.data.total_batch_size, *cfg.data.batch_warmup)]
    check_optimizer_available(cfg)
    check_setup(cfg, info)
    tokenizer = check_data(cfg)
    try:  # the downstream tasks' files, read now: a bad name or a missing file stops the run before it trains
        tasks = (evaluate.load_tasks(cfg.run.tasks, cfg.run.tasks_dir or None, flags=TASK_FLAGS)
                 if cfg.run.tasks_interval else [])
    except (OSError, ValueError) as e:
        raise ConfigError(f"--tasks={cfg.run.tasks}: {e}") from None
    return RunInputs(accums, tokenizer, tasks, *load_resume_checkpoint(cfg, tokenizer, info.is_master))


class Trainer(Stepper):
    """Holds the run's state; train() = Trainer(cfg, info, check_inputs(cfg, info)).fit() with out_dir locked."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, inputs: RunInputs):
        self.out_dir = Path(cfg.run.out_dir)
        self.grad_accum, *self.warmup_accums = inputs.grad_accums
        self.tokenizer, self.tasks = inputs.tokenizer, inputs.tasks
        self.resume_path, ckpt = inputs.resume_path, inputs.ckpt
        self.history = read_history(self.out_dir, ckpt["step"]) if ckpt is not None and info.is_master else None
        if ckpt is None:
            claim_out_dir(cfg, info)
        # --- build
        super().__init__(cfg, info)
        self.loader, (self.val_data, self.val_counted) = build_data(cfg, info, self.tokenizer)
        torch.manual_seed(cfg.run.seed + info.rank)  # dropout differs per rank
        self.step, self.best_val, self.last_val, self.val_step = 0, float("inf"), None, -1
        # a stop signal is heeded between micro-steps too (schedulers wait ~30-120 s); FSDP: at the step's end
        self.can_interrupt = max([self.grad_accum, *self.warmup_accums]) > 1 and not self.fsdp
        if ckpt is not None:
            self.restore(ckpt)
        self.metrics = None

    # -- resume

    def restore(self, ckpt: dict) -> None:
        """Model, optimizer, scaler, step, data position and RNG from a checkpoint."""
        if parallel.is_sharded_checkpoint(self.resume_path):  # resharded onto this world size
            parallel.load_sharded(self.resume_path, self.raw_model, self.optimizers, self.cfg.run.trust_checkpoint)
        else:
            self.raw_model.load_state_dict(checkpoint.strip_prefix(ckpt["model"]))
            for opt, state in zip(self.optimizers, ckpt["optimizer"]):
                opt.load_state_dict(state)
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = ckpt["step"]
        self.best_val = ckpt.get("best_val_loss", float("inf"))
        self.last_val = ckpt.get("val_loss")
        old_world, rank = len(ckpt["rng"]), self.info.rank
        try:
            self.loader.load_state_dict(ckpt["loader"][0])  # a position in the global stream, same on all ranks
        except ValueError as e:
            raise ConfigError(f"--resume from {self.resume_path}: {e}. The data order follows the run's seed, "
                              f"block_size and shards: resume with the settings it was trained with (config.json "
                              f"in its out_dir), or start a new run in a new --out_dir") from None
        if old_world == self.info.world_size:
            runtime.set_rng_state(ckpt["rng"][rank])
            note = "data order and RNG continue exactly"
        else:
            torch.manual_seed(self.cfg.run.seed + rank + self.step)
            note = (f"checkpoint was written by {old_world} rank(s), now {self.info.world_size}: the data stream "
                    f"continues from the same position (no window skipped or repeated), but each step now deals "
                    f"{self.cfg.data.batch_size}x{self.info.world_size} windows across the ranks; per-rank RNG "
                    f"(dropout) re-seeded, so results are not bit-identical to an uninterrupted run")
        self.print(f"resumed from {self.resume_path} at step {self.step}: {note}")

    # -- one optimizer step

    def all_reduce_stats(self, loss: torch.Tensor, stop: bool) -> tuple[float, bool]:
        """Mean loss over ranks and whether any rank was asked to stop (one collective)."""
        stats = runtime.all_reduce_sum(torch.stack([loss.float(), torch.tensor(float(stop), device=self.device)]))
        return stats[0].item() / self.info.world_size, stats[1].item() > 0

    def train_step(self, stop: runtime.StopSignal) -> StepResult | None:
        """One optimizer step; also agrees across ranks whether a stop signal has arrived (by the step's end).
        None: a signal arrived between micro-steps; the step is undone (data position and RNG as before it)."""
        cfg = self.cfg
        before = (self.loader.state_dict(), runtime.rng_state()) if self.can_interrupt else None
        runtime.synchronize(self.device)
        t0 = time.perf_counter()
        lr = get_lr(self.step, cfg)
        self.set_lr(lr)
        optim.set_momentum(self.optimizers, optim.muon_momentum_at(self.step, cfg.optim))
        seq_len = stage_at(self.step, cfg.schedule.max_iters, cfg.model.block_size,
                           cfg.data.seq_len_warmup, cfg.data.seq_len_warmup_frac)
        accum = stage_at(self.step, cfg.schedule.max_iters, self.grad_accum, self.warmup_accums,
                         cfg.data.batch_warmup_frac)
        self.ddp_model.train()
        out = self.forward_backward(lambda: self.loader.next_batch(seq_len=seq_len), accum,
                                    (lambda: runtime.any_rank(stop.requested)) if self.can_interrupt else None)
        if out is None:
            self.loader.load_state_dict(before[0])
            runtime.set_rng_state(before[1])
            return None
        loss, tokens = out
        loss, stopping = self.all_reduce_stats(loss, stop.requested)
        norm, finite = self.optimizer_step(math.isfinite(loss))
        runtime.synchronize(self.device)
        return StepResult(loss, norm, lr, seq_len, tokens * self.info.world_size, time.perf_counter() - t0,
                          stopping, finite)

    # -- evaluation

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches, which the ranks share out: the same on any number of ranks."""
        self.model.eval()
        sums = torch.zeros(2, device=self.device)  # summed batch losses, batches counted
        for i, (x, y) in enumerate(self.val_data):
            with self.autocast():
                loss = self.model(x.to(self.device), y.to(self.device))
            if i < self.val_counted:  # the rest only keep FSDP's collectives in step
                sums += torch.stack([loss.float(), torch.ones((), device=self.device)])
        self.model.train()
        sums = runtime.all_reduce_sum(sums)
        return (sums[0] / sums[1]).item()

    def run_evals(self) -> None:
        """Val loss, the downstream tasks when due, and a sample; logged as one eval row."""
        row = {"type": "eval", "step": self.step}
        if self.val_data:
            row["val_loss"] = self.last_val = self.evaluate()
            self.val_step = self.step
            self.print(f"step {self.step}: val loss {self.last_val:.4f}")
        row.update(self.loader.stats())  # bos_aligned: tokens dropped by cropping so far
        if row.get("cropped_tokens") is not None:
            self.print(f"step {self.step}: loader cropped {row['cropped_tokens']:,} tokens so far "
                       f"({row['cropped_frac']:.1%} of the documents' tokens taken)")
        row.update(self.score_tasks())
        self.metrics.write(row)
        self.print_sample()

    def score_tasks(self) -> dict:
        """The downstream tasks (evaluate.py) when due: printed, and returned for metrics.jsonl / wandb."""
        n, run = self.cfg.run.tasks_interval, self.cfg.run
        if not n or self.step % n:
            return {}
        res = evaluate.evaluate_suite(self.raw_model, self.tokenizer, self.tasks, run.tasks_style, 0,
                                      run.tasks_limit or evaluate.default_limit(run.tasks), device=self.device,
                                      autocast_dtype=runtime.autocast_dtype(self.device, self.dtype),
                                      rank=self.info.rank, world_size=self.info.world_size)
        each = ", ".join(f"{k} {t[t['metric']]:.4f}" for k, t in res["tasks"].items())
        self.print(f"step {self.step}: tasks score {res['score']:.4f} ({run.tasks_style} style: {each})")
        return evaluate.metrics_row(res)

    def print_sample(self) -> None:
        n = self.cfg.run.sample_tokens
        if not n or self.tokenizer is None or not (self.info.is_master or self.fsdp):
            return  # FSDP: every rank takes part in each forward (same seed, same tokens); rank 0 prints
        tok = self.tokenizer
        start = next((t for t in (tok.bos_id, tok.eot_id) if t is not None), None)
        prompt = [start] if start is not None else tok.encode("\n")
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.run.seed)  # never touches global RNG
        idx = torch.tensor([prompt], dtype=torch.long, device=self.device)
        self.raw_model.eval()  # no dropout: the training RNG streams are not drawn from
        with self.autocast():
            out = sample.generate(self.raw_model, idx, n, temperature=0.8, top_k=200, generator=gen)
        self.raw_model.train()
        self.print(f"sample: {tok.decode(out[0, len(prompt):].tolist())!r}")

    # -- checkpoints

    def save_checkpoint(self) -> None:
        """Gather every rank's RNG and loader state; rank 0 writes ckpt_{step}.pt (and best.pt), keeps last K.
        parallelism=fsdp: every rank writes its shard of ckpt_{step}/ instead (see save_sharded)."""
        rngs = runtime.gather_object(runtime.rng_state())
        loaders = runtime.gather_object(self.loader.state_dict())
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
        path = checkpoint.checkpoint_path(self.out_dir, self.step)
        checkpoint.atomic_save(ckpt, path)
        if is_best:  # weights only: sampling, evaluation and export read it; resuming uses ckpt_*.pt
            checkpoint.atomic_save(checkpoint.weights_only(ckpt), self.out_dir / "best.pt")
        checkpoint.prune_checkpoints(self.out_dir, self.cfg.run.keep_last)
        self.print(f"saved {path}" + (" (best)" if is_best else ""))

    def save_sharded(self, meta: dict) -> None:
        """FSDP: ckpt_{step}/ via torch.distributed.checkpoint (parallel.py; no best.pt); the final step is
        also consolidated into ckpt_{step}.pt for sample.py / hellaswag.py / export_hf.py."""
        path = parallel.save_sharded(self.out_dir, self.step, self.raw_model, self.optimizers, meta,
                                     self.cfg.run.keep_last)
        self.print(f"saved {path}/ (sharded)")
        if self.step >= self.cfg.schedule.max_iters:
            single = parallel.consolidate_on_rank0(path, checkpoint.checkpoint_path(self.out_dir, self.step))
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
        peak, peak_src = runtime.peak_flops(self.device_type, self.dtype)
        self.print(json.dumps({name: asdict(getattr(cfg, name)) for name in SECTIONS}, indent=1))
        self.print(
            f"git {git_commit()} | python {platform.python_version()} torch {torch.__version__} numpy {np.__version__}\n"
            f"device {self.device} x{info.world_size} ranks | dtype {self.dtype}{runtime.fp8_note(cfg.run.fp8)} | "
            f"compile {cfg.run.compile} | "
            f"peak {peak / 1e12:.2f} TFLOP/s per device ({peak_src})\n"
            f"params {self.raw_model.num_params(non_embedding=False):,} total, {self.raw_model.num_params():,} "
            f"non-embedding | tokens/step {tokens:,} = {cfg.data.batch_size} "
            f"x {cfg.model.block_size} x {info.world_size} ranks x {self.grad_accum} accum | "
            f"steps {self.step} -> {cfg.schedule.max_iters} | out_dir {self.out_dir}")

    def log_step(self, r: StepResult, ema_s: float) -> None:
        if self.step % self.cfg.run.log_interval:
            return
        tok_s = r.tokens / r.seconds
        peak, _ = runtime.peak_flops(self.device_type, self.dtype)
        mfu = runtime.mfu(self.raw_model.flops_per_token(r.seq_len), tok_s / self.info.world_size, peak)
        eta = (self.cfg.schedule.max_iters - self.step) * (ema_s if ema_s is not None else r.seconds)
        self.print(f"step {self.step}/{self.cfg.schedule.max_iters} | loss {r.loss:.4f} | lr {r.lr:.3e} | "
                   f"norm {r.grad_norm:.3f} | {r.seconds * 1000:.0f} ms | {tok_s:,.0f} tok/s | mfu {mfu:.2%} | "
                   f"eta {eta / 60:.1f} min" + ("" if r.finite else " | SKIPPED (non-finite)"))
        self.metrics.write({"type": "train", "step": self.step, "loss": r.loss, "lr": r.lr,
                            "grad_norm": r.grad_norm, "ms": r.seconds * 1000, "tok_s": tok_s, "mfu": mfu,
                            "seq_len": r.seq_len})

    # -- the loop

    def nonfinite_message(self, count: int) -> str:
        saved = checkpoint.list_checkpoints(self.out_dir) or checkpoint.list_checkpoints(self.out_dir, sharded=True)
        where = (f"the last good checkpoint {saved[-1]} is intact: lower learning_rate or check the data, then "
                 f"--resume" if saved else "no checkpoint was saved yet: lower learning_rate or check the data and "
                 "start again")
        return f"{count} non-finite losses in a row, the last at step {self.step}; stopping. {where}"

    def stop_on_signal(self, stop: runtime.StopSignal, where: str) -> str:
        """Save and say so; returns the signal's name (SIGINT, SIGTERM; "signal" when only another rank got one)."""
        self.save_checkpoint()
        self.print(f"stopped by signal {where}; resume with --resume")
        return stop.received or "signal"

    def due(self, interval: int) -> bool:
        return self.step % interval == 0 or self.step >= self.cfg.schedule.max_iters

    def fit(self) -> dict:
        cfg = self.cfg
        if self.info.is_master:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_stale_temp_files(self.out_dir)  # left by a save that was killed
            (self.out_dir / "config.json").write_text(json.dumps(cfg.flat(), indent=1))
        self.metrics = MetricsLog(cfg, self.out_dir, self.info.is_master, self.history)
        self.header()
        self.bar = self.progress_bar()
        start, nonfinite, ema_s, result, reason = self.step, 0, None, None, "done"
        try:
            with runtime.StopSignal() as stop:
                while True:
                    if self.due(cfg.run.eval_interval) and not (self.step == start and start > 0):
                        self.run_evals()
                    if self.step > start and self.due(cfg.run.ckpt_interval or cfg.run.eval_interval):
                        self.save_checkpoint()
                    if self.step >= cfg.schedule.max_iters:
                        break
                    result = self.train_step(stop)
                    if result is None:  # stopped between micro-steps: save the last completed step
                        reason = self.stop_on_signal(stop, f"during step {self.step + 1}; saved step {self.step}")
                        break
                    self.step += 1
                    nonfinite = 0 if result.finite else nonfinite + 1
                    if nonfinite >= cfg.run.max_nonfinite:
                        raise NonFiniteLoss(self.nonfinite_message(nonfinite))
                    if self.step > start + 1:  # the first step (compilation, allocator warmup) is not typical
                        ema_s = result.seconds if ema_s is None else 0.9 * ema_s + 0.1 * result.seconds
                    self.log_step(result, ema_s)
                    self.bar.update(1)
                    self.bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)
                    if result.stop:
                        reason = self.stop_on_signal(stop, f"at step {self.step}")
                        break
        finally:
            self.bar.close()
            self.metrics.close()
        return {"step": self.step, "train_loss": result.loss if result else None, "val_loss": self.last_val,
                "best_val_loss": self.best_val, "stopped": reason}


def train(cfg: TrainConfig) -> dict:
    """Train per cfg (single process or under torchrun); returns final metrics."""
    try:
        info = runtime.setup_distributed(cfg.run.device)
    except ValueError as e:  # a device this torch cannot use
        raise ConfigError(str(e)) from None
    try:
        inputs = check_inputs(cfg, info)
        with hold_out_dir(cfg, info):
            return Trainer(cfg, info, inputs).fit()
    finally:
        runtime.cleanup_distributed()


@contextlib.contextmanager
def hold_out_dir(cfg: TrainConfig, info: DistInfo):
    """Rank 0 holds out_dir's lock for the whole run (checkpoint.lock_run_dir), so two runs never write into one
    out_dir at once; a busy out_dir stops every rank before any work."""
    lock, busy = None, None
    if info.is_master:
        try:
            lock = checkpoint.lock_run_dir(cfg.run.out_dir)
        except checkpoint.RunDirBusy as e:
            busy = e
    if runtime.any_rank(busy is not None):
        raise ConfigError(str(busy) if busy else f"out_dir {cfg.run.out_dir} is in use by another run")
    try:
        yield
    finally:
        if lock is not None:
            lock.close()


USAGE = "usage: python train.py [CONFIG.py] [--key=value ...]   (every key, its default and meaning: --help)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + USAGE + "\n" + help_text())
        return
    path = argv[0] if argv and not argv[0].startswith("--") else None
    is_master = int(os.environ.get("RANK", 0)) == 0
    try:
        result = train(load_config(path, argv[1:] if path else argv))
    except ConfigError as e:
        if is_master:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (NonFiniteLoss, checkpoint.CheckpointError) as e:  # stopped mid-run; checkpoints on disk are intact
        if is_master:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if result["stopped"] == "SIGINT":  # saved; SIGTERM (a scheduler's stop) still exits 0
        sys.exit(INTERRUPTED)


if __name__ == "__main__":
    main()
