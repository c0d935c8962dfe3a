"""Checkpoint files: names, finding the newest, writing without ever leaving half a file, reading.

A run directory holds `ckpt_{step:07d}.pt` files (or, with FSDP, `ckpt_{step:07d}/` sharded directories, see
parallel.py) and `best.pt`. Every file here is written to a hidden temporary name beside its target and
renamed over it, so a crash or kill during a save leaves the previous file intact. Checkpoints hold tensors
and plain Python types only and load with `weights_only=True`: a downloaded checkpoint cannot run code.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
import typing
from pathlib import Path
from typing import IO

import torch

from model import GPTConfig
from token_shards import atomic_path

try:
    import fcntl  # POSIX
except ImportError:  # Windows: runs go unlocked
    fcntl = None

CKPT_RE = re.compile(r"ckpt_(\d+)(\.pt)?")
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DDP


def checkpoint_path(out_dir: str | Path, step: int, sharded: bool = False) -> Path:
    """out_dir/ckpt_{step:07d}.pt (a sharded checkpoint: the directory out_dir/ckpt_{step:07d})."""
    return Path(out_dir) / (f"ckpt_{step:07d}" if sharded else f"ckpt_{step:07d}.pt")


def list_checkpoints(out_dir: str | Path, sharded: bool = False) -> list[Path]:
    """The run's ckpt_N.pt files (or ckpt_N/ directories), oldest step first."""
    found = []
    for p in Path(out_dir).glob("ckpt_*"):
        m = CKPT_RE.fullmatch(p.name)
        if m and (m.group(2) is None) == sharded and p.is_dir() == sharded:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as is; a directory -> its ckpt_*.pt with the highest step number."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a ckpt_*.pt file or a training out_dir")
    found = list_checkpoints(path)
    sharded = [path] if CKPT_RE.fullmatch(path.name) else list_checkpoints(path, sharded=True)
    if not found and sharded:  # FSDP runs write ckpt_N/ directories and no best.pt
        one = sharded[-1].with_name(sharded[-1].name + ".pt")
        raise FileNotFoundError(f"{path} holds sharded (FSDP) checkpoints only; turn the newest into one file with "
                                f"`python parallel.py consolidate {sharded[-1]} {one}`, then pass {one}")
    if not found:
        raise FileNotFoundError(f"no ckpt_*.pt files in {path}; train first (train.py writes them and best.pt to "
                                f"out_dir) or pass a checkpoint file")
    return found[-1]


def prune_checkpoints(out_dir: str | Path, keep_last: int, sharded: bool = False) -> None:
    """Delete all but the newest keep_last checkpoints (files, or sharded directories)."""
    for old in list_checkpoints(out_dir, sharded)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True) if sharded else old.unlink(missing_ok=True)


def run_files(out_dir: str | Path) -> list[Path]:
    """What a training run leaves in out_dir: checkpoints (files, sharded directories), best.pt, metrics.jsonl,
    and its config.json when any of those is there."""
    out_dir = Path(out_dir)
    found = list_checkpoints(out_dir) + list_checkpoints(out_dir, sharded=True)
    found += [p for p in (out_dir / "best.pt", out_dir / METRICS_FILE) if p.exists()]
    return found + [out_dir / "config.json"] if found and (out_dir / "config.json").exists() else found


def move_aside(out_dir: str | Path, files: list[Path]) -> Path:
    """Move files into out_dir/replaced_<date>_<time>/ (nothing is deleted); returns that directory."""
    aside = Path(out_dir) / time.strftime("replaced_%Y%m%d_%H%M%S")
    aside.mkdir()
    for p in files:
        p.rename(aside / p.name)
    return aside


