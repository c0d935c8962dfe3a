"""The training configuration: typed dataclasses, config files, `--key=value` overrides, validation, --help.

Keys are flat and unique (nanoGPT's names); internally they are grouped in one dataclass per concern:
`model` (model.GPTConfig), `data`, `optim`, `schedule`, `run`, all inside TrainConfig. Each default and
its one-line meaning is written once, below (and in model.GPTConfig); `python train.py --help` prints them.

A config file is a Python file whose public top-level simple values (numbers, strings, booleans, None,
tuples) are config keys; `_names`, imported modules and functions are ignored. `--key=value` is parsed to
the key's type; a bare `--flag` means True. Every check on values lives in `validate`.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import inspect
import os
import re
import runpy
import sys
import traceback
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import token_shards
import tokenization
from model import GPTConfig

REPO_ROOT = Path(__file__).resolve().parent


@dataclass
class DataConfig:
    """Where the tokens come from and how many go into one optimizer step."""
    data_dir: str = "data/fineweb10B"      # prepare_data.py output: meta.json + *_train_*.bin / *_val_*.bin
    batch_size: int = 16                   # micro-batch, in sequences, per rank
    total_batch_size: int = 524288         # tokens per optimizer step over all ranks (0 = no accumulation)
    seq_len_warmup: tuple[int, ...] = ()   # staged sequence lengths before block_size, e.g. 128,192,256,384
    seq_len_warmup_frac: float = 0.0       # ...spread equally over this fraction of max_iters (GPT-1B*: 0.3)
    batch_warmup: tuple[int, ...] = ()     # staged tokens per step before total_batch_size, e.g. 131072,262144
    batch_warmup_frac: float = 0.0         # ...spread equally over this fraction of max_iters
    loader: str = "random"                 # random (windows anywhere) | bos_aligned (rows start at documents)
    pack_buffer: int = 1000                # loader=bos_aligned: documents held for best-fit packing into rows


@dataclass
class OptimConfig:
    """Optimizer and its hyper-parameters."""
    optimizer: str = "adamw"               # adamw | muon (hidden matrices; AdamW for the rest) | adamw8bit
    learning_rate: float = 6e-4            # peak lr (AdamW part)
    weight_decay: float = 0.1              # on 2-D weights only (optim.decay_groups)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0                 # max global grad norm (0 = no clipping)
    label_smoothing: float = 0.0           # training target (1 - eps) one-hot + eps uniform; logged train loss includes it
    muon_lr: float = 0.02                  # optimizer=muon: peak lr of the hidden 2-D matrices
    muon_momentum: float = 0.95            # optimizer=muon: Muon's (final) momentum
    muon_momentum_start: float = 0.85      # optimizer=muon: momentum at step 0 of the warm-up
    muon_momentum_warmup: int = 0          # optimizer=muon: steps from muon_momentum_start to muon_momentum (0 = none)
    muon_weight_decay: float | None = None  # optimizer=muon: decoupled wd of the hidden matrices (None = weight_decay)
    muon_cautious_wd: bool = False         # optimizer=muon: decay only where update and weight have the same sign
    muon_ns_steps: int = 5                 # optimizer=muon: Newton-Schulz iterations per update (fewer: cheaper, rougher)
    embed_lr: float | None = None          # optimizer=muon: peak lr of token/position embeddings (None = learning_rate)
    head_lr: float | None = None           # optimizer=muon: peak lr of an untied lm_head (None = learning_rate)
    scalar_lr: float | None = None         # optimizer=muon: peak lr of norm gains and biases (None = learning_rate)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (multiplies every param group's peak lr)."""
    max_iters: int = 19073                 # optimizer steps (0 = no training: evaluate the initial model only)
    lr_schedule: str = "cosine"            # cosine | wsd | constant
    warmup_iters: int = 715                # linear warmup steps
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
    out_dir: str = "out"                   # checkpoints, config.json, metrics.jsonl, wandb/
    eval_interval: int = 250               # val loss (+ sample, + downstream tasks if due) every N steps and at the end
    eval_iters: int = 20                   # fixed validation batches in all, shared out over the ranks (0 = none)
    log_interval: int = 10                 # one log line / metrics.jsonl row every N steps
    ckpt_interval: int = 0                 # checkpoint every N steps (0 = every eval_interval) and at the end
    keep_last: int = 3                     # keep this many ckpt_*.pt (plus best.pt)
    dtype: str = "auto"                    # auto (bf16 GPU, else fp16 + GradScaler; fp32 CPU/MPS) | float32 | ...
    compile: bool = False                  # torch.compile the model (checkpoints keep plain parameter names)
    compile_mode: str = "default"          # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    fused_loss: str = "auto"               # auto (on for CPU) | on | off | liger (liger-kernel's Triton kernel, CUDA)
    fp8: str = "off"                       # off | linear (blocks' Linear layers in float8, torchao; sm89+ GPU) | all (+ head)
    device: str = "auto"                   # auto (cuda > mps > cpu) | cpu | cuda | mps
    wandb_log: bool = False                # log to Weights & Biases (WANDB_MODE=offline works)
    wandb_project: str = "gpt"
    wandb_run_name: str = ""
    init_from: str = "scratch"             # scratch | resume | gpt2 | gpt2-medium | ... | an export_hf.py dir
    resume: str = ""                       # "" | latest (bare --resume) | path to a checkpoint or run dir
    trust_checkpoint: bool = False         # resume/init from a checkpoint that needs full unpickling (can run code)
    overwrite: bool = False                # fresh run into an out_dir holding another run: move its files aside first
    seed: int = 1337
    max_nonfinite: int = 5                 # stop after this many non-finite losses in a row
    sample_tokens: int = 64                # print a sample of this many tokens at each eval (0 = off)
    tasks: str = "quick"                   # downstream tasks (evaluate.py): a suite (quick, all), names, or both
    tasks_interval: int = 0                # score them every N steps, a multiple of eval_interval (0 = off)
    tasks_limit: int = 0                   # examples per task (0 = the suite's own: quick 200, else all)
    tasks_style: str = "harness"           # harness | completion (evaluate.py explains both)
    tasks_dir: str = ""                    # the tasks' jsonl files ("" = $EVALS_DIR / $HELLASWAG_FILE, else the hub)
    parallelism: str = "ddp"               # ddp | fsdp (FSDP2: weights/grads/optimizer sharded; parallel.py)
    activation_checkpointing: str = "none"  # none | block (recompute each block's activations in backward)


