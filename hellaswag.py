"""
HellaSwag evaluation (10,042 validation examples, 4 endings each, zero-shot).

    python hellaswag.py --ckpt out/run                 # newest checkpoint in a run directory
    python hellaswag.py --ckpt out/run/best.pt --style harness --out results.json
    python hellaswag.py --init-from gpt2 --limit 200   # OpenAI weights (needs transformers, online)
    torchrun --standalone --nproc_per_node=4 hellaswag.py --ckpt out/run   # DDP: examples split over ranks

Data: the original release file, downloaded on first use from
https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl,
or a local copy via `--data FILE` or the environment variable HELLASWAG_FILE.

Two scoring styles. Their numbers are NOT comparable with each other; every result says which it uses.

  completion  (default; llm.c and "Let's reproduce GPT-2")
      tokens(ctx) followed by tokens(" " + ending); only the ending's tokens are scored.
      acc      = ending with the lowest summed token loss
      acc_norm = ending with the lowest mean token loss (sum / number of ending tokens)
      OpenAI GPT-2 124M: acc 28.59%, acc_norm 29.55%

  harness     (lm-evaluation-harness `hellaswag` task)
      query   = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
      ending  = preprocess(ending), scored as the continuation " " + ending
      preprocess: strip, " [title]" -> ". ", drop any "[...]", "  " -> " "
      tokens: encode(query + " " + ending); the continuation is what follows encode(query)
      acc      = ending with the highest summed log-likelihood
      acc_norm = ending with the highest log-likelihood / len(ending) in characters
      OpenAI GPT-2 124M: acc 28.92%, acc_norm 31.14%

Tie rule: each prediction is the FIRST ending (lowest index) among those with the best score.
Scores are summed in float64 from float32 per-token losses, so equal per-token losses give exactly
equal scores. Consequence for a model with uniform output (every token has loss log V):
  acc (both styles)     -> the ending with the fewest scored tokens (first of those if several);
  acc_norm, completion  -> every mean is log V, so ending 0;
  acc_norm, harness     -> the ending with the highest characters-per-token ratio (first if tied).

Contexts longer than the model's window are truncated from the left (the ending is kept). Padding is
on the right and never scored, so batched and one-at-a-time scoring give the same numbers.
`evaluate(model, tokenizer, ...)` only calls `model(idx)`, so a torch.compile'd model works; pass the
plain (not DDP-wrapped) module.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from tqdm import tqdm

import runtime
from data import atomic_path
from model import variable_shape_attention
from sample import add_model_args, load_model_and_tokenizer

DATA_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
DATA_ENV = "HELLASWAG_FILE"
NUM_VAL_EXAMPLES = 10042
STYLES = ("completion", "harness")
# Published OpenAI GPT-2 124M results on the full validation set, per scoring style.
REFERENCE = MappingProxyType({
    "completion": MappingProxyType({"acc": 0.2859, "acc_norm": 0.2955}),
    "harness": MappingProxyType({"acc": 0.2892, "acc_norm": 0.3114}),
})
REQUIRED_KEYS = ("activity_label", "ctx", "ctx_a", "ctx_b", "endings", "label")

# -----------------------------------------------------------------------------
# data


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nanogpt-hellaswag"


def resolve_data_file(data: str | os.PathLike | None = None, cache_dir: Path | None = None) -> Path:
    """--data, else $HELLASWAG_FILE, else the cached download (fetched once from the original release)."""
    chosen = data or os.environ.get(DATA_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"HellaSwag data file not found: {path}")
        return path
    path = (cache_dir or default_cache_dir()) / "hellaswag_val.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {DATA_URL} -> {path}", file=sys.stderr)
        try:
            with atomic_path(path) as tmp:
                urllib.request.urlretrieve(DATA_URL, tmp)
        except OSError as e:
            raise RuntimeError(f"could not download HellaSwag ({e}); pass a local copy with --data FILE "
                               f"or set {DATA_ENV}") from e
    return path


def parse_example(line: str, where: str) -> dict:
    """One jsonl line -> example dict; ValueError naming `where` (file:line) if malformed."""
    try:
        ex = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: malformed HellaSwag line (invalid JSON: {e.msg})") from None
    if not isinstance(ex, dict):
        raise ValueError(f"{where}: malformed HellaSwag line (expected a JSON object)")
    missing = [k for k in REQUIRED_KEYS if k not in ex]
    if missing:
        raise ValueError(f"{where}: malformed HellaSwag line (missing {', '.join(missing)})")
    endings = ex["endings"]
    if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) for e in endings)):
        raise ValueError(f"{where}: malformed HellaSwag line ('endings' must be 4 strings)")
    try:
        label = int(ex["label"])
    except (TypeError, ValueError):
        label = -1
    if not 0 <= label < 4:
        raise ValueError(f"{where}: malformed HellaSwag line (label {ex['label']!r} not in 0..3)")
    ex["label"] = label
    return ex


def load_examples(path: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """Read and validate the jsonl file (first `limit` examples if given)."""
    path = resolve_data_file(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if line.strip():
                examples.append(parse_example(line, f"{path}:{lineno}"))
    if not examples:  # else every score would be 0/0
        raise ValueError(f"no examples in {path}; it is empty or holds only blank lines (expected "
                         f"hellaswag_val.jsonl: pass it with --data FILE or set {DATA_ENV})")
    return examples


# -----------------------------------------------------------------------------
# turning an example into 4 scored token rows


def preprocess_harness(text: str) -> str:
    """lm-evaluation-harness hellaswag text cleanup (WikiHow bracket artifacts)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    text = text.replace("  ", " ")
    return text