def remove_stale_temp_files(out_dir: str | Path) -> list[Path]:
    """Delete the hidden temporaries (.NAME.tmpPID, token_shards.atomic_path) that a killed save left in out_dir."""
    stale = [p for p in Path(out_dir).glob(".*.tmp*") if re.fullmatch(r"\..+\.tmp\d+", p.name)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale


METRICS_FILE = "metrics.jsonl"


class MetricsFileError(ValueError):
    """A metrics.jsonl line that is not a JSON row, before its last line; the message names file:line."""


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl in order. A last line cut short (a crash mid-write) is dropped with a note on
    stderr; an unreadable line anywhere else raises MetricsFileError naming file:line."""
    lines = [(n, line) for n, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    rows = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row, why = None, e.msg
        else:
            why = None if isinstance(row, dict) else f"a JSON {type(row).__name__}, not an object"
        if why is None:
            rows.append(row)
        elif n == lines[-1][0]:
            print(f"note: {path}:{n}: dropped an incomplete last row (a run stopped while writing it)",
                  file=sys.stderr, flush=True)
        else:
            raise MetricsFileError(f"{path}:{n}: not a metrics row ({why}); fix or delete that line")
    return rows


LOCK_FILE = ".lock"


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory's lock."""


def lock_run_dir(out_dir: str | Path) -> IO:
    """Hold an exclusive OS lock (flock) on out_dir/.lock, which records the holder's PID, until the returned file
    is closed. The kernel drops the lock when the process dies, so a killed run leaves nothing stale."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = open(out_dir / LOCK_FILE, "a+")  # not "w": that would erase the holder's PID before we know we hold it
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunDirBusy(f"out_dir {out_dir} is in use by another run (PID {holder}); wait for it to end or "
                             f"stop it, or choose another --out_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def strip_prefix(state: dict) -> dict:
    """State-dict keys without the wrappers' prefixes (`_orig_mod.` of torch.compile, `module.` of DDP)."""
    out = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


FORMAT = 1  # the layout of the dict below; a reader refuses a newer one (check_format)


@dataclasses.dataclass
class RunState:
    """What a training checkpoint records besides the weights and the optimizer state."""
    step: int
    config: dict                  # the run's flat config (config.py)
    model_config: dict            # GPTConfig's fields
    tokenizer: dict | None        # data.py's tokenizer spec
    world_size: int
    scaler: dict                  # the fp16 GradScaler's state
    loader: list                  # every rank's data position
    rng: list                     # every rank's RNG states
    val_loss: float | None
    best_val_loss: float
    elapsed_s: float = 0.0        # the run's wall time so far (train.py's evals report it)


def training_checkpoint(state: RunState, model: torch.nn.Module | None = None, optimizers: list | None = None) -> dict:
    """The one checkpoint layout (a dict of tensors and plain types, so it loads with weights_only=True): the
    run state, plus the weights and optimizer states (None for the sharded format, which saves those itself)."""
    ckpt = {"format": FORMAT} | {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if model is not None:
        ckpt |= {"model": model.state_dict(), "optimizer": [opt.state_dict() for opt in optimizers]}
    return ckpt


def check_format(ckpt: dict, path: str | Path) -> dict:
    """ckpt if this repo can read its layout (older files have no "format": layout 1), else CheckpointError."""
    version = ckpt.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {version!r}, newer than this repo reads ({FORMAT}); "
                              f"update the repo to the version that wrote it")
    return ckpt


def weights_only(ckpt: dict) -> dict:
    """The part of a checkpoint that sampling, evaluation and export read (best.pt, consolidated files): no
    optimizer, scaler, RNG or loader state, so it is a fraction of the size and cannot be resumed."""
    return {k: v for k, v in ckpt.items() if k not in ("rng", "loader", "scaler")} | {"optimizer": None}


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a hidden temporary file renamed over `path` (token_shards.atomic_path). A failed write (a full
    disk) raises CheckpointError saying so; the file that was at `path` is intact."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (RuntimeError, OSError) as e:
        full = getattr(e, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < 64 * 2**20
        why = "no space left on device" if full else _first_line(e)
        raise CheckpointError(f"{why} while writing {path}; the previous checkpoint is intact"
                              + ("; free some space, then --resume" if full else "")) from e


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (truncated, corrupt, not a checkpoint); the message names the file."""


class UntrustedCheckpoint(CheckpointError):
    """A checkpoint that only full unpickling can read, which could run code: needs the explicit opt-in."""


TRUST_HINT = ("unpickling such a file can run arbitrary code. If you trust where it came from (e.g. you wrote "
              "it with a version of this repo before checkpoints held plain types only), load it with "
              "--trust-checkpoint (train.py: --trust_checkpoint=True)")


def warn_trusted(path: str | Path) -> None:
    """The one warning that --trust-checkpoint prints for each file it lets through."""
    print(f"warning: --trust-checkpoint: {path} is loaded with full unpickling, which runs any Python code "
          f"the file holds; use it only for checkpoints from a source you trust", file=sys.stderr, flush=True)


def load_file(path: str | Path, trust: bool = False, map_location: str | torch.device = "cpu"):
    """torch.load with weights_only=True: tensors and plain Python types only, no code can run. trust=True
    is the documented opt-in for older checkpoints (full unpickling) from a source you trust."""
    try:
        if trust:  # the explicit opt-in: full unpickling, which can run code
            warn_trusted(path)
            return torch.load(path, map_location=map_location, weights_only=False)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = next((line.strip() for line in str(e).splitlines() if "global" in line.lower()), None)
        if culprit and not trust:  # torch refused a pickled class or function: this is what could run code
            raise UntrustedCheckpoint(f"{path} holds Python objects beyond tensors and plain types "
                                      f"({sentences(culprit)}); {TRUST_HINT}") from None
        raise CheckpointError(f"cannot read checkpoint {path}: not a checkpoint or corrupt ({_first_line(e)})") from None
    except (RuntimeError, EOFError, OSError) as e:  # truncated, corrupt, not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a checkpoint "
                              f"({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return sentences(next((line for line in lines if "Unsupported" in line), lines[0] if lines else type(e).__name__))


def sentences(text: str, limit: int = 160) -> str:
    """The whole sentences of text that fit in limit characters (at least the first one): never cut mid-sentence."""
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    end = end if end > 0 else text.find(". ")
    return text if end < 0 else text[:end + 1]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", trust: bool = False) -> dict:
    """The checkpoint dict of a file or run directory (its newest ckpt_*.pt), loaded safely (see load_file)."""
    return read_checkpoint(resolve_checkpoint(path), trust, map_location)


def read_checkpoint(path: str | Path, trust: bool = False, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file's dict, loaded safely (load_file), its layout checked (check_format)."""
    ckpt = load_file(path, trust, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a train.py checkpoint (a {type(ckpt).__name__}, not a dict)")
    return check_format(ckpt, path)


MAX_LAYERS = 1024  # deeper than any published model (DeepNet: 1000); a file asking for more is damaged


def model_config(d: dict, fill_defaults: bool = False, source: str = "checkpoint model_config") -> GPTConfig:
    """GPTConfig from a model config read from a file (a checkpoint's model_config, an export's config.json),
    checked before anything is allocated: known fields, their types, GPTConfig's ranges, at most MAX_LAYERS
    layers, and parameters that fit in this machine's memory. Missing fields are an error unless fill_defaults."""
    if not isinstance(d, dict):
        raise ValueError(f"{source} is a {type(d).__name__}, not a dict of GPTConfig fields; the file is damaged")
    fields = {f.name: f for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{source} has fields this model.py does not know: {unknown}; "
                         f"update the repo to the version that wrote the checkpoint")
    missing = sorted(set(fields) - set(d))
    if missing and not fill_defaults:
        defaults = {k: fields[k].default for k in missing}
        raise ValueError(f"{source} lacks fields {missing} (written by an older version); "
                         f"re-run with --fill-defaults to assume GPTConfig defaults {defaults} "
                         f"only if that is how the model was trained")
    _check_types(d, source)
    try:
        c = GPTConfig(**d)
    except ValueError as e:  # GPTConfig's own range checks
        raise ValueError(f"{source}: {e}") from None
    if c.n_layer > MAX_LAYERS:
        raise ValueError(f"{source}: n_layer={c.n_layer} is over {MAX_LAYERS} (more than any trained model); "
                         f"the file is damaged or not a model config")
    check_fits_memory(c, source)
    return c


def _check_types(d: dict, source: str) -> None:
    """TypeError-free GPTConfig(**d): each value has its field's type (ints for ints, finite numbers for floats)."""
    hints = typing.get_type_hints(GPTConfig)
    for name, value in d.items():
        allowed = typing.get_args(hints[name]) or (hints[name],)
        if not any(_is_a(value, t) for t in allowed):
            want = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            nan = isinstance(value, float) and not math.isfinite(value)
            why = "a finite number" if nan else f"of type {want}, not {type(value).__name__}"
            raise ValueError(f"{source}: {name}={value!r} must be {why}; the file is damaged or was edited by hand")


def _is_a(value, t) -> bool:
    if t is type(None):
        return value is None
    if isinstance(value, bool) or t is bool:
        return isinstance(value, bool) and t is bool
    if t is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, t)


def num_params(c: GPTConfig) -> int:
    """GPT(c).num_params(non_embedding=False) from the config alone, without building the model."""
    d, h, kv, b = c.n_embd, c.hidden_dim, c.kv_heads * c.head_dim, int(c.bias)
    norm = d * (2 if c.norm == "layernorm" and c.bias else 1)
    attn = d * (d + 2 * kv) + d * d + b * (2 * d + 2 * kv) + (2 * c.head_dim if c.qk_norm else 0)
    mats = 3 if c.mlp == "swiglu" else 2
    mlp = mats * d * h + b * ((mats - 1) * h + d)
    layer = attn + mlp + norm * (1 if c.parallel_residual else 2)
    vocab = c.padded_vocab_size
    embed = vocab * d * (1 if c.tie_embeddings else 2) + (c.block_size * d if c.pos_emb == "learned" else 0)
    mixing = 2 * sum(t is not None for t in c.value_embed_tables) + 2 * c.n_layer * c.x0_mix + \
        c.n_layer // 2 * c.unet_skips
    return c.n_layer * layer + embed + norm + c.value_embeds * vocab * kv + mixing


def memory_bytes() -> int | None:
    """This machine's memory (physical RAM, or a smaller cgroup limit); None where it cannot be read."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    limit = Path("/sys/fs/cgroup/memory.max")
    try:
        text = limit.read_text().strip()
    except OSError:
        return total
    return min(total, int(text)) if text.isdigit() else total


def check_fits_memory(c: GPTConfig, source: str = "model config") -> None:
    """ValueError naming the numbers when GPT(c)'s float32 parameters alone exceed this machine's memory."""
    need, have = 4 * num_params(c), memory_bytes()
    if have is not None and need > have:
        raise ValueError(f"{source}: asks for {num_params(c):,} parameters ({need / 2**30:,.1f} GiB in float32; "
                         f"n_layer={c.n_layer}, n_embd={c.n_embd}, vocab_size={c.vocab_size}), more than this "
                         f"machine's {have / 2**30:,.1f} GiB of memory; the file is damaged or needs a larger machine")


def model_parts(ckpt: dict, fill_defaults: bool = True) -> tuple[GPTConfig, dict[str, torch.Tensor], dict | None]:
    """What a loaded checkpoint dict holds of its model: the checked config ("model_config"; "model_args" in the
    oldest files), the weights ("model", wrapper prefixes stripped) and the tokenizer spec (None if it has none).
    Fields an older checkpoint lacks take GPTConfig's defaults (new toggles default to off) unless
    fill_defaults=False (export_hf.py asks first). load.load_model builds the GPT from them."""
    cfg_dict = ckpt.get("model_config") or ckpt.get("model_args")
    if cfg_dict is None or "model" not in ckpt:
        raise ValueError(f"not a train.py checkpoint (needs 'model_config' and 'model'; has {sorted(ckpt)})")
    return model_config(cfg_dict, fill_defaults), strip_prefix(ckpt["model"]), ckpt.get("tokenizer")
