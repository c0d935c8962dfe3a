"""Loss, perplexity and bits per byte of checkpoints on a text file or shard directory, at several contexts.

    python perplexity.py out/gpt_star_127m --data data/openwebtext --ctx 512,1024,2048,4096
    python perplexity.py out/a/best.pt out/b/best.pt --data ../shared/data/tinyshakespeare.txt --ctx 256 --stride 128

Sliding window: windows of `ctx` tokens start every `stride` tokens (default stride = ctx/2); the first
window scores all its tokens, every later one only the tokens no earlier window scored (its last
`stride`), so each token is scored once, with at least ctx - stride tokens of context after the first
window. stride = ctx gives non-overlapping windows: the training loop's validation loss. Contexts
beyond the training block_size measure length extrapolation (ALiBi, RoPE, no positions); learned
positions cannot go past block_size and those contexts are skipped. Without --ctx, each checkpoint
is scored at its own block_size.

Bits per byte (bpb) = summed loss in nats / ln 2 / UTF-8 bytes of the scored text, so models with
different tokenizers compare. A text file is scored entirely: it is encoded by each checkpoint's
own tokenizer with a BOS token (or <|endoftext|>) in front. A shard directory (prepare_data.py
output) is scored from its second token on (the first is only context); its bytes are the decoded
scored tokens, special tokens counting zero bytes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import data as datalib
import runtime
from load import load_model
from model import GPT


@dataclass
class Result:
    """One (checkpoint, context) measurement."""
    checkpoint: str
    ctx: int
    stride: int
    tokens: int            # scored tokens
    loss: float            # mean nats per scored token
    ppl: float
    bytes: int | None
    bpb: float | None


# ----------------------------------------------------------------------------- windows

def window_plan(n_tokens: int, ctx: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Sliding windows over a sequence of n_tokens tokens (n_tokens - 1 targets).

    Returns (starts, first_scored, length): window i feeds tokens[starts[i]:starts[i]+length] and
    predicts tokens[starts[i]+1:starts[i]+length+1]; positions j >= first_scored[i] of it are
    scored. Every target 1..n_tokens-1 is scored exactly once.
    """
    if ctx < 1 or not 1 <= stride <= ctx:
        raise ValueError(f"need ctx >= 1 and 1 <= stride <= ctx, got ctx={ctx}, stride={stride}")
    targets = n_tokens - 1
    if targets < 1:
        raise ValueError(f"need at least 2 tokens, got {n_tokens}")
    length = min(ctx, targets)
    n_full = (targets - length) // stride + 1                 # windows that fit at start = k * stride
    starts = np.arange(n_full, dtype=np.int64) * stride
    first = np.full(n_full, length - stride, dtype=np.int64)
    first[0] = 0
    covered = int(starts[-1]) + length                           # targets 1..covered are scored
    if covered < targets:                                        # one last window, flush with the end
        start = targets - length
        starts = np.append(starts, start)
        first = np.append(first, covered - start)
    return starts, first, length


def window_batches(tokens: torch.Tensor, starts: np.ndarray, first: np.ndarray, length: int, batch_size: int):
    """Yield (x, y) batches; y is -1 (ignored) at positions not scored by that window."""
    offsets = torch.arange(length + 1)
    positions = torch.arange(length)
    for i in range(0, len(starts), batch_size):
        s = torch.from_numpy(starts[i:i + batch_size])
        rows = tokens[s[:, None] + offsets]                      # (B, length + 1), one gather
        y = rows[:, 1:].masked_fill(positions[None, :] < torch.from_numpy(first[i:i + batch_size])[:, None], -1)
        yield rows[:, :-1], y


