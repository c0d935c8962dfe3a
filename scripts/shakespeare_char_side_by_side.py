"""nanoGPT's character-level baby GPT, run by nanoGPT's own code, then this repo's two configs on the same data,
back to back on one machine; prints one table: final validation loss, wall time, time to nanoGPT's final loss, and
the loss at nanoGPT's wall time.

    python scripts/shakespeare_char_side_by_side.py NANOGPT_DIR [--out out/char_side_by_side]

NANOGPT_DIR is a checkout of karpathy/nanoGPT kept outside this repo (never committed). Its
data/shakespeare_char/prepare.py runs there on $SHARED_DATA/tinyshakespeare.txt (copied to its input.txt, so
nothing is downloaded). Each run is a fresh process and is timed from its start to its exit; the time to
nanoGPT's final loss is the first of our evaluations at or below it (metrics.jsonl's elapsed_s, plus the
process's start-up); the loss at nanoGPT's wall time is our last evaluation that came within it. Both sides
use the CPU, float32, no compile, and torch's default threads.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
# (config, overrides): nanoGPT's model here, and the modern recipe
RUNS = (("configs/shakespeare_char_nanogpt.py", ()), ("configs/shakespeare_char.py", ()))


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    """Run cmd, its output to log; the wall seconds from start to exit (a failure stops the script)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"{' '.join(cmd[:3])} ... failed (exit {code}); see {log}")
    return time.perf_counter() - t0


def run_nanogpt(nanogpt: Path, out: Path, text: Path) -> dict:
    data = nanogpt / "data" / "shakespeare_char"
    if not (data / "train.bin").exists():
        shutil.copyfile(text, data / "input.txt")
        subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    log = out / "nanogpt.log"
    wall = timed([sys.executable, "train.py", *NANOGPT_ARGS, f"--out_dir={out / 'nanogpt_run'}"], nanogpt, log)
    evals = re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", log.read_text())
    return {"name": "nanoGPT (its own train.py)", "val": float(evals[-1][1]), "wall": wall, "to_target": wall}


def run_ours(config: str, overrides: tuple[str, ...], out: Path, data: Path, target: float) -> dict:
    name = "_".join([Path(config).stem, *(o.lstrip("-").replace("=", "") for o in overrides)])
    run = out / name
    wall = timed([sys.executable, "train.py", config, *overrides, f"--data_dir={data}", f"--out_dir={run}",
                  "--overwrite=True"], REPO, out / f"{name}.log")
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["type"] == "eval" and r.get("val_loss") is not None]
    startup = wall - evals[-1]["elapsed_s"]
    hit = next((r for r in evals if r["val_loss"] <= target), None)
    return {"name": " ".join([config, *overrides]), "val": evals[-1]["val_loss"], "wall": wall,
            "to_target": hit["elapsed_s"] + startup if hit else None, "curve": [(r["step"], r["elapsed_s"],
                                                                                 r["val_loss"]) for r in evals]}


def loss_within(row: dict, wall: float) -> float | None:
    """The last evaluated loss that came within `wall` seconds of process start (None: none did)."""
    if "curve" not in row:
        return row["val"] if row["wall"] <= wall else None
    startup = row["wall"] - row["curve"][-1][1]
    inside = [val for _, elapsed, val in row["curve"] if elapsed + startup <= wall]
    return inside[-1] if inside else None


def table(rows: list[dict], target: float) -> str:
    wall = rows[0]["wall"]
    lines = [f"| run | final val loss | wall (s) | time to {target:.4f} (s) | val loss at {wall:.0f} s |",
             "|---|---|---|---|---|"]
    for r in rows:
        hit = f"{r['to_target']:.0f}" if r["to_target"] is not None else "not reached"
        at = loss_within(r, wall)
        lines.append(f"| {r['name']} | {r['val']:.4f} | {r['wall']:.0f} | {hit} | "
                     f"{'-' if at is None else f'{at:.4f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("nanogpt", type=Path, help="a karpathy/nanoGPT checkout (outside this repo)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "char_side_by_side")
    p.add_argument("--text", type=Path, default=Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
                   / "tinyshakespeare.txt")
    args = p.parse_args(argv)
    if not (args.nanogpt / "train.py").is_file():
        sys.exit(f"{args.nanogpt} is not a nanoGPT checkout (no train.py)")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    if not (data / "meta.json").exists():
        subprocess.run([sys.executable, "prepare_data.py", "shakespeare_char", "--input", str(args.text),
                        "--out", str(data)], cwd=REPO, check=True, capture_output=True)
    rows = [run_nanogpt(args.nanogpt.resolve(), args.out.resolve(), args.text.resolve())]
    rows += [run_ours(c, o, args.out.resolve(), data.resolve(), rows[0]["val"]) for c, o in RUNS]
    print(table(rows, rows[0]["val"]))
    (args.out / "side_by_side.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