SECTIONS = {"model": GPTConfig, "data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
            "run": RunConfig}
PARALLELISMS = ("ddp", "fsdp")
RENAMED = {"hellaswag_interval": "--tasks=hellaswag --tasks_interval=N",
           "hellaswag_limit": "--tasks_limit=N", "hellaswag_data": "--tasks_dir=DIR (holding hellaswag_val.jsonl)"}
ACTIVATION_CHECKPOINTING = ("none", "block")
CHOICES = {"optimizer": ("adamw", "muon", "adamw8bit"), "lr_schedule": ("cosine", "wsd", "constant"),
           "loader": ("random", "bos_aligned"),
           "cooldown_shape": ("linear", "1-sqrt"), "dtype": ("auto", "float32", "bfloat16", "float16"),
           "fused_loss": ("auto", "on", "off", "liger"), "fp8": ("off", "linear", "all"),
           "tasks_style": ("harness", "completion"),
           "compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
           "parallelism": PARALLELISMS, "activation_checkpointing": ACTIVATION_CHECKPOINTING}
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


# ----------------------------------------------------------------------------- parsing

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
    if str(REPO_ROOT) not in sys.path:  # so presets can `from configs.gpt2_124m import *`
        sys.path.insert(0, str(REPO_ROOT))
    try:
        namespace = runpy.run_path(str(path))
    except SyntaxError as e:  # also in a preset it imports
        raise ConfigError(f"{e.filename}:{e.lineno}: {e.msg} (a syntax error in config file {path}; fix that "
                          f"line)") from None
    except Exception as e:  # the file's own code failed: name its line, not runpy's
        where = _config_frame(e, path)
        raise ConfigError(f"{where}: {type(e).__name__}: {e} (while running config file {path}; fix that "
                          f"line)") from None
    return {k: v for k, v in namespace.items() if not k.startswith("_") and isinstance(v, SIMPLE_TYPES)}


def _config_frame(error: Exception, path: Path) -> str:
    """file:line of the deepest frame of `error` in the config file or a preset under configs/."""
    roots = {path.resolve().parent, REPO_ROOT / "configs"}
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve().parent in roots]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(path)


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
            hint = f"; renamed: use {RENAMED[key]}" if key in RENAMED else hint
            raise ConfigError(f"unknown config key '{key}'{hint} (python train.py --help lists every key)")
        section, tp = types_[key]
        if value is True and tp is str and key == "resume":
            value = "latest"  # bare --resume
        sections[section][key] = coerce(key, value, tp)
    try:
        return TrainConfig(**{name: SECTIONS[name](**kw) for name, kw in sections.items()})
    except ValueError as e:  # GPTConfig's own checks
        raise ConfigError(str(e)) from None


