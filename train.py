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
import run_dir
import runtime
import sample
import token_shards
from config import (SECTIONS, ConfigError, TrainConfig, check_data, check_gpu_extras, check_optimizer_available,
                    grad_accum_steps, help_text, load_config)
from load import load_model
from model import GPT
from runtime import DistInfo

REPO_ROOT = Path(__file__).resolve().parent
TASK_FLAGS = evaluate.Flags(data_dir="--tasks_dir", tasks="--tasks=")  # task errors name train.py's keys
INTERRUPTED = 130  # exit status after a Ctrl-C save (128 + SIGINT): `set -e` scripts stop instead of going on


# ----------------------------------------------------------------------------- building

def build_data(cfg: TrainConfig, info: DistInfo, tokenizer) -> tuple:
    """The training loader of this rank (random windows or BOS-aligned rows) and its share of the fixed validation
    batches: (loader, (batches, how many of them count); data.val_batches)."""
    d, where = cfg.data, dict(rank=info.rank, world_size=info.world_size, seed=cfg.run.seed)
    try:
        loader = (datalib.DataLoader(d.data_dir, "train", d.batch_size, cfg.model.block_size, **where)
                  if d.loader == "random" else
                  datalib.BOSLoader(d.data_dir, d.batch_size, cfg.model.block_size, buffer_size=d.pack_buffer,
                                    bos_id=token_shards.document_start_id(d.data_dir, tokenizer), **where))
        val = (datalib.val_batches(d.data_dir, d.batch_size, cfg.model.block_size, cfg.run.eval_iters,
                                   rank=info.rank, world_size=info.world_size) if cfg.run.eval_iters else ([], 0))
    except token_shards.ShardFormatError as e:  # damaged, truncated or foreign file
        raise ConfigError(f"{e}; re-run prepare_data.py for {d.data_dir} (or remove the file)") from None
    except ValueError as e:  # too little data for one batch
        raise ConfigError(f"{e}; lower batch_size or block_size, or prepare more data") from None
    return loader, val


def build_model(cfg: TrainConfig, loss="chunked") -> GPT:
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


def wrap_model(model: GPT, cfg: TrainConfig, device: str, ddp: bool) -> nn.Module:
    """What the step calls: the GPT compiled (compile=True), under DDP when ddp."""
    compiled = torch.compile(model, mode=cfg.run.compile_mode) if cfg.run.compile else model
    dev = torch.device(device)
    return DDP(compiled, device_ids=[dev.index or 0] if dev.type == "cuda" else None) if ddp else compiled


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
    """The run's precision, parallelism and GPU extras work on this device (Stepper; run() checks it first)."""
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
        runtime.enable_tf32(self.device)
        torch.manual_seed(cfg.run.seed)  # identical init on every rank
        self.model = build_model(cfg, runtime.model_loss(cfg.run.fused_loss, self.device_type))
        self.fsdp = place_model(self.model, cfg, self.device, self.dtype, distributed=info.distributed)
        self.optimizers = optim.build_optimizers(self.model, cfg, self.device_type)
        self.peak_lrs = optim.peak_lrs(self.optimizers)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.dtype == "float16")
        self.train_model = wrap_model(self.model, cfg, self.device, ddp=info.distributed and not self.fsdp)

    @property
    def eval_model(self) -> nn.Module:
        """The compiled GPT without DDP (evaluation needs no gradient sync)."""
        return self.train_model.module if isinstance(self.train_model, DDP) else self.train_model

    def load_states(self, ckpt: dict, path: Path) -> None:
        """Weights, optimizer and scaler states from a checkpoint (a sharded one: resharded onto this world size)."""
        if parallel.is_sharded_checkpoint(path):
            parallel.load_sharded(path, self.model, self.optimizers, self.cfg.run.trust_checkpoint)
        else:
            self.model.load_state_dict(checkpoint.strip_prefix(ckpt["model"]))
            for opt, state in zip(self.optimizers, ckpt["optimizer"]):
                opt.load_state_dict(state)
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

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
            parallel.set_micro_step(self.model, last)  # FSDP: communicate on the last micro-step only
            ddp = isinstance(self.train_model, DDP)
            with contextlib.nullcontext() if last or not ddp else self.train_model.no_sync():
                with self.autocast():
                    loss = self.train_model(x, y, label_smoothing=self.cfg.optim.label_smoothing)
                loss = loss / grad_accum
                loss_sum += loss.detach()
                self.scaler.scale(loss).backward()
        return loss_sum, tokens

    def optimizer_step(self, loss_finite: bool = True) -> tuple[float, bool]:
        """Unscale, clip, step (skipped if non-finite; fp16's scaler skips and backs off by itself), zero grads.
        Returns (grad norm, whether the update was taken)."""
        for opt in self.optimizers:
            self.scaler.unscale_(opt)
        norm = parallel.clip_grad_norm(self.model.parameters(), self.cfg.optim.grad_clip or float("inf"))
        fp16 = self.scaler.is_enabled()
        finite = loss_finite and (math.isfinite(norm) or fp16)
        if finite or fp16:
            for opt in self.optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return norm, finite