def harness_query(ex: dict) -> str:
    return preprocess_harness(ex["activity_label"] + ": " + ex["ctx_a"] + " " + ex["ctx_b"].capitalize())


def harness_choices(ex: dict) -> list[str]:
    return [preprocess_harness(e) for e in ex["endings"]]


@dataclass
class Row:
    """Full token sequence (context + ending) whose last `n_cont` tokens are scored."""
    tokens: list[int]
    n_cont: int
    norm: float  # acc_norm denominator: ending tokens (completion) or ending characters (harness)


def build_rows(ex: dict, tokenizer, style: str = "completion") -> list[Row]:
    """The 4 rows of one example, in ending order."""
    if style == "completion":
        ctx = tokenizer.encode(ex["ctx"])
        rows = []
        for ending in ex["endings"]:
            cont = tokenizer.encode(" " + ending)
            rows.append(Row(ctx + cont, len(cont), float(len(cont))))
        return rows
    if style == "harness":
        query = harness_query(ex)
        ctx = tokenizer.encode(query)
        rows = []
        for choice in harness_choices(ex):
            whole = tokenizer.encode(query + " " + choice)
            # harness: the continuation is whatever follows the context's own tokenization
            rows.append(Row(whole, len(whole) - len(ctx), float(len(choice))))
        return rows
    raise ValueError(f"unknown style {style!r}; choose from {STYLES}")


def truncate_row(row: Row, max_len: int | None) -> tuple[Row, bool]:
    """Keep the last max_len + 1 tokens (the model sees max_len inputs); the ending is kept."""
    if max_len is None or len(row.tokens) - 1 <= max_len:
        return row, False
    tokens = row.tokens[-(max_len + 1):]
    return Row(tokens, min(row.n_cont, len(tokens) - 1), row.norm), True


# -----------------------------------------------------------------------------
# scoring


def model_window(model) -> int | None:
    """block_size of a (possibly compiled) GPT, or None if unknown."""
    core = getattr(model, "_orig_mod", model)
    config = getattr(core, "config", None)
    return getattr(config, "block_size", None)