# ----------------------------------------------------------------------------- validation

def validate(cfg: TrainConfig) -> None:
    """Every check on config values in one place (inputs on disk: check_data, at start-up)."""
    flat = cfg.flat()
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key}={flat[key]!r} is not one of {', '.join(choices)}")
    for key in ("batch_size", "eval_interval", "log_interval", "keep_last", "max_nonfinite", "pack_buffer"):
        if flat[key] < 1:
            raise ConfigError(f"{key}={flat[key]} must be positive")
    if flat["max_iters"] < 0:
        raise ConfigError(f"max_iters={flat['max_iters']} must be >= 0 (optimizer steps; 0 = no training: evaluate "
                          f"the initial model only)")
    for key in ("total_batch_size", "warmup_iters", "eval_iters", "ckpt_interval", "sample_tokens",
                "tasks_interval", "tasks_limit", "grad_clip"):
        if flat[key] < 0:
            raise ConfigError(f"{key}={flat[key]} must be >= 0")
    for key in ("warmup_start_ratio", "lr_hold_frac", "min_lr_ratio", "cooldown_frac", "seq_len_warmup_frac",
                "batch_warmup_frac"):
        if not 0.0 <= flat[key] <= 1.0:
            raise ConfigError(f"{key}={flat[key]} must be a fraction in [0, 1]")
    if not 0.0 <= flat["label_smoothing"] < 1.0:
        raise ConfigError(f"label_smoothing={flat['label_smoothing']} must be a fraction in [0, 1) (at 1 the target "
                          f"is uniform: nothing left to learn); typical values are 0 or 0.1")
    if cfg.run.resume and cfg.run.overwrite:
        raise ConfigError(f"resume={cfg.run.resume!r} and overwrite=True conflict: --resume continues the run in "
                          f"out_dir, --overwrite=True moves it aside to start a new one; drop one of them")
    for key in ("learning_rate", "muon_lr", "eps"):
        if flat[key] <= 0:
            raise ConfigError(f"{key}={flat[key]} must be > 0")
    if cfg.min_lr > cfg.optim.learning_rate:
        raise ConfigError(f"min_lr={cfg.min_lr} is above learning_rate={cfg.optim.learning_rate}")
    bad = [s for s in cfg.data.seq_len_warmup if not 0 < s <= cfg.model.block_size]
    if bad:
        raise ConfigError(f"seq_len_warmup stages {bad} must be in 1..block_size={cfg.model.block_size}")
    for key in ("seq_len_warmup", "batch_warmup"):
        if getattr(cfg.data, key) and getattr(cfg.data, f"{key}_frac") == 0:
            raise ConfigError(f"{key} is set but {key}_frac=0; set e.g. --{key}_frac=0.3")
    if cfg.run.tasks_interval % cfg.run.eval_interval:
        raise ConfigError(f"tasks_interval={cfg.run.tasks_interval} must be a multiple of "
                          f"eval_interval={cfg.run.eval_interval} (the tasks are scored at evaluations)")
    validate_muon(cfg)
    if cfg.run.parallelism == "fsdp":
        validate_fsdp(cfg)
    init = cfg.run.init_from
    if init not in ("scratch", "resume") and not init.startswith("gpt2") and not Path(init).is_dir():
        raise ConfigError(f"init_from={init!r}: use scratch, resume, a GPT-2 name (gpt2, gpt2-medium, ...) "
                          f"or a directory written by export_hf.py")


MUON_ONLY = {"muon_momentum_warmup": 0, "muon_weight_decay": None, "muon_cautious_wd": False, "embed_lr": None,
             "head_lr": None, "scalar_lr": None, "muon_ns_steps": 5}


