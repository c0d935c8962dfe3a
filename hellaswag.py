"""
HellaSwag evaluation (10,042 validation examples, 4 endings each, zero-shot): one task of evaluate.py's
engine, with HellaSwag's own defaults (completion style, every example) and published reference numbers.

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

Contexts longer than the model's context (block_size) are cut from the left (the ending is kept). Padding is
on the right and never scored, so batched and one-at-a-time scoring give the same numbers. Pass the
plain (not DDP-wrapped) module. `python evaluate.py --tasks hellaswag` gives the same numbers (harness
style by default there) next to the other tasks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import MappingProxyType

import torch

import evaluate as ev
import runtime
from load import add_model_args, load_model

DATA_ENV = ev.HELLASWAG_ENV
NUM_VAL_EXAMPLES = 10042
STYLES = ("completion", "harness")
# Published OpenAI GPT-2 124M results on the full validation set, per scoring style.
REFERENCE = MappingProxyType({
    "completion": MappingProxyType({"acc": 0.2859, "acc_norm": 0.2955}),
    "harness": MappingProxyType({"acc": 0.2892, "acc_norm": 0.3114}),
})
TASK = ev.TASKS["hellaswag"]
SETUP = ev.TaskSetup(style="completion")  # HellaSwag's own defaults: completion style, zero-shot, every example
FLAGS = ev.Flags(data_dir=None, tasks=None, data_file="--data")  # this script's way to the file, for messages


def load_examples(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The validation examples: `path`, else $HELLASWAG_FILE, else the download (first `limit` if given)."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"HellaSwag data file not found: {path}")
        docs = ev.read_jsonl(Path(path), TASK)
    else:
        docs = ev.load_task("hellaswag", flags=FLAGS).docs
    return docs[:limit] if limit is not None else docs


def score(model, tokenizer, examples: list[dict] | None = None, setup: ev.TaskSetup = SETUP,
          scoring: ev.Scoring = ev.Scoring(), data: str | None = None) -> dict:
    """Score HellaSwag; returns acc, acc_norm, counts, style, reference and per-example predictions.
    examples=None loads the data from `data` (see load_examples). With scoring.world_size > 1 and
    torch.distributed initialised, every rank must call this, and every rank returns the global result."""
    style = setup.style
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    if examples is None:
        examples = load_examples(data, setup.limit)
    res = ev.evaluate_task(model, tokenizer, ev.TaskData(TASK, examples, None), setup, scoring)
    preds = [{"index": p["index"], "ind": examples[p["index"]].get("ind"), "label": p["gold"], "pred": p["pred"],
              "pred_norm": p["pred_norm"], "losses": p["nll"]} for p in res["predictions"]]
    n = res["n"]
    return {
        "style": style,
        "acc": res["acc"],
        "acc_norm": res["acc_norm"],
        "num_correct": sum(p["pred"] == p["label"] for p in preds),
        "num_correct_norm": sum(p["pred_norm"] == p["label"] for p in preds),
        "num_examples": n,
        "num_truncated_rows": res["truncated_requests"],
        "full_set": n == NUM_VAL_EXAMPLES,
        "reference_gpt2_124m": dict(REFERENCE[style]),
        "predictions": preds,
    }


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
    p.add_argument("--batch-tokens", type=int, default=None,
                   help=ev.BATCH_TOKENS_HELP)
    p.add_argument("--limit", type=int, default=None, help="first N examples only (quick check)")
    p.add_argument("--out", help="write results (with per-example predictions) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.batch_tokens is not None and args.batch_tokens < 1:
        p.error("--batch-tokens must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        ev.check_out_file(args.out)
        info = runtime.setup_distributed(args.device)  # torchrun: one process group per rank
        examples = load_examples(args.data, args.limit)
        model, tokenizer = load_model(args.source, info.device, args.trust_checkpoint,
                                      tiktoken_file=args.tiktoken_file,
                                      tokenizer="required")
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"hellaswag.py: error: {e}")
    if args.compile:
        ev.compile_for_scoring(model)
    res = score(model, tokenizer, examples, ev.TaskSetup(style=args.style), ev.scoring_from_args(args, info))
    if info.rank == 0:
        ev.report(format_result(res), res["num_truncated_rows"], res, args.out, indent="  ")
    runtime.cleanup_distributed()


if __name__ == "__main__":
    main()