def suite_result(model: GPT, tokenizer, tasks: list, cfg: TrainConfig, info: DistInfo, dtype: str) -> dict:
    """evaluate.py's suite result for the in-training tasks, shared out over the ranks."""
    run = cfg.run
    setup = evaluate.TaskSetup(style=run.tasks_style, limit=run.tasks_limit or evaluate.default_limit(run.tasks))
    scoring = evaluate.Scoring(device=info.device, autocast_dtype=runtime.autocast_dtype(info.device, dtype),
                               rank=info.rank, world_size=info.world_size)
    return evaluate.evaluate_suite(model, tokenizer, tasks, setup, scoring)


@torch.no_grad()
def sample_text(model: GPT, tokenizer, n: int, seed: int, autocast) -> str:
    """n tokens from the tokenizer's start token: a glimpse of what the model writes. Its own generator and no
    dropout, so the training RNG streams are not drawn from."""
    try:
        prompt = [sample.start_token(tokenizer)]
    except ValueError:  # no special token and no newline (a char corpus without one): any token will do
        prompt = [0]
    device = model.transformer.wte.weight.device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    model.eval()
    with autocast:
        out = sample.generate(model, idx, n, sample.Decoding(temperature=0.8, top_k=200),
                              generator=torch.Generator(device=device).manual_seed(seed))
    model.train()
    return tokenizer.decode(out[0, len(prompt):].tolist())


def nonfinite_message(out_dir: Path, step: int, count: int) -> str:
    saved = checkpoint.list_checkpoints(out_dir) or checkpoint.list_checkpoints(out_dir, sharded=True)
    where = (f"the last good checkpoint {saved[-1]} is intact: lower learning_rate or check the data, then "
             f"--resume" if saved else "no checkpoint was saved yet: lower learning_rate or check the data and "
             "start again")
    return f"{count} non-finite losses in a row, the last at step {step}; stopping. {where}"