def validate_muon(cfg: TrainConfig) -> None:
    """The optimizer=muon recipe's keys: set only with it, in range, head_lr only with an untied head."""
    o = cfg.optim
    changed = [k for k, default in MUON_ONLY.items() if getattr(o, k) != default]
    if changed and o.optimizer != "muon":
        raise ConfigError(f"{', '.join(changed)} {'apply' if len(changed) > 1 else 'applies'} to optimizer=muon only; "
                          f"set --optimizer=muon or drop them")
    for key in ("muon_momentum", "muon_momentum_start"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise ConfigError(f"{key}={getattr(o, key)} must be in [0, 1)")
    if not 1 <= o.muon_ns_steps < 100:
        raise ConfigError(f"muon_ns_steps={o.muon_ns_steps} must be in [1, 100) (5 is Muon's usual)")
    for key in ("embed_lr", "head_lr", "scalar_lr"):
        if getattr(o, key) is not None and getattr(o, key) <= 0:
            raise ConfigError(f"{key}={getattr(o, key)} must be > 0 (or None = learning_rate)")
    if o.muon_momentum_warmup < 0 or (o.muon_weight_decay or 0.0) < 0:
        raise ConfigError("muon_momentum_warmup and muon_weight_decay must be >= 0")
    if o.head_lr is not None and cfg.model.tie_embeddings:
        raise ConfigError("head_lr needs an untied output head: set --tie_embeddings=False (a tied head is the "
                          "token embedding, whose lr is embed_lr)")


def validate_fsdp(cfg: TrainConfig) -> None:
    """Settings that cannot work with parallelism=fsdp."""
    if cfg.optim.optimizer == "adamw8bit":
        raise ConfigError("optimizer=adamw8bit (bitsandbytes) keeps its 8-bit states per full tensor and does not "
                          "accept FSDP's sharded DTensor parameters; use --optimizer=adamw (or muon) with "
                          "--parallelism=fsdp, or adamw8bit with --parallelism=ddp")
    if cfg.run.dtype == "float16":
        raise ConfigError("parallelism=fsdp supports dtype bfloat16 or float32 (float16 needs a GradScaler that "
                          "handles sharded gradients); use --dtype=bfloat16")
    if cfg.run.tasks_interval:
        raise ConfigError("tasks_interval is not available with parallelism=fsdp; set --tasks_interval=0 "
                          "and score the consolidated checkpoint with evaluate.py")


def check_data(cfg: TrainConfig):
    """Shards exist and the tokenizer in meta.json matches vocab_size; returns the tokenizer (or None)."""
    d = Path(cfg.data.data_dir)
    fix = f"run `python prepare_data.py ... --out {d}` or set --data_dir"
    if not d.is_dir():
        raise ConfigError(f"data_dir {d} does not exist; {fix}")
    for split in ("train",) + (("val",) if cfg.run.eval_iters else ()):
        try:
            found = token_shards.list_shards(d, split)
        except token_shards.MetaError as e:  # its message names the bad field and the fix
            raise ConfigError(str(e)) from None
        except (FileNotFoundError, RuntimeError) as e:
            raise ConfigError(f"{e}; {fix}") from None
        if not found:
            raise ConfigError(f"data_dir {d} has no {split} shards; {fix}")
    try:
        tokenizer = tokenization.load_tokenizer_for(d)
    except (OSError, RuntimeError, ValueError) as e:  # ranks file missing or offline, wrong ranks, bad model
        raise ConfigError(str(e)) from None
    if tokenizer.vocab_size != cfg.model.vocab_size:
        fix = (f"set --vocab_size={tokenizer.vocab_size} (embedding padding is pad_vocab_multiple's job) or point "
               f"data_dir at matching shards")
        if cfg.run.resume:  # the checkpoint's embedding fixes the vocabulary: only the data can change
            fix = (f"a resumed run keeps its checkpoint's tokenizer, so point --data_dir at shards prepared with it "
                   f"(the run's config.json in out_dir names its data_dir), or start a new run in a new --out_dir "
                   f"with --vocab_size={tokenizer.vocab_size}")
        raise ConfigError(
            f"the shards in {d} use a {tokenizer.kind} tokenizer with vocab_size={tokenizer.vocab_size} (meta.json) "
            f"but the model has vocab_size={cfg.model.vocab_size}; {fix}")
    if cfg.data.loader == "bos_aligned":
        check_documents(d, tokenizer)
    return tokenizer


def check_documents(d: Path, tokenizer) -> None:
    """loader=bos_aligned needs a document-start token in the train shards."""
    bos = token_shards.document_start_id(d, tokenizer)
    try:
        found = bos is not None and any(token_shards.first_token_at(token_shards.read_shard(p), bos) is not None
                                        for p in token_shards.list_shards(d, "train"))
    except token_shards.ShardFormatError as e:
        raise ConfigError(f"{e}; re-run prepare_data.py for {d} (or remove the file)") from None
    if not found:
        what = "meta.json says boundary=none" if bos is None else f"no token {bos} is in them"
        fix = ("the char tokenizer has no token to mark them (like nanoGPT's char data): use --loader=random"
               if tokenizer.kind == "char" else
               "re-run prepare_data.py with --boundary eot (gpt2) or bos_eos, or use --loader=random")
        raise ConfigError(f"loader=bos_aligned needs documents marked in the train shards of {d}, but {what}; {fix}")


def check_optimizer_available(cfg: TrainConfig) -> None:
    if cfg.optim.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("optimizer=adamw8bit needs bitsandbytes (a CUDA machine): `pip install "
                              "bitsandbytes`, or use --optimizer=adamw") from None
    if cfg.optim.optimizer == "muon" and not hasattr(torch.optim, "Muon"):
        raise ConfigError(f"optimizer=muon needs torch.optim.Muon (torch >= 2.9); torch is {torch.__version__}")


def check_gpu_extras(cfg: TrainConfig, device: str, fused_loss: bool) -> None:
    """fp8 (torchao) and fused_loss=liger (liger-kernel) are optional CUDA-only extras: say what is missing
    before anything is built. fused_loss: whether this run's loss is the fused path."""
    r, cuda = cfg.run, torch.device(device).type == "cuda"
    if r.fp8 != "off":
        if not cuda:
            raise ConfigError(f"fp8={r.fp8} needs a CUDA GPU with float8 tensor cores (Ada, Hopper or newer); "
                              f"this run's device is {device}: use --fp8=off")
        if torch.cuda.get_device_capability(device) < (8, 9):
            raise ConfigError(f"fp8={r.fp8} needs float8 tensor cores (compute capability 8.9+: Ada, Hopper); "
                              f"{torch.cuda.get_device_name(device)} has none: use --fp8=off")
        if importlib.util.find_spec("torchao") is None:
            raise ConfigError(f"fp8={r.fp8} needs torchao's float8 training: `pip install torchao` "
                              "(README: optional GPU extras), or use --fp8=off")
        if r.fp8 == "all" and fused_loss:
            raise ConfigError("fp8=all puts the output layer in float8, but the fused loss multiplies by its weight "
                              "directly: use --fused_loss=off, or --fp8=linear")
    if r.fused_loss == "liger":
        if not cuda:
            raise ConfigError(f"fused_loss=liger runs liger-kernel's Triton kernel on CUDA; this run's device is "
                              f"{device}: use --fused_loss=on (the chunked PyTorch version) or auto")
        if importlib.util.find_spec("liger_kernel") is None:
            raise ConfigError("fused_loss=liger needs liger-kernel: `pip install liger-kernel` (README: optional "
                              "GPU extras), or use --fused_loss=on")


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


def data_vocab_size(data_dir) -> int:
    """The vocabulary of the tokenizer recorded in data_dir's meta.json; GPT-2's when there is none to read
    (a missing or bad meta.json is check_data's to report, at start-up)."""
    try:
        spec = token_shards.read_meta(data_dir).get("tokenizer") or {}
    except (OSError, ValueError):
        spec = {}
    return spec.get("vocab_size") or GPTConfig.vocab_size


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Config file (optional) + `--key=value` overrides -> validated TrainConfig."""
    values = read_config_file(path) if path else {}
    values.update(parse_overrides(overrides or []))
    if "vocab_size" not in values:  # as nanoGPT reads meta.pkl: the data's vocabulary unless the config says
        values["vocab_size"] = data_vocab_size(values.get("data_dir", DataConfig.data_dir))
    cfg = build_config(values)
    if cfg.run.init_from == "resume" and not cfg.run.resume:
        cfg.run.resume = "latest"  # nanoGPT spelling
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- --help

_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s?(.*)$")


def key_comments(cls) -> dict[str, str]:
    """{field: its trailing comment} read from the dataclass source: the one place each key is explained."""
    return {m.group(1): m.group(2).strip() for line in inspect.getsource(cls).splitlines()
            if (m := _COMMENT.match(line))}


def help_text() -> str:
    """Every key, grouped by section, with its default and meaning."""
    defaults = TrainConfig()
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"\n[{name}] {inspect.getdoc(cls).splitlines()[0]}")
        comments = key_comments(cls)
        for f in dataclasses.fields(cls):
            value = getattr(getattr(defaults, name), f.name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            note = comments.get(f.name, "")
            lines.append(f"  --{f.name}={shown}" + (f"{' ' * max(1, 34 - len(f.name) - len(str(shown)))}# {note}"
                                                      if note else ""))
    return "\n".join(lines)
