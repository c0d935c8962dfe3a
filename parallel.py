"""Past one GPU: FSDP2 sharding, activation checkpointing and sharded (DCP) checkpoints for train.py.

    python parallel.py consolidate out/run/ckpt_0001000 out/run/ckpt_0001000.pt   # sharded dir -> one file
    python parallel.py consolidate out/run out/run/model.pt                       # newest complete one

- FSDP: PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`) on every transformer block, then on the
  whole model (embeddings, final norm, head). Parameters, gradients and optimizer state live sharded
  (each rank holds 1/world_size); a block's full weights exist only while it computes. On CUDA with
  bf16 the policy gathers parameters in bf16 and reduces gradients in fp32; on CPU everything is fp32.
- Activation checkpointing ("block"): each block's forward runs under torch.utils.checkpoint, so its
  activations are recomputed in backward instead of stored (~one extra forward of compute). Works with
  plain, DDP and FSDP models and keeps parameter names unchanged.
- Sharded checkpoints: `OUT/ckpt_{step:07d}/` written by torch.distributed.checkpoint, every rank its
  own shard, plus `meta.pt` (rank 0: configs, step, tokenizer, RNG and loader states of all ranks).
  Ranks write into `OUT/.tmp_ckpt_{step}/`; after all have finished, rank 0 writes the marker
  `COMPLETE` and renames the folder, so a killed save never looks like a checkpoint. DCP reshards on
  load: a run saved on N ranks resumes on M.
- Loading is as safe as a one-file checkpoint: DCP's `.metadata` is a plain pickle, so it is read by an
  unpickler that admits only DCP's own metadata classes, and non-tensor values load with weights_only=True.
  Anything else is refused unless `--trust-checkpoint` (full unpickling, which can run code).
- `consolidate` turns a sharded checkpoint into the single-file format of the contract (model weights,
  configs, tokenizer; no optimizer state) that GPT.from_checkpoint, sample.py, hellaswag.py and
  export_hf.py read. It runs in one process without torch.distributed.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.utils.checkpoint import checkpoint as recompute

import checkpoint
import runtime
from model import GPT

COMPLETE = "COMPLETE"   # marker file: present only in fully written sharded checkpoints
META = "meta.pt"        # everything except model/optimizer tensors (written by rank 0)


# ----------------------------------------------------------------------------- activation checkpointing

def _checkpointed(forward, *args, **kwargs):
    """Run forward under non-reentrant activation checkpointing when gradients are being recorded.
    The RNG state is saved and restored for the recomputation, so dropout masks match."""
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return recompute(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Checkpoint every transformer block (model.transformer.h[i]). Call before FSDP/DDP/compile.

    Each block's bound forward is wrapped in place, so parameter names and state dicts do not change.
    """
    for block in model.transformer.h:
        block.forward = functools.partial(_checkpointed, block.forward)


# ----------------------------------------------------------------------------- FSDP2

def mixed_precision(device_type: str, dtype: str) -> MixedPrecisionPolicy:
    """bf16 parameters/compute with fp32 gradient reduction on CUDA bf16 runs; full precision otherwise."""
    if device_type == "cuda" and dtype == "bfloat16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def apply_fsdp(model: nn.Module, device_type: str, dtype: str) -> nn.Module:
    """Shard model in place with FSDP2 over all ranks: each transformer block is one unit (all-gathered for
    its forward and backward, resharded after), the root unit holds embeddings, final norm and lm_head
    (tied weights stay tied). Call after activation checkpointing, before building optimizers. The model
    may still be on the CPU: each unit is moved to device_type's current device as it is sharded, so the
    accelerator never holds a full copy."""
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    mp = mixed_precision(device_type, dtype)
    for block in model.transformer.h:  # a CPU-built model moves to the device block by block, sharded
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)  # root: needed first in backward
    register_fsdp_forward_method(model, "forward_cached")  # generate() calls it directly, not via __call__
    # GPT.forward returns logits[..., :vocab_size], a view; the training loop never modifies it in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    return model