@torch.no_grad()
def sliding_nll(model: GPT, tokens: torch.Tensor, ctx: int, stride: int, batch_tokens: int = 4096,
                device: str = "cpu", autocast_dtype: torch.dtype | None = None,
                progress: str | None = None) -> tuple[float, int]:
    """(summed nats, number of scored tokens) of tokens (1-D LongTensor) under model, sliding windows.

    progress: a label for a progress bar over the windows (on stderr); None shows none."""
    starts, first, length = window_plan(len(tokens), ctx, stride)
    batch_size = max(1, batch_tokens // length)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    model.eval()
    bar = tqdm(total=len(starts), desc=progress, unit="win", disable=progress is None, file=sys.stderr)
    for x, y in window_batches(tokens, starts, first, length, batch_size):
        x, y = x.to(device), y.to(device)
        with runtime.autocast(device, autocast_dtype):
            logits = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum")
        count += int((y >= 0).sum())
        bar.update(len(x))
    bar.close()
    return total.item(), count


# ----------------------------------------------------------------------------- inputs

def special_ids(tokenizer) -> set[int]:
    return {t for t in (getattr(tokenizer, a, None) for a in ("bos_id", "eos_id", "eot_id")) if t is not None}


def utf8_bytes(tokenizer, ids: np.ndarray) -> int:
    """UTF-8 bytes of the decoded ids, special tokens (BOS/EOS/<|endoftext|>) counting zero."""
    specials = np.array(sorted(special_ids(tokenizer)), dtype=np.int64)
    keep = ids[~np.isin(ids, specials)] if len(specials) else ids
    return len(tokenizer.decode(keep.tolist()).encode("utf-8"))


def text_tokens(path: Path, tokenizer) -> tuple[torch.Tensor, int]:
    """(BOS/EOT + tokens of the file, UTF-8 bytes of the file): every text token is scored."""
    text = path.read_text(encoding="utf-8")
    start = next((t for t in (tokenizer.bos_id, tokenizer.eot_id) if t is not None), None)
    if start is None:
        raise ValueError("the tokenizer has neither a BOS nor an end-of-text token to start the text with")
    ids = [start] + tokenizer.encode(text)
    return torch.tensor(ids, dtype=torch.long), len(text.encode("utf-8"))


def shard_tokens(data_dir: Path, split: str, max_tokens: int | None) -> torch.Tensor:
    """The split's shards concatenated in order (the first max_tokens of them)."""
    parts, n = [], 0
    for path in datalib.list_shards(data_dir, split):
        shard = datalib.read_shard(path)
        take = len(shard) if max_tokens is None else min(len(shard), max_tokens - n)
        parts.append(np.asarray(shard[:take], dtype=np.int64))
        n += take
        if max_tokens is not None and n >= max_tokens:
            break
    return torch.from_numpy(np.concatenate(parts))


def checkpoint_tokenizer(own: datalib.Tokenizer | None, data: Path, tiktoken_file: str | None = None):
    """The checkpoint's own tokenizer (load_model's); else the shard directory's (meta.json); else None."""
    if own is not None:
        return own
    if data.is_dir():
        return datalib.load_tokenizer_for(data, tiktoken_file)
    return None


# ----------------------------------------------------------------------------- evaluation

def evaluate(model: GPT, tokenizer, data: Path, ctxs: list[int], stride: int | None = None,
             stride_frac: float = 0.5, split: str = "val", max_tokens: int | None = None,
             batch_tokens: int = 4096, device: str = "cpu", autocast_dtype: torch.dtype | None = None,
             name: str = "", tiktoken_file: str | None = None, progress: bool = False) -> list[Result]:
    """Results for each context length (skipping contexts learned positions cannot reach)."""
    data = Path(data)
    if data.is_dir():
        meta_tok = datalib.load_tokenizer_for(data, tiktoken_file)
        if tokenizer is not None:  # the checkpoint's own: kind and model/ranks hash must match the shards'
            datalib.check_same_tokenizer(tokenizer.spec(), meta_tok.spec(), name or "the checkpoint", str(data))
        if meta_tok.vocab_size != model.config.vocab_size:
            raise ValueError(f"{data} holds {meta_tok.kind} tokens (vocab {meta_tok.vocab_size}) but the model's "
                             f"vocab is {model.config.vocab_size}; score a text file to compare tokenizers")
        tokens = shard_tokens(data, split, max_tokens)
        tokenizer = tokenizer or meta_tok
        n_bytes = utf8_bytes(tokenizer, tokens[1:].numpy()) if tokenizer is not None else None
    else:
        if tokenizer is None:
            raise ValueError(f"{name or 'the checkpoint'} has no tokenizer spec; cannot encode a text file")
        tokens, n_bytes = text_tokens(data, tokenizer)
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens = tokens[:max_tokens]
            n_bytes = utf8_bytes(tokenizer, tokens[1:].numpy())
    results = []
    for ctx in ctxs:
        if model.config.pos_emb == "learned" and ctx > model.config.block_size:
            print(f"{name}: skipping ctx {ctx}: learned positions stop at block_size={model.config.block_size}",
                  file=sys.stderr)
            continue
        s = stride or max(1, round(ctx * stride_frac))
        nll, count = sliding_nll(model, tokens, ctx, min(s, ctx), batch_tokens, device, autocast_dtype,
                                 f"{name[-32:]} ctx {ctx}" if progress else None)
        loss = nll / count
        bpb = nll / math.log(2) / n_bytes if n_bytes else None
        results.append(Result(name, ctx, min(s, ctx), count, loss, math.exp(loss), n_bytes, bpb))
    return results


def format_table(results: list[Result]) -> str:
    lines = [f"{'checkpoint':<32} {'ctx':>6} {'stride':>6} {'tokens':>10} {'loss':>8} {'ppl':>10} {'bpb':>7}"]
    for r in results:
        bpb = f"{r.bpb:.4f}" if r.bpb is not None else "-"
        lines.append(f"{r.checkpoint[-32:]:<32} {r.ctx:>6} {r.stride:>6} {r.tokens:>10,} {r.loss:>8.4f} "
                     f"{r.ppl:>10.3f} {bpb:>7}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or training out_dirs (newest ckpt); also "
                                                       "export_hf.py directories and hub names (see load.py)")
    p.add_argument("--data", required=True, help="a text file, or a prepare_data.py shard directory")
    p.add_argument("--split", default="val", choices=["val", "train"], help="shard directory split")
    p.add_argument("--ctx", default=None, help="comma-separated context lengths, e.g. 256,512,1024 "
                                                "(default: each checkpoint's block_size)")
    p.add_argument("--stride", type=int, default=None, help="tokens scored per window (default ctx/2)")
    p.add_argument("--stride-frac", type=float, default=0.5, help="stride as a fraction of ctx if no --stride")
    p.add_argument("--max-tokens", type=int, default=None, help="only the first N tokens of the data")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per forward pass (memory knob)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda, else mps, else cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast dtype (auto: bf16 on CUDA that has it, else fp32)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--tiktoken-file", help="GPT-2 ranks file for offline use (else env TIKTOKEN_GPT2_FILE)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-checkpoint", action="store_true", help="load a checkpoint that needs full unpickling (older versions; can run code: only files you trust)")
    return p.parse_args(argv)


def main(argv=None) -> list[Result]:
    args = parse_args(argv)
    ctxs = [int(c) for c in (args.ctx or "").split(",") if c.strip()]
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"error: --data {data} does not exist")
    results, block_sizes = [], []
    try:
        device = runtime.pick_device(args.device)
    except ValueError as e:
        raise SystemExit(f"perplexity.py: error: {e}") from None
    for path in args.checkpoints:
        try:
            model, own = load_model(path, trust=args.trust_checkpoint, tiktoken_file=args.tiktoken_file)
        except (OSError, ValueError, RuntimeError) as e:
            raise SystemExit(f"perplexity.py: error: {e}") from None
        block_sizes.append(model.config.block_size)
        try:
            tokenizer = checkpoint_tokenizer(own, data, args.tiktoken_file)
            results += evaluate(model.to(device), tokenizer, data, ctxs or [model.config.block_size], args.stride,
                                args.stride_frac, args.split, args.max_tokens, args.batch_tokens, device,
                                runtime.autocast_dtype(device, args.dtype), str(path), args.tiktoken_file,
                                progress=not args.quiet)
        except (OSError, ValueError, RuntimeError) as e:  # tokenizer mismatch or missing, bad data
            raise SystemExit(f"perplexity.py: error: {e}") from None
    if not results:  # only learned positions skip, and only an explicit --ctx past block_size
        raise SystemExit(f"perplexity.py: error: nothing to score: every --ctx ({args.ctx}) is past the learned "
                         f"positions' block_size ({', '.join(map(str, block_sizes))}); pass --ctx "
                         f"{min(block_sizes)} or less, or leave --ctx out to use each checkpoint's block_size")
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