class RunLog:
    """What a run reports, from rank 0: console lines (above a tqdm bar on a terminal), the header, a line per
    log_interval step, and the rows of metrics.jsonl / wandb (run_dir.MetricsLog)."""

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.bar, self.metrics = None, None
        self.t0, self.elapsed_before = time.perf_counter(), 0.0  # a resumed run continues its checkpoint's clock

    def elapsed(self) -> float:
        """Seconds of the run as the user waits them (evaluations included) since it started, across resumes."""
        return self.elapsed_before + time.perf_counter() - self.t0

    def loader_stats(self, step: int, stats: dict) -> dict:
        """The loader's stats for the eval row; bos_aligned's cropping said on the console too."""
        if stats.get("cropped_tokens") is not None:
            self.print(f"step {step}: loader cropped {stats['cropped_tokens']:,} tokens so far "
                       f"({stats['cropped_frac']:.1%} of the documents' tokens taken)")
        return stats

    def open(self, out_dir: Path, history: list[dict] | None, step: int) -> None:
        self.metrics = run_dir.MetricsLog(self.cfg, out_dir, self.info.is_master, history)
        self.bar = tqdm(total=self.cfg.schedule.max_iters, initial=step, unit="step", dynamic_ncols=True,
                        disable=not (self.info.is_master and sys.stdout.isatty()), leave=False)

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()

    def print(self, *args) -> None:
        if not self.info.is_master:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(" ".join(map(str, args)))   # log lines scroll above the progress bar
        else:
            print(*args, flush=True)

    def header(self, model: GPT, dtype: str, grad_accum: int, step: int, out_dir: Path) -> None:
        cfg, info = self.cfg, self.info
        tokens = cfg.data.batch_size * cfg.model.block_size * info.world_size * grad_accum
        peak, peak_src = runtime.peak_flops(info.device_type, dtype)
        self.print(json.dumps({name: asdict(getattr(cfg, name)) for name in SECTIONS}, indent=1))
        self.print(
            f"git {git_commit()} | python {platform.python_version()} torch {torch.__version__} numpy {np.__version__}\n"
            f"device {info.device} x{info.world_size} ranks | dtype {dtype}{runtime.fp8_note(cfg.run.fp8)} | "
            f"compile {cfg.run.compile} | peak {peak / 1e12:.2f} TFLOP/s per device ({peak_src})\n"
            f"params {model.num_params(non_embedding=False):,} total, {model.num_params():,} non-embedding | "
            f"tokens/step {tokens:,} = {cfg.data.batch_size} x {cfg.model.block_size} x {info.world_size} ranks x "
            f"{grad_accum} accum | steps {step} -> {cfg.schedule.max_iters} | out_dir {out_dir}")

    def step_done(self, step: int, r: StepResult, ema_s: float | None, flops_per_token: int, dtype: str) -> None:
        """The bar moves; every log_interval steps a console line and a metrics row."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{r.loss:.4f}", refresh=False)
        if step % self.cfg.run.log_interval:
            return
        tok_s = r.tokens / r.seconds
        mfu = runtime.mfu(flops_per_token, tok_s / self.info.world_size,
                          runtime.peak_flops(self.info.device_type, dtype)[0])
        eta = (self.cfg.schedule.max_iters - step) * (ema_s if ema_s is not None else r.seconds)
        self.print(f"step {step}/{self.cfg.schedule.max_iters} | loss {r.loss:.4f} | lr {r.lr:.3e} | "
                   f"norm {r.grad_norm:.3f} | {r.seconds * 1000:.0f} ms | {tok_s:,.0f} tok/s | mfu {mfu:.2%} | "
                   f"eta {eta / 60:.1f} min" + ("" if r.finite else " | SKIPPED (non-finite)"))
        self.metrics.write({"type": "train", "step": step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
                            "ms": r.seconds * 1000, "tok_s": tok_s, "mfu": mfu, "seq_len": r.seq_len})


@dataclass
class RunInputs:
    """What start-up reads and checks before anything is written or built (check_inputs)."""
    grad_accums: list[int]   # micro-steps per step: the run's, then each batch-warmup stage's
    tokenizer: object        # the shards' tokenizer (tokenization.py), or None
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
    return RunInputs(accums, tokenizer, tasks, *run_dir.load_resume_checkpoint(cfg, tokenizer, info.is_master))


class Trainer(Stepper):
    """Holds the run's state; run() = Trainer(cfg, info, check_inputs(cfg, info)).fit() with out_dir locked."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, inputs: RunInputs):
        self.out_dir, self.log = Path(cfg.run.out_dir), RunLog(cfg, info)
        self.grad_accum, *self.warmup_accums = inputs.grad_accums
        self.tokenizer, self.tasks = inputs.tokenizer, inputs.tasks
        self.resume_path, ckpt = inputs.resume_path, inputs.ckpt
        if ckpt is None:
            run_dir.claim_out_dir(cfg, info)
        self.history = run_dir.read_history(self.out_dir, ckpt["step"]) if ckpt and info.is_master else None
        super().__init__(cfg, info)
        self.loader, (self.val_data, self.val_counted) = build_data(cfg, info, self.tokenizer)
        torch.manual_seed(cfg.run.seed + info.rank)  # dropout differs per rank
        self.step, self.best_val, self.last_val, self.val_step = 0, float("inf"), None, -1
        # a stop signal is heeded between micro-steps too (schedulers wait ~30-120 s); FSDP: at the step's end
        self.can_interrupt = max([self.grad_accum, *self.warmup_accums]) > 1 and not self.fsdp
        if ckpt is not None:
            self.restore(ckpt)

    # -- resume

    def restore(self, ckpt: dict) -> None:
        """Model, optimizer, scaler, step, data position and RNG from a checkpoint."""
        self.load_states(ckpt, self.resume_path)
        self.step, self.last_val = ckpt["step"], ckpt.get("val_loss")
        self.best_val, self.log.elapsed_before = ckpt.get("best_val_loss", float("inf")), ckpt.get("elapsed_s", 0.0)
        run_dir.restore_loader(self.loader, ckpt, self.resume_path)
        if len(ckpt["rng"]) == self.info.world_size:
            runtime.set_rng_state(ckpt["rng"][self.info.rank])
        else:  # another world size: per-rank streams cannot continue
            torch.manual_seed(self.cfg.run.seed + self.info.rank + self.step)
        note = run_dir.resume_note(self.cfg, len(ckpt["rng"]), self.info.world_size)
        self.log.print(f"resumed from {self.resume_path} at step {self.step}: {note}")

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
        lr = optim.get_lr(self.step, cfg)
        self.set_lr(lr)
        optim.set_momentum(self.optimizers, optim.muon_momentum_at(self.step, cfg.optim))
        seq_len = optim.stage_at(self.step, cfg.schedule.max_iters, cfg.model.block_size,
                           cfg.data.seq_len_warmup, cfg.data.seq_len_warmup_frac)
        accum = optim.stage_at(self.step, cfg.schedule.max_iters, self.grad_accum, self.warmup_accums,
                         cfg.data.batch_warmup_frac)
        self.train_model.train()
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
    def val_loss(self) -> float:
        """Mean loss over the fixed validation batches, which the ranks share out: the same on any number of ranks."""
        self.eval_model.eval()
        sums = torch.zeros(2, device=self.device)  # summed batch losses, batches counted
        for i, (x, y) in enumerate(self.val_data):
            with self.autocast():
                loss = self.eval_model(x.to(self.device), y.to(self.device))
            if i < self.val_counted:  # the rest only keep FSDP's collectives in step
                sums += torch.stack([loss.float(), torch.ones((), device=self.device)])
        self.eval_model.train()
        sums = runtime.all_reduce_sum(sums)
        return (sums[0] / sums[1]).item()

    def run_evals(self) -> None:
        """Val loss, the downstream tasks when due, and a sample; logged as one eval row."""
        row = {"type": "eval", "step": self.step}
        if self.val_data:
            row["val_loss"] = self.last_val = self.val_loss()
            self.val_step = self.step
            self.log.print(f"step {self.step}: val loss {self.last_val:.4f} | {self.log.elapsed():.1f} s")
        row.update(self.log.loader_stats(self.step, self.loader.stats()), elapsed_s=round(self.log.elapsed(), 3))
        row.update(self.score_tasks())
        self.log.metrics.write(row)
        self.print_sample()

    def score_tasks(self) -> dict:
        """The downstream tasks (evaluate.py) when due: printed, and returned for metrics.jsonl / wandb."""
        if not self.cfg.run.tasks_interval or self.step % self.cfg.run.tasks_interval:
            return {}
        res = suite_result(self.model, self.tokenizer, self.tasks, self.cfg, self.info, self.dtype)
        each = ", ".join(f"{k} {t[t['metric']]:.4f}" for k, t in res["tasks"].items())
        self.log.print(f"step {self.step}: tasks score {res['score']:.4f} ({self.cfg.run.tasks_style} style: {each})")
        return evaluate.metrics_row(res)

    def print_sample(self) -> None:
        n = self.cfg.run.sample_tokens
        if n and self.tokenizer is not None and (self.info.is_master or self.fsdp):  # FSDP: all ranks take part
            text = sample_text(self.model, self.tokenizer, n, self.cfg.run.seed, self.autocast())
            self.log.print(f"sample: {text!r}")

    # -- checkpoints

    def save_checkpoint(self) -> None:
        """Gather every rank's RNG and loader state; rank 0 writes ckpt_{step}.pt (and best.pt), keeps last K.
        parallelism=fsdp: every rank writes its shard of ckpt_{step}/ instead (see save_sharded)."""
        rngs = runtime.gather_object(runtime.rng_state())
        loaders = runtime.gather_object(self.loader.state_dict())
        is_best = self.val_step == self.step and self.last_val < self.best_val
        if is_best:
            self.best_val = self.last_val
        state = checkpoint.RunState(self.step, self.cfg.flat(), asdict(self.cfg.model),
                                    self.tokenizer.spec() if self.tokenizer is not None else None,
                                    self.info.world_size, self.scaler.state_dict(), loaders, rngs, self.last_val,
                                    self.best_val, self.log.elapsed())
        if self.cfg.run.parallelism == "fsdp":  # the sharded format, also in a single process
            return self.save_sharded(checkpoint.training_checkpoint(state))
        if not self.info.is_master:
            return
        ckpt = checkpoint.training_checkpoint(state, self.model, self.optimizers)
        path = checkpoint.checkpoint_path(self.out_dir, self.step)
        checkpoint.atomic_save(ckpt, path)
        if is_best:  # weights only: sampling, evaluation and export read it; resuming uses ckpt_*.pt
            checkpoint.atomic_save(checkpoint.weights_only(ckpt), self.out_dir / "best.pt")
        checkpoint.prune_checkpoints(self.out_dir, self.cfg.run.keep_last)
        self.log.print(f"saved {path}" + (" (best)" if is_best else ""))

    def save_sharded(self, meta: dict) -> None:
        """FSDP: ckpt_{step}/ via torch.distributed.checkpoint (parallel.py; no best.pt); the final step is
        also consolidated into ckpt_{step}.pt for sample.py / hellaswag.py / export_hf.py."""
        path = parallel.save_sharded(self.out_dir, self.step, self.model, self.optimizers, meta,
                                     self.cfg.run.keep_last)
        self.log.print(f"saved {path}/ (sharded)")
        if self.step >= self.cfg.schedule.max_iters:
            single = parallel.consolidate_on_rank0(path, checkpoint.checkpoint_path(self.out_dir, self.step))
            self.log.print(f"consolidated {single}")

    # -- the loop

    def stop_on_signal(self, stop: runtime.StopSignal, where: str) -> str:
        """Save and say so; returns the signal's name (SIGINT, SIGTERM; "signal" when only another rank got one)."""
        self.save_checkpoint()
        self.log.print(f"stopped by signal {where}; resume with --resume")
        return stop.received or "signal"

    def due(self, interval: int) -> bool:
        return self.step % interval == 0 or self.step >= self.cfg.schedule.max_iters

    def fit(self) -> dict:
        cfg = self.cfg
        if self.info.is_master:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_stale_temp_files(self.out_dir)  # left by a save that was killed
            (self.out_dir / "config.json").write_text(json.dumps(cfg.flat(), indent=1))
        self.log.open(self.out_dir, self.history, self.step)
        self.log.header(self.model, self.dtype, self.grad_accum, self.step, self.out_dir)
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
                        raise NonFiniteLoss(nonfinite_message(self.out_dir, self.step, nonfinite))
                    if self.step > start + 1:  # the first step (compilation, allocator warmup) is not typical
                        ema_s = result.seconds if ema_s is None else 0.9 * ema_s + 0.1 * result.seconds
                    flops = runtime.flops_per_token(self.model.config, result.seq_len)
                    self.log.step_done(self.step, result, ema_s, flops, self.dtype)
                    if result.stop:
                        reason = self.stop_on_signal(stop, f"at step {self.step}")
                        break
        finally:
            self.log.close()
        return {"step": self.step, "train_loss": result.loss if result else None, "val_loss": self.last_val,
                "best_val_loss": self.best_val, "stopped": reason}


def run(cfg: TrainConfig) -> dict:
    """Train per cfg (single process or under torchrun); returns final metrics."""
    try:
        info = runtime.setup_distributed(cfg.run.device)
    except ValueError as e:  # a device this torch cannot use
        raise ConfigError(str(e)) from None
    try:
        inputs = check_inputs(cfg, info)
        with run_dir.hold_out_dir(cfg, info):
            return Trainer(cfg, info, inputs).fit()
    finally:
        runtime.cleanup_distributed()


USAGE = "usage: python train.py [CONFIG.py] [--key=value ...]   (every key, its default and meaning: --help)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + USAGE + "\n" + help_text())
        return
    path = argv[0] if argv and not argv[0].startswith("--") else None
    is_master = int(os.environ.get("RANK", 0)) == 0
    try:
        result = run(load_config(path, argv[1:] if path else argv))
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
