"""A run's out_dir, from train.py's side: who may write into it (the lock), a fresh run's claim on it, the
checkpoint a run resumes from and the checks that it fits the run, and the metrics log (metrics.jsonl, wandb).

checkpoint.py holds the files themselves (names, atomic saves, safe loading, the lock and metrics readers);
parallel.py the sharded (FSDP) format.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import checkpoint
import token_shards
import tokenization
import parallel
import runtime
from config import ConfigError, TrainConfig
from runtime import DistInfo


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
            tokenization.check_same_tokenizer(ckpt["tokenizer"], tokenizer.spec(), str(path), f"data_dir {cfg.data.data_dir}")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def restore_loader(loader, ckpt: dict, path: Path) -> None:
    """The data position of a checkpoint (the global stream's, the same on every rank), or a ConfigError."""
    try:
        loader.load_state_dict(ckpt["loader"][0])
    except ValueError as e:
        raise ConfigError(f"--resume from {path}: {e}. The data order follows the run's seed, block_size and shards: "
                          f"resume with the settings it was trained with (config.json in its out_dir), or start a "
                          f"new run in a new --out_dir") from None


def resume_note(cfg: TrainConfig, old_world: int, world: int) -> str:
    """What a resume continues exactly, and what not when the number of ranks changed."""
    if old_world == world:
        return "data order and RNG continue exactly"
    return (f"checkpoint was written by {old_world} rank(s), now {world}: the data stream continues from the same "
            f"position (no window skipped or repeated), but each step now deals {cfg.data.batch_size}x{world} "
            f"windows across the ranks; per-rank RNG (dropout) re-seeded, so results are not bit-identical to an "
            f"uninterrupted run")


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
        with token_shards.atomic_path(self.path) as tmp:
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
            ckpt = checkpoint.read_checkpoint(candidate / parallel.META if sharded else candidate,
                                              cfg.run.trust_checkpoint)
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
