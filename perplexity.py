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
own tokenizer with a BOS token (or <|endoftext|>) in front; with a tokenizer that has neither (char), from its
second token on. A shard directory (prepare_data.py output) is scored from its second token on (the first is
only context); its bytes are the decoded scored tokens, special tokens counting zero bytes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import runtime
import token_shards
import tokenization
from evaluate import Scoring
from load import load_model
from model import GPT

BATCH_TOKENS = 4096  # tokens per forward unless --batch-tokens says otherwise
SCORING = Scoring(token_budget=BATCH_TOKENS)


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


@dataclass(frozen=True)
class Sweep:
    """What is measured: each context length of `ctxs`, with windows that start every `stride` tokens (None:
    stride_frac of the context), over the first max_tokens tokens of a text file or of a shard directory's split."""
    ctxs: tuple[int, ...]
    stride: int | None = None
    stride_frac: float = 0.5
    split: str = "val"
    max_tokens: int | None = None

    def stride_at(self, ctx: int) -> int:
        return min(self.stride or max(1, round(ctx * self.stride_frac)), ctx)


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
def sliding_nll(model: GPT, tokens: torch.Tensor, ctx: int, stride: int, scoring: Scoring = SCORING,
                label: str | None = None) -> tuple[float, int]:
    """(summed nats, number of scored tokens) of tokens (1-D LongTensor) under model, sliding windows.

    label: a progress bar's, over the windows (on stderr); None shows none."""
    starts, first, length = window_plan(len(tokens), ctx, stride)
    batch_size = max(1, scoring.token_budget // length)
    device = scoring.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    model.eval()
    bar = tqdm(total=len(starts), desc=label, unit="win", disable=label is None, file=sys.stderr)
    for x, y in window_batches(tokens, starts, first, length, batch_size):
        x, y = x.to(device), y.to(device)
        with runtime.autocast(device, scoring.autocast_dtype):
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
    """(BOS/EOT + tokens of the file, UTF-8 bytes of the file): every text token is scored. A tokenizer with neither
    (char) gives the file's tokens alone, scored from the second on (the first is context), and their bytes."""
    text = path.read_text(encoding="utf-8")
    start = next((t for t in (tokenizer.bos_id, tokenizer.eot_id) if t is not None), None)
    if start is None:
        ids = tokenizer.encode(text)
        return torch.tensor(ids, dtype=torch.long), utf8_bytes(tokenizer, np.asarray(ids[1:], dtype=np.int64))
    ids = [start] + tokenizer.encode(text)
    return torch.tensor(ids, dtype=torch.long), len(text.encode("utf-8"))


def shard_tokens(data_dir: Path, split: str, max_tokens: int | None) -> torch.Tensor:
    """The split's shards concatenated in order (the first max_tokens of them)."""
    parts, n = [], 0
    for path in token_shards.list_shards(data_dir, split):
        shard = token_shards.read_shard(path)
        take = len(shard) if max_tokens is None else min(len(shard), max_tokens - n)
        parts.append(np.asarray(shard[:take], dtype=np.int64))
        n += take
        if max_tokens is not None and n >= max_tokens:
            break
    return torch.from_numpy(np.concatenate(parts))


def checkpoint_tokenizer(own: tokenization.Tokenizer | None, data: Path, tiktoken_file: str | None = None):
    """The checkpoint's own tokenizer (load_model's); else the shard directory's (meta.json); else None."""
    if own is not None:
        return own
    if data.is_dir():
        return tokenization.load_tokenizer_for(data, tiktoken_file)
    return None


# ----------------------------------------------------------------------------- evaluation

def data_tokens(model: GPT, tokenizer, data: Path, sweep: Sweep, name: str,
                tiktoken_file: str | None) -> tuple[torch.Tensor, int | None]:
    """(tokens to score, their UTF-8 bytes or None): a shard directory's split, whose tokenizer must be the
    checkpoint's, or a text file encoded by the checkpoint's tokenizer; the first sweep.max_tokens of them."""
    if data.is_dir():
        meta_tok = tokenization.load_tokenizer_for(data, tiktoken_file)
        if tokenizer is not None:  # the checkpoint's own: kind and model/ranks hash must match the shards'
            tokenization.check_same_tokenizer(tokenizer.spec(), meta_tok.spec(), name or "the checkpoint", str(data))
        if meta_tok.vocab_size != model.config.vocab_size:
            raise ValueError(f"{data} holds {meta_tok.kind} tokens (vocab {meta_tok.vocab_size}) but the model's "
                             f"vocab is {model.config.vocab_size}; score a text file to compare tokenizers")
        tokens = shard_tokens(data, sweep.split, sweep.max_tokens)
        tokenizer = tokenizer or meta_tok
        return tokens, utf8_bytes(tokenizer, tokens[1:].numpy()) if tokenizer is not None else None
    if tokenizer is None:
        raise ValueError(f"{name or 'the checkpoint'} has no tokenizer spec; cannot encode a text file")
    tokens, n_bytes = text_tokens(data, tokenizer)
    if sweep.max_tokens is not None and len(tokens) > sweep.max_tokens:
        tokens = tokens[:sweep.max_tokens]
        n_bytes = utf8_bytes(tokenizer, tokens[1:].numpy())
    return tokens, n_bytes


def measure(model: GPT, tokenizer, data: Path, sweep: Sweep, scoring: Scoring = SCORING, name: str = "",
            tiktoken_file: str | None = None) -> list[Result]:
    """Results for each context length of the sweep (skipping contexts learned positions cannot reach)."""
    tokens, n_bytes = data_tokens(model, tokenizer, Path(data), sweep, name, tiktoken_file)
    results = []
    for ctx in sweep.ctxs:
        if model.config.pos_emb == "learned" and ctx > model.config.block_size:
            print(f"{name}: skipping ctx {ctx}: learned positions stop at block_size={model.config.block_size}",
                  file=sys.stderr)
            continue
        stride = sweep.stride_at(ctx)
        label = f"{name[-32:]} ctx {ctx}" if scoring.progress else None
        nll, count = sliding_nll(model, tokens, ctx, stride, scoring, label)
        loss = nll / count
        bpb = nll / math.log(2) / n_bytes if n_bytes else None
        results.append(Result(name, ctx, stride, count, loss, math.exp(loss), n_bytes, bpb))
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
    p.add_argument("--batch-tokens", type=int, default=BATCH_TOKENS, help="tokens per forward pass (memory knob)")
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
    ctxs = tuple(int(c) for c in (args.ctx or "").split(",") if c.strip())
    sweep = Sweep(ctxs, args.stride, args.stride_frac, args.split, args.max_tokens)
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"error: --data {data} does not exist")
    results, block_sizes = [], []
    try:
        device = runtime.pick_device(args.device)
    except ValueError as e:
        raise SystemExit(f"perplexity.py: error: {e}") from None
    scoring = Scoring(device=device, autocast_dtype=runtime.autocast_dtype(device, args.dtype),
                      token_budget=args.batch_tokens, progress=not args.quiet)
    for path in args.checkpoints:
        try:
            model, own = load_model(path, trust=args.trust_checkpoint, tiktoken_file=args.tiktoken_file)
        except (OSError, ValueError, RuntimeError) as e:
            raise SystemExit(f"perplexity.py: error: {e}") from None
        block_sizes.append(model.config.block_size)
        try:
            tokenizer = checkpoint_tokenizer(own, data, args.tiktoken_file)
            swept = sweep if ctxs else replace(sweep, ctxs=(model.config.block_size,))
            results += measure(model.to(device), tokenizer, data, swept, scoring, name=str(path),
                               tiktoken_file=args.tiktoken_file)
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