def forward_logits(model, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if logits.dim() != 3 or logits.size(1) != idx.size(1):
        raise RuntimeError(f"model(idx) must return logits for every position: got {tuple(logits.shape)} "
                           f"for input {tuple(idx.shape)}")
    return logits


@torch.no_grad()
def score_rows(model, rows: list[Row], device="cpu", autocast_dtype=None) -> list[float]:
    """Summed token loss (nats, float64) of each row's continuation; all rows in one right-padded forward."""
    device = torch.device(device)
    T = max(len(r.tokens) - 1 for r in rows)
    idx = torch.zeros((len(rows), T), dtype=torch.long)
    row_ids, pos_ids, targets = [], [], []
    for i, r in enumerate(rows):
        L = len(r.tokens)
        idx[i, :L - 1] = torch.tensor(r.tokens[:-1])
        start = L - 1 - r.n_cont  # input position predicting the first continuation token
        row_ids += [i] * r.n_cont
        pos_ids += range(start, L - 1)
        targets += r.tokens[L - r.n_cont:]
    with runtime.autocast(device, autocast_dtype), variable_shape_attention():  # every example has its own length
        logits = forward_logits(model, idx.to(device))
    picked = logits[torch.tensor(row_ids, device=device), torch.tensor(pos_ids, device=device)].float()
    nll = F.cross_entropy(picked, torch.tensor(targets, device=device), reduction="none")
    nll = nll.double().cpu()
    return [float(chunk.sum()) for chunk in torch.split(nll, [r.n_cont for r in rows])]


def first_argmin(values: list[float]) -> int:
    """Index of the smallest value; ties go to the first (lowest) index."""
    best = 0
    for i, v in enumerate(values):
        if v < values[best]:
            best = i
    return best


def predict(losses: list[float], rows: list[Row]) -> tuple[int, int]:
    """(pred, pred_norm) for one example: lowest summed loss, lowest loss per norm unit."""
    normed = [loss / r.norm if r.norm > 0 else math.inf for loss, r in zip(losses, rows)]
    return first_argmin(losses), first_argmin(normed)


def shard_indices(n: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Examples of this rank: rank, rank + world_size, ... (the ranks cover 0..n-1 exactly once)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    return list(range(rank, n, world_size))


def evaluate(model, tokenizer, examples: list[dict] | None = None, style: str = "completion",
             batch_size: int = 8, limit: int | None = None, device="cpu", rank: int = 0,
             world_size: int = 1, data: str | None = None, autocast_dtype=None,
             max_len: int | None = None, progress: bool = False) -> dict:
    """Score HellaSwag; returns acc, acc_norm, counts, style, reference and per-example predictions.

    batch_size = examples per forward (x4 rows). examples=None loads the data (see resolve_data_file).
    With world_size > 1 and torch.distributed initialised, every rank must call this; the counts and
    predictions of all ranks are combined, so every rank returns the global result.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    if examples is None:
        examples = load_examples(data, limit)
    elif limit is not None:
        examples = examples[:limit]
    max_len = max_len or model_window(model)
    mine = shard_indices(len(examples), rank, world_size)
    was_training = model.training
    model.eval()
    preds, n_truncated = [], 0
    bar = None
    if progress and rank == 0:
        bar = tqdm(total=len(mine), desc=f"hellaswag[{style}]", unit="ex", dynamic_ncols=True)
    try:
        for b in range(0, len(mine), batch_size):
            chunk = mine[b:b + batch_size]
            rows = []
            for i in chunk:
                for r in build_rows(examples[i], tokenizer, style):
                    r, cut = truncate_row(r, max_len)
                    n_truncated += cut
                    rows.append(r)
            losses = score_rows(model, rows, device, autocast_dtype)
            for j, i in enumerate(chunk):
                ex_rows, ex_losses = rows[4 * j:4 * j + 4], losses[4 * j:4 * j + 4]
                pred, pred_norm = predict(ex_losses, ex_rows)
                preds.append({"index": i, "ind": examples[i].get("ind"), "label": examples[i]["label"],
                              "pred": pred, "pred_norm": pred_norm, "losses": ex_losses})
            if bar is not None:
                bar.update(len(chunk))
                bar.set_postfix(acc=f"{_frac(preds, 'pred'):.4f}", acc_norm=f"{_frac(preds, 'pred_norm'):.4f}")
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    counts = [sum(p["pred"] == p["label"] for p in preds),
              sum(p["pred_norm"] == p["label"] for p in preds), len(preds), n_truncated]
    if world_size > 1 and runtime.is_distributed():
        counts = runtime.all_reduce_sum(torch.tensor(counts, dtype=torch.long, device=device)).tolist()
        preds = sorted((p for part in runtime.gather_object(preds) for p in part), key=lambda p: p["index"])
    correct, correct_norm, total, n_truncated = counts
    return {
        "style": style,
        "acc": correct / max(total, 1),
        "acc_norm": correct_norm / max(total, 1),
        "num_correct": correct,
        "num_correct_norm": correct_norm,
        "num_examples": total,
        "num_truncated_rows": n_truncated,
        "full_set": total == NUM_VAL_EXAMPLES,
        "reference_gpt2_124m": dict(REFERENCE[style]),
        "predictions": preds,
    }


def _frac(preds: list[dict], key: str) -> float:
    return sum(p[key] == p["label"] for p in preds) / max(len(preds), 1)


def format_result(res: dict) -> str:
    """Human-readable summary, always naming the style and the matching published reference."""
    ref = res["reference_gpt2_124m"]
    scope = "full validation set" if res["full_set"] else "PARTIAL set, not comparable to published numbers"
    return (f"HellaSwag [{res['style']} style] {res['num_examples']} examples ({scope})\n"
            f"  acc      {res['acc']:.4f} ({res['num_correct']}/{res['num_examples']})\n"
            f"  acc_norm {res['acc_norm']:.4f} ({res['num_correct_norm']}/{res['num_examples']})\n"
            f"  reference OpenAI GPT-2 124M, {res['style']} style: acc {ref['acc']:.4f} "
            f"acc_norm {ref['acc_norm']:.4f} (the two styles are not comparable)")


# -----------------------------------------------------------------------------
# command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", help=f"local hellaswag_val.jsonl (default: ${DATA_ENV}, else download)")
    p.add_argument("--style", choices=STYLES, default="completion")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per forward, x4 rows (default: 1 on CPU, where the (rows, T, vocab) logits "
                        "make bigger batches slower, 16 on GPU)")
    p.add_argument("--limit", type=int, default=None, help="first N examples only (quick check)")
    p.add_argument("--out", help="write results (with per-example predictions) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        info = runtime.setup_distributed(args.device)  # torchrun: one process group per rank
        rank, world_size, device = info.rank, info.world_size, info.device
        examples = load_examples(args.data, args.limit)
        model, tokenizer = load_model_and_tokenizer(args.ckpt, args.init_from, device=device,
                                                    tiktoken_file=args.tiktoken_file, trust=args.trust_checkpoint)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"hellaswag.py: error: {e}")
    if args.compile:
        model = torch.compile(model)
    batch_size = args.batch_size or (1 if torch.device(device).type == "cpu" else 16)
    res = evaluate(model, tokenizer, examples, style=args.style, batch_size=batch_size, device=device,
                   rank=rank, world_size=world_size, autocast_dtype=runtime.autocast_dtype(device, args.dtype),
                   progress=not args.quiet)
    if rank == 0:
        print(format_result(res))
        if res["num_truncated_rows"]:
            print(f"  note: {res['num_truncated_rows']} rows had their context truncated from the left "
                  f"to fit the model window")
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
            print(f"  wrote {args.out}")
    runtime.cleanup_distributed()


if __name__ == "__main__":
    main()