def is_fsdp(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def set_micro_step(model: nn.Module, last: bool) -> None:
    """Gradient accumulation with FSDP (call before each micro-step; no-op for other models). Before the
    last micro-step gradients accumulate unsharded (no reduce-scatter, like DDP's no_sync) and parameters
    stay gathered after backward (the next forward needs no all-gather); the last micro-step
    reduce-scatters the summed gradients once and reshards. Costs an unsharded copy of the gradients
    and weights while accumulating; saves (grad_accum - 1) reduce-scatters and all-gathers per step."""
    if is_fsdp(model):
        model.set_requires_gradient_sync(last)
        model.set_reshard_after_backward(last)


def clip_grad_norm(params, max_norm: float) -> float:
    """Global gradient norm (clipped to max_norm if finite); DTensor (FSDP) gradients give the global
    norm over all shards."""
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm.item()


# ----------------------------------------------------------------------------- sharded checkpoints

@contextlib.contextmanager
def _single_process_ok():
    """DCP warns whenever it runs without a process group; here that is intended (one process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


# The globals that DCP's `.metadata` pickle may name: its metadata dataclasses, torch.Size, dtypes, layouts, paths.
METADATA_MODULE = "torch.distributed.checkpoint.metadata"
METADATA_GLOBALS = {(METADATA_MODULE, name) for name in (
    "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata", "BytesStorageMetadata",
    "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
    ("torch.serialization", "_get_layout")} | {
    (module, name) for module in ("pathlib", "pathlib._local") for name in ("PosixPath", "WindowsPath")}


class MetadataUnpickler(pickle.Unpickler):
    """Reads DCP checkpoint metadata and nothing else: any other class or function is refused unloaded."""

    def find_class(self, module: str, name: str):
        is_dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) in METADATA_GLOBALS or is_dtype:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not checkpoint metadata")


def check_metadata(sharded_dir: Path) -> None:
    """Unpickle sharded_dir/.metadata with MetadataUnpickler; UntrustedCheckpoint if it names anything else."""
    path = sharded_dir / ".metadata"
    try:
        with open(path, "rb") as f:
            metadata = MetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise checkpoint.UntrustedCheckpoint(f"{path} holds Python objects beyond checkpoint metadata ({e}); "
                                             f"{checkpoint.TRUST_HINT}") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise checkpoint.CheckpointError(f"cannot read {path}: truncated or not a sharded checkpoint "
                                         f"({type(e).__name__}: {e})") from None
    if type(metadata).__name__ != "Metadata":
        raise checkpoint.CheckpointError(f"{path} is not DCP metadata (a {type(metadata).__name__})")


class SafeReader(FileSystemReader):
    """DCP's file reader with the metadata checked by MetadataUnpickler before DCP unpickles it."""

    def read_metadata(self, *args, **kwargs):
        check_metadata(Path(self.path))
        return super().read_metadata(*args, **kwargs)


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, but a non-tensor value (optimizer hyperparameters, steps) must load with weights_only=True
    before the default planner reads it (which would unpickle anything)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            culprit = next((line.strip() for line in str(e).splitlines() if "global" in line.lower()), "")
            raise checkpoint.UntrustedCheckpoint(f"value {read_item.dest_index.fqn} of a sharded checkpoint holds "
                                                 f"Python objects beyond plain types ({culprit[:120]}); "
                                                 f"{checkpoint.TRUST_HINT}") from None
        value.seek(0)
        super().load_bytes(read_item, value)


def dcp_load(state: dict, path: Path, trust: bool, no_dist: bool) -> None:
    """dcp.load that cannot run code from the files unless trust (then it warns, naming what it allows)."""
    if trust:
        checkpoint.warn_trusted(path)
        reader, planner = FileSystemReader(path), DefaultLoadPlanner()
    else:
        check_metadata(path)  # here, so the refusal is the first and only error
        reader, planner = SafeReader(path), SafeLoadPlanner()
    with _single_process_ok():
        try:
            dcp.load(state, storage_reader=reader, planner=planner, no_dist=no_dist)
        except dcp.CheckpointException as e:  # DCP wraps each rank's error; surface ours
            refused = [exc for exc, _ in e.failures.values() if isinstance(exc, checkpoint.CheckpointError)]
            if refused:
                raise refused[0] from None
            raise


def sharded_dirs(out_dir: str | Path) -> list[Path]:
    """Complete sharded checkpoints in out_dir (ckpt_NNNNNNN/ with the COMPLETE marker), oldest first."""
    return [p for p in checkpoint.list_checkpoints(out_dir, sharded=True) if (p / COMPLETE).exists()]


def is_sharded_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / COMPLETE).exists()


def resolve_sharded(path: str | Path) -> Path:
    """A complete sharded checkpoint dir as is; a run dir -> its newest complete one; else FileNotFoundError."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        return path
    found = sharded_dirs(path) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no complete sharded checkpoint (ckpt_NNNNNNN/ with {COMPLETE}) at {path}; "
                                f"FSDP runs write them to out_dir")
    return found[-1]


def save_sharded(out_dir: str | Path, step: int, model: nn.Module, optimizers: list, meta: dict,
                 keep_last: int) -> Path:
    """Every rank calls this. Writes OUT/ckpt_{step:07d}/ (DCP shards + meta.pt + COMPLETE), atomically;
    keeps the newest keep_last complete ones. meta: picklable, written by rank 0."""
    out_dir = Path(out_dir)
    final = checkpoint.checkpoint_path(out_dir, step, sharded=True)
    tmp = out_dir / f".tmp_ckpt_{step:07d}"
    if runtime.rank() == 0:
        for debris in out_dir.glob(".tmp_ckpt_*"):  # left by earlier saves that were killed
            shutil.rmtree(debris, ignore_errors=True)
        tmp.mkdir(parents=True)
    runtime.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizers)
    with _single_process_ok():  # returns once all ranks have written
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp, no_dist=not dist.is_initialized())
    if runtime.rank() == 0:
        torch.save(meta, tmp / META)
        (tmp / COMPLETE).write_text(f"step {step}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        checkpoint.prune_checkpoints(out_dir, keep_last, sharded=True)
    runtime.barrier()
    return final


def load_sharded(path: str | Path, model: nn.Module, optimizers: list, trust: bool = False) -> dict:
    """Every rank calls this: load model and optimizer shards (resharded to the current world size) from
    a sharded checkpoint (or a run dir: its newest complete one); returns its meta dict."""
    path = resolve_sharded(path)
    model_sd, optim_sd = get_state_dict(model, optimizers)
    state = {"model": model_sd, "optim": optim_sd}
    dcp_load(state, path, trust, no_dist=not dist.is_initialized())
    set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return checkpoint.load_file(path / META, trust)


def consolidate(sharded_dir: str | Path, out_file: str | Path, trust: bool = False) -> Path:
    """Write the single-file checkpoint (contract format; "optimizer" None) of a sharded checkpoint.
    One process, no torch.distributed needed; peak memory about one copy of the model."""
    src = resolve_sharded(sharded_dir)
    meta = checkpoint.load_file(src / META, trust)
    with torch.device("meta"):
        model = GPT(checkpoint.model_config(meta.get("model_config"), fill_defaults=True,
                                            source=f"{src / META} model_config"))
    model.to_empty(device="cpu")
    state = {"model": model.state_dict()}
    dcp_load(state, src, trust, no_dist=True)
    ckpt = checkpoint.weights_only(meta) | {"model": state["model"], "consolidated_from": str(src)}
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_save(ckpt, out_file)
    return out_file


def consolidate_on_rank0(sharded_dir: str | Path, out_file: str | Path) -> Path:
    """consolidate() on rank 0 while the other ranks wait (used for the final checkpoint of a run)."""
    if runtime.rank() == 0:
        consolidate(sharded_dir, out_file)
    runtime.barrier()
    return Path(out_file)


# ----------------------------------------------------------------------------- CLI

USAGE = "usage: python parallel.py consolidate SHARDED_DIR_OR_RUN_DIR OUT.pt [--trust-checkpoint]"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    trust = "--trust-checkpoint" in argv
    argv = [a for a in argv if a != "--trust-checkpoint"]
    if len(argv) != 3 or argv[0] != "consolidate":
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    try:
        out = consolidate(argv[1], argv[2], trust)
    except (FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
