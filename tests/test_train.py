"""train.py: config, schedules, DDP equivalence, exact resume, signals, atomic checkpoints, logging, README.

Most runs use a character-level sentencepiece tokenizer on a slice of Tiny Shakespeare (vocab 65) and a
1-layer, 32-wide model, so every step takes milliseconds; the README quickstart test uses GPT-2 BPE.
"""
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import write_token_dataset

import checkpoint
import config
import data as datalib
import evaluate
import optim
import runtime
import token_shards
import tokenization
import train
from checkpoint import load_checkpoint, resolve_checkpoint
from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent



def tiny_args(data_dir, out_dir, **over) -> list[str]:
    vocab = tokenization.load_tokenizer_for(data_dir).vocab_size
    args = dict(data_dir=data_dir, out_dir=out_dir, vocab_size=vocab, block_size=32, n_layer=1, n_head=2,
                n_embd=32, batch_size=4, total_batch_size=0, max_iters=6, warmup_iters=2, learning_rate=3e-3,
                eval_interval=3, eval_iters=2, log_interval=1, sample_tokens=0, device="cpu", keep_last=2)
    args.update(over)
    return [f"--{k}={v}" for k, v in args.items()]


def tiny(data_dir, out_dir, **over) -> config.TrainConfig:
    return config.load_config(None, tiny_args(data_dir, out_dir, **over))


def rows(out_dir, kind="train") -> list[dict]:
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def weights(path) -> dict:
    return load_checkpoint(path)["model"]


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}


def test_batch_warmup_stages_grow_the_accumulation(char_data, tmp_path, monkeypatch):
    """batch_warmup: tokens per step in equal stages over batch_warmup_frac of the steps, then total_batch_size;
    each stage must divide into micro-batches (the error names the fix)."""
    seen = []
    step = train.Stepper.forward_backward
    monkeypatch.setattr(train.Stepper, "forward_backward", lambda self, nb, accum, *a: seen.append(accum) or
                        step(self, nb, accum, *a))
    per_micro = 4 * 32                                                       # tiny(): batch 4 x block 32
    train.run(tiny(char_data, tmp_path, max_iters=8, total_batch_size=4 * per_micro,
                     batch_warmup=f"{per_micro},{2 * per_micro}", batch_warmup_frac=0.5))
    assert seen == [1, 1, 2, 2, 4, 4, 4, 4]
    assert [optim.stage_at(s, 10, 512, (128, 256), 0.3) for s in (0, 1, 2, 3)] == [128, 128, 256, 512]
    with pytest.raises(config.ConfigError, match="batch_warmup is set but batch_warmup_frac=0"):
        tiny(char_data, tmp_path, batch_warmup=per_micro)
    with pytest.raises(config.ConfigError, match="not divisible"):
        train.run(tiny(char_data, tmp_path / "b", batch_warmup=per_micro + 1, batch_warmup_frac=0.5))


def test_batch_warmup_resume_is_bit_identical(char_data, tmp_path):
    """Resumed inside the batch warm-up (step 6 of its 8; the stages follow max_iters, so the run is the same
    10-step run, resumed from its step-6 checkpoint): the accumulation follows the step, so 6 + 4 == 10."""
    common = dict(max_iters=10, eval_interval=5, ckpt_interval=3, keep_last=5, total_batch_size=4 * 4 * 32,
                  batch_warmup="128,256", batch_warmup_frac=0.8)
    train.run(tiny(char_data, tmp_path / "full", **common))
    train.run(tiny(char_data, tmp_path / "split", **common, resume=tmp_path / "full" / "ckpt_0000006.pt"))
    full, split = rows(tmp_path / "full"), rows(tmp_path / "split")
    assert [r["loss"] for r in full][6:] == [r["loss"] for r in split] and [r["step"] for r in split] == [7, 8, 9, 10]
    a, b = weights(tmp_path / "full" / "ckpt_0000010.pt"), weights(tmp_path / "split" / "ckpt_0000010.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seq_len_warmup_stages():
    stages = (128, 192, 256, 384)
    got = [optim.stage_at(s, 100, 512, stages, 0.3) for s in range(100)]
    assert got[:8] == [128] * 8 and got[8:15] == [192] * 7 and got[15:23] == [256] * 8
    assert got[23:30] == [384] * 7 and got[30:] == [512] * 70
    assert optim.stage_at(5, 100, 512, (), 0.3) == 512
    with pytest.raises(config.ConfigError, match="seq_len_warmup"):
        config.load_config(None, ["--seq_len_warmup=128,2048", "--seq_len_warmup_frac=0.3"])


def test_grad_accum_steps():
    assert config.grad_accum_steps(524288, 16, 1024, 1) == 32
    assert config.grad_accum_steps(524288, 16, 1024, 8) == 4
    assert config.grad_accum_steps(0, 16, 1024, 8) == 1
    with pytest.raises(config.ConfigError, match="not divisible.*total_batch_size="):
        config.grad_accum_steps(500000, 16, 1024, 3)


# ----------------------------------------------------------------------------- config

def test_config_errors_and_overrides(tmp_path):
    with pytest.raises(config.ConfigError, match="unknown config key 'learning_rte'; did you mean 'learning_rate'"):
        config.load_config(None, ["--learning_rte=1e-3"])
    with pytest.raises(config.ConfigError, match="max_iters expects int, got 'ten'"):
        config.load_config(None, ["--max_iters=ten"])
    with pytest.raises(config.ConfigError, match="compile expects bool"):
        config.load_config(None, ["--compile=sometimes"])
    with pytest.raises(config.ConfigError, match="dtype='fp8' is not one of"):
        config.load_config(None, ["--dtype=fp8"])
    cfg = config.load_config(None, ["--max_iters=40", "--out_dir=/tmp/run", "--compile", "--wandb_log=false",
                                   "--learning_rate=3e-4", "--n_kv_head=4", "--lr_decay_iters=None", "--resume",
                                   "--seq_len_warmup=64,128", "--seq_len_warmup_frac=0.25"])
    assert (cfg.schedule.max_iters, cfg.run.out_dir, cfg.run.compile, cfg.run.wandb_log) == (40, "/tmp/run", True, False)
    assert cfg.optim.learning_rate == 3e-4 and cfg.model.n_kv_head == 4 and cfg.schedule.lr_decay_iters is None
    assert cfg.run.resume == "latest" and cfg.data.seq_len_warmup == (64, 128)
    # a config file: public simple values are keys; a preset derives from base; values are type-checked
    (tmp_path / "mine.py").write_text("from configs.base import *\nimport math\n_private = 3\n"
                                      "n_layer = 2\nlearning_rate = 1e-3 * math.sqrt(4)\n")
    cfg = config.load_config(tmp_path / "mine.py", ["--n_layer=3"])
    assert cfg.model.n_layer == 3 and cfg.optim.learning_rate == pytest.approx(2e-3)
    (tmp_path / "typo.py").write_text("n_layers = 2\n")
    with pytest.raises(config.ConfigError, match="did you mean 'n_layer'"):
        config.load_config(tmp_path / "typo.py")
    (tmp_path / "wrongtype.py").write_text("batch_size = 'eight'\n")
    with pytest.raises(config.ConfigError, match="batch_size expects int"):
        config.load_config(tmp_path / "wrongtype.py")


@pytest.mark.parametrize("body, line, what", [("n_layer = 2\nn_embd = (\n", 2, "was never closed"),
                                              ("n_layer = 2\n\nn_embd = 32 * undefined\n", 3, "NameError")])
def test_broken_config_file_is_one_line_naming_file_and_line(tmp_path, capsys, body, line, what):
    path = tmp_path / "broken.py"
    path.write_text(body)
    with pytest.raises(SystemExit) as e:
        train.main([str(path), "--max_iters=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err and "runpy" not in err
    assert err.startswith(f"error: {path}:{line}: ") and what in err and "fix that line" in err


def test_each_default_is_written_once():
    """configs/base.py (kept for `from configs.base import *`) sets no key: the defaults live in config.py."""
    assert config.read_config_file(REPO / "configs" / "base.py") == {}
    for path in (REPO / "configs").glob("*.py"):
        assert not re.search(r"^from configs\.base import", path.read_text(), re.M), f"{path.name}: base.py sets nothing"


def test_help_lists_every_key_with_default_and_meaning(capsys):
    train.main(["--help"])
    out = capsys.readouterr().out
    for key, value in config.TrainConfig().flat().items():
        assert f"--{key}=" in out, key
    assert "--learning_rate=0.0006" in out and "# peak lr" in out
    assert "--pos_emb=learned" in out and "# learned | rope | alibi | none" in out  # model.GPTConfig's comment


def test_bad_input_stops_before_work(char_data, tmp_path):
    out = tmp_path / "out"
    cases = [
        (dict(total_batch_size=1000), "not divisible"),
        (dict(data_dir=tmp_path, vocab_size=65), "no train shards"),
        (dict(data_dir=tmp_path / "missing", vocab_size=65), "does not exist"),
        (dict(vocab_size=50257), "vocab_size=65.*set --vocab_size=65"),
        (dict(resume="latest"), "--resume: .*Drop --resume"),
        (dict(loader="bos_aligned"), r"loader=bos_aligned needs documents marked .* no token 1 is in them; re-run "
                                     r"prepare_data.py with --boundary .* or use --loader=random"),
    ]
    for over, msg in cases:
        with pytest.raises(config.ConfigError, match=msg):
            train.run(config.load_config(None, tiny_args(char_data, out) + [f"--{k}={v}" for k, v in over.items()]))
        assert not out.exists(), f"{over} did work before failing"
    train.run(tiny(char_data, out, max_iters=2))
    with pytest.raises(config.ConfigError, match=r"trained with n_embd=32 \(config says 64\)"):
        train.run(tiny(char_data, out, n_embd=64, resume="latest", max_iters=4))


def test_main_reports_config_errors(char_data, tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "--max_itrs=3"], cwd=REPO, capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert proc.returncode == 2 and "did you mean 'max_iters'" in proc.stderr


# ----------------------------------------------------------------------------- training runs

def test_short_run_lowers_val_loss(char_data, tmp_path):
    res = train.run(tiny(char_data, tmp_path, max_iters=200, eval_interval=200, eval_iters=4, learning_rate=1e-2,
                           warmup_iters=10, batch_size=8, log_interval=50))
    evals = rows(tmp_path, "eval")
    assert [e["step"] for e in evals] == [0, 200]
    first, last = evals[0]["val_loss"], evals[-1]["val_loss"]
    assert first > 4.0 and last < first - 1.3, (first, last)     # ln(65) = 4.17 -> ~2.6
    assert res["val_loss"] == last and res["best_val_loss"] == last
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["step"] == 200 and ckpt["val_loss"] == last and ckpt["tokenizer"]["kind"] == "sentencepiece"
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])


def test_samples_never_change_training(char_data, tmp_path):
    """In-training samples (dropout on) use their own generator in eval mode: the loss curve is the same."""
    common = dict(max_iters=6, dropout=0.1, eval_interval=2)
    train.run(tiny(char_data, tmp_path / "quiet", sample_tokens=0, **common))
    train.run(tiny(char_data, tmp_path / "samples", sample_tokens=8, **common))
    assert [r["loss"] for r in rows(tmp_path / "quiet")] == [r["loss"] for r in rows(tmp_path / "samples")]


def test_resume_is_bit_identical(char_data, tmp_path):
    """6 steps + resume + 4 steps == 10 steps: same losses and weights, bit for bit (dropout on, and samples
    at every evaluation, including the extra one at the end of the first leg)."""
    common = dict(max_iters=10, lr_decay_iters=10, dropout=0.1, eval_interval=5, sample_tokens=8)
    train.run(tiny(char_data, tmp_path / "full", **common))
    train.run(tiny(char_data, tmp_path / "split", **{**common, "max_iters": 6}))
    assert resolve_checkpoint(tmp_path / "split").name == "ckpt_0000006.pt"
    train.run(tiny(char_data, tmp_path / "split", **common, resume="latest"))
    full, split = rows(tmp_path / "full"), rows(tmp_path / "split")
    assert [r["step"] for r in split] == list(range(1, 11))
    assert [r["loss"] for r in full] == [r["loss"] for r in split]
    a, b = weights(tmp_path / "full" / "ckpt_0000010.pt"), weights(tmp_path / "split" / "ckpt_0000010.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "split").glob("ckpt_*.pt")) == ["ckpt_0000006.pt", "ckpt_0000010.pt"]


@pytest.fixture(scope="module")
def doc_data(char_data, tmp_path_factory) -> Path:
    """The char data as documents: each paragraph of the text is BOS + its characters."""
    tok = tokenization.load_tokenizer_for(char_data)
    ids = np.concatenate([token_shards.read_shard(p) for p in token_shards.list_shards(char_data, "train")])
    text = tok.decode(ids.tolist())
    docs = [[tok.bos_id] + tok.encode(par) for par in text.split("\n\n")]
    train_ids = [i for doc in docs for i in doc]
    return write_token_dataset(tmp_path_factory.mktemp("doc_data"), tok, train_ids[:20_000], train_ids, prefix="doc")


def test_bos_aligned_resume_is_bit_identical(doc_data, tmp_path, capsys):
    """loader=bos_aligned: 6 steps + resume + 4 == 10 steps (rows, buffer and cropped count are in the checkpoint)."""
    common = dict(max_iters=10, lr_decay_iters=10, dropout=0.1, eval_interval=5, loader="bos_aligned", pack_buffer=64)
    train.run(tiny(doc_data, tmp_path / "full", **common))
    train.run(tiny(doc_data, tmp_path / "split", **{**common, "max_iters": 6}))
    train.run(tiny(doc_data, tmp_path / "split", **common, resume="latest"))
    full, split = rows(tmp_path / "full"), rows(tmp_path / "split")
    assert [r["loss"] for r in full] == [r["loss"] for r in split] and len(full) == 10
    a, b = weights(tmp_path / "full" / "ckpt_0000010.pt"), weights(tmp_path / "split" / "ckpt_0000010.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ends = [rows(tmp_path / run, "eval")[-1] for run in ("full", "split")]
    assert ends[0]["cropped_tokens"] == ends[1]["cropped_tokens"] > 0 and 0 < ends[0]["cropped_frac"] < 1
    assert load_checkpoint(tmp_path / "full")["loader"][0]["loader"] == "bos_aligned"
    assert re.search(r"step 10: loader cropped [\d,]+ tokens so far \(\d+\.\d% of", capsys.readouterr().out)


def test_sigterm_saves_and_resumes(char_data, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(char_data, out, max_iters=100000, lr_schedule="constant", eval_interval=100000, dropout=0.1,
                     sample_tokens=8)
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "metrics.jsonl").exists() and len(rows(out)) >= 3):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "received SIGTERM" in output and "stopped by signal" in output
    ckpt = load_checkpoint(out)
    step = ckpt["step"]
    assert step >= 3 and rows(out)[-1]["step"] == step
    res = train.run(tiny(char_data, out, max_iters=step + 2, lr_schedule="constant", eval_interval=100000,
                           dropout=0.1, sample_tokens=8, resume="latest"))
    assert res["step"] == step + 2 and [r["step"] for r in rows(out)][-3:] == [step, step + 1, step + 2]
    # same numbers as never stopping
    ref = tmp_path / "ref"
    train.run(tiny(char_data, ref, max_iters=step + 2, lr_schedule="constant", eval_interval=100000, dropout=0.1,
                     sample_tokens=8))
    assert [r["loss"] for r in rows(ref)] == pytest.approx([r["loss"] for r in rows(out)], rel=1e-5)


def test_crash_while_writing_checkpoint_keeps_the_previous_one(char_data, tmp_path, monkeypatch):
    train.run(tiny(char_data, tmp_path, max_iters=3))
    good = resolve_checkpoint(tmp_path)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:1000])   # half-written file, then the process "dies"
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(train.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train.run(tiny(char_data, tmp_path, max_iters=6, resume="latest"))
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path) == good and good.name == "ckpt_0000003.pt"
    assert load_checkpoint(tmp_path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if "ckpt" in p.name) == ["ckpt_0000003.pt"]
    res = train.run(tiny(char_data, tmp_path, max_iters=6, resume="latest"))   # and the run goes on
    assert res["step"] == 6


def test_nonfinite_losses_skip_then_stop(char_data, tmp_path, monkeypatch):
    train.run(tiny(char_data, tmp_path, max_iters=3))
    before = weights(resolve_checkpoint(tmp_path))
    monkeypatch.setattr(train.Trainer, "all_reduce_stats", lambda self, loss, stop: (float("nan"), False))
    with pytest.raises(train.NonFiniteLoss, match="at step 6"):
        train.run(tiny(char_data, tmp_path, max_iters=10, max_nonfinite=3, eval_interval=100, resume="latest"))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 3 and all(torch.equal(before[k], ckpt["model"][k]) for k in before)


def test_two_ddp_ranks_equal_one_rank_with_accumulation(char_data, tmp_path):
    """torchrun (Gloo) with 2 ranks x 2 x batch 4 == 1 process with 4 x 4 accumulation; ranks get disjoint data.
    (The ranks agree between micro-steps whether a stop signal came: runtime.any_rank.)"""
    common = dict(max_iters=3, total_batch_size=2 * 2 * 4 * 32, eval_interval=3, dropout=0.0)
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           *tiny_args(char_data, ddp_out, **common)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x2 ranks" in proc.stdout and "x 2 accum" in proc.stdout
    train.run(tiny(char_data, one_out, **common))
    a, b = weights(ddp_out / "ckpt_0000003.pt"), weights(one_out / "ckpt_0000003.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ddp_losses, one_losses = [r["loss"] for r in rows(ddp_out)], [r["loss"] for r in rows(one_out)]
    assert ddp_losses == pytest.approx(one_losses, rel=1e-5)
    ddp_ckpt = load_checkpoint(ddp_out / "ckpt_0000003.pt")
    assert len(ddp_ckpt["rng"]) == 2 and ddp_ckpt["world_size"] == 2
    # the loaders the ranks built deal disjoint windows
    loaders = [datalib.DataLoader(char_data, "train", 4, 32, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        x0, x1 = (ld.next_batch()[0] for ld in loaders)
        assert not ({tuple(r) for r in x0.tolist()} & {tuple(r) for r in x1.tolist()})
    # a 2-rank checkpoint resumes on 1 rank and says what happens to the data order
    res = train.run(tiny(char_data, ddp_out, **{**common, "max_iters": 4}, resume="latest"))
    assert res["step"] == 4


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_val_loss_does_not_depend_on_the_number_of_ranks(char_data, tmp_path, parallelism):
    """eval_iters batches in total, shared out over the ranks (5 over 2: one rank pads with an uncounted batch, so
    FSDP's collective forwards stay in step): 2 ranks give 1 rank's val loss on the same (initial) weights."""
    common = dict(max_iters=1, eval_interval=1, eval_iters=5, parallelism=parallelism)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           *tiny_args(char_data, tmp_path / "two", **common)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train.run(tiny(char_data, tmp_path / "one", **{**common, "parallelism": "ddp"}))
    two, one = (rows(tmp_path / name, "eval")[0] for name in ("two", "one"))
    assert two["step"] == one["step"] == 0 and two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-6)


def test_world_size_change_is_logged(char_data, tmp_path, capsys):
    train.run(tiny(char_data, tmp_path, max_iters=2))
    ckpt_path = resolve_checkpoint(tmp_path)
    ckpt = load_checkpoint(ckpt_path)
    ckpt["rng"] = ckpt["rng"] * 2     # pretend 2 ranks wrote it
    torch.save(ckpt, ckpt_path)
    train.run(tiny(char_data, tmp_path, max_iters=3, resume="latest"))
    assert "written by 2 rank(s), now 1" in capsys.readouterr().out


def test_metrics_jsonl_and_wandb_offline(char_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train.run(tiny(char_data, tmp_path, max_iters=6, log_interval=2, wandb_log=True, wandb_run_name="t"))
    train_rows = rows(tmp_path)
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert {"loss", "lr", "grad_norm", "ms", "tok_s", "mfu"} <= set(train_rows[0])
    assert [r["step"] for r in rows(tmp_path, "eval")] == [0, 3, 6]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    deadline = time.time() + 60      # wandb's service process may still be flushing after finish()
    while True:
        blob = b"".join(p.read_bytes() for p in runs[0].rglob("*.wandb"))
        if (b"train/loss" in blob and b"val/val_loss" in blob) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert b"train/loss" in blob and b"val/val_loss" in blob, sorted(p.name for p in runs[0].rglob("*"))
    assert json.loads((tmp_path / "config.json").read_text())["max_iters"] == 6


def test_muon_optimizer_trains(char_data, tmp_path):
    res = train.run(tiny(char_data, tmp_path, optimizer="muon", muon_lr=0.02, max_iters=4, eval_interval=4))
    assert math.isfinite(res["val_loss"])
    assert len(load_checkpoint(tmp_path)["optimizer"]) == 2


def test_muon_groups_hold_every_parameter_once():
    for tie, head in ((True, []), (False, ["lm_head.weight"])):
        cfg = config.load_config(None, ["--optimizer=muon", "--n_layer=2", "--n_embd=32", "--n_head=2",
                                        "--block_size=16", "--vocab_size=65", f"--tie_embeddings={tie}",
                                        "--qk_norm=True"])
        raw = train.GPT(cfg.model)
        split = {k: [n for n, _ in v] for k, v in optim.muon_split(raw).items()}
        assert split["head"] == head and split["embed"] == ["transformer.wte.weight", "transformer.wpe.weight"]
        assert split["hidden"] == [f"transformer.h.{i}.{m}.weight" for i in (0, 1) for m in
                                   ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
        assert "transformer.h.0.attn.q_norm.weight" in split["scalar"] and "transformer.ln_f.bias" in split["scalar"]
        names = [n for v in split.values() for n in v]
        assert sorted(names) == sorted(n for n, _ in raw.named_parameters()) and len(set(names)) == len(names)
        opts = optim.build_optimizers(raw, cfg, "cpu")
        held = [id(p) for opt in opts for g in opt.param_groups for p in g["params"]]
        assert sorted(held) == sorted(id(p) for p in raw.parameters()) and len(set(held)) == len(held)
    speedrun = config.load_config(None, ["--optimizer=muon", "--n_layer=4", "--n_embd=32", "--n_head=2", "--vocab_size=65",
                                         "--value_embeds=1", "--x0_mix=True", "--unet_skips=True"])
    split = {k: [n for n, _ in v] for k, v in optim.muon_split(train.GPT(speedrun.model)).items()}
    assert split["embed"] == ["transformer.wte.weight", "transformer.wpe.weight", "value_embeds.tables.0.weight"]
    assert {"x0_mix.resid_lambdas", "x0_mix.x0_lambdas", "unet.skip_weights",
            "transformer.h.0.attn.value_mix.lambdas"} <= set(split["scalar"])


def test_muon_lrs_momentum_warmup_and_bad_combinations():
    base = ["--optimizer=muon", "--tie_embeddings=False", "--learning_rate=0.004", "--muon_lr=0.05"]
    cfg = config.load_config(None, base + ["--embed_lr=0.3", "--head_lr=0.008", "--scalar_lr=0.04",
                                           "--muon_weight_decay=0.025", "--vocab_size=65", "--n_layer=1"])
    muon, adamw = optim.build_optimizers(train.GPT(cfg.model), cfg, "cpu")
    assert [(g["lr"], g["weight_decay"]) for g in muon.param_groups] == [(0.05, 0.025)]
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in adamw.param_groups] == [
        ("embed", 0.3, 0.1), ("head", 0.008, 0.1), ("scalar", 0.04, 0.0)]
    optim.set_lr([muon, adamw], optim.peak_lrs([muon, adamw]), 0.5)       # the schedule scales every group
    assert [g["lr"] for g in adamw.param_groups] == [0.15, 0.004, 0.02] and muon.param_groups[0]["lr"] == 0.025
    warm = config.load_config(None, ["--optimizer=muon", "--muon_momentum_warmup=300"]).optim
    assert [optim.muon_momentum_at(s, warm) for s in (0, 150, 300, 1000)] == pytest.approx([0.85, 0.90, 0.95, 0.95])
    assert optim.muon_momentum_at(30, warm) == pytest.approx(0.85 + 0.1 * 30 / 300)
    assert optim.muon_momentum_at(0, config.load_config(None, []).optim) == 0.95     # no warm-up: constant
    for args, msg in ((["--embed_lr=0.1"], "embed_lr applies to optimizer=muon only"),
                      (["--optimizer=muon", "--head_lr=0.01"], "head_lr needs an untied output head"),
                      (["--optimizer=muon", "--muon_momentum=1.0"], r"muon_momentum=1.0 must be in \[0, 1\)"),
                      (["--optimizer=muon", "--scalar_lr=0"], "scalar_lr=0.0 must be > 0")):
        with pytest.raises(config.ConfigError, match=msg):
            config.load_config(None, args)


def test_cautious_weight_decay_matches_a_hand_computation():
    before = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    param = torch.tensor([[0.9, -2.1], [3.2, -3.9]])   # updates before-param: +0.1, +0.1, -0.2, -0.1
    optim.cautious_decay_(param, before, lr=0.5, weight_decay=0.2)  # same sign as the weight: entries 0 and 3
    torch.testing.assert_close(param, torch.tensor([[0.8, -2.1], [3.2, -3.5]]), rtol=0, atol=1e-6)
    torch.manual_seed(0)                               # and inside Muon's step: plain Muon without decay, then that
    w, g = torch.randn(4, 3), torch.randn(4, 3)
    plain, cautious = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    plain.grad, cautious.grad = g.clone(), g.clone()
    optim.Muon([plain], lr=0.1, weight_decay=0.0).step()
    optim.Muon([cautious], lr=0.1, weight_decay=0.5, cautious_wd=True).step()
    mask = ((w - plain.detach()) * w >= 0).float()
    assert 0 < mask.sum() < mask.numel()
    torch.testing.assert_close(cautious.detach(), plain.detach() - 0.1 * 0.5 * mask * w)


def test_muon_recipe_resume_is_bit_identical(char_data, tmp_path):
    """Muon with momentum warm-up (resumed half way through it), cautious decay and its own lrs per group:
    6 steps + resume + 4 == 10 steps."""
    common = dict(max_iters=10, lr_decay_iters=10, eval_interval=5, dropout=0.1, optimizer="muon", muon_lr=0.02,
                  muon_momentum_warmup=8, muon_cautious_wd=True, muon_weight_decay=0.5, tie_embeddings=False,
                  embed_lr=0.01, head_lr=0.002, scalar_lr=0.005)
    train.run(tiny(char_data, tmp_path / "full", **common))
    train.run(tiny(char_data, tmp_path / "split", **{**common, "max_iters": 6}))
    mid = load_checkpoint(tmp_path / "split")["optimizer"]
    assert mid[0]["param_groups"][0]["momentum"] == pytest.approx(0.85 + 0.1 * 5 / 8)   # step 5's, the last taken
    assert [g["name"] for g in mid[1]["param_groups"]] == ["embed", "head", "scalar"]
    train.run(tiny(char_data, tmp_path / "split", **common, resume="latest"))
    full, split = rows(tmp_path / "full"), rows(tmp_path / "split")
    assert [r["loss"] for r in full] == [r["loss"] for r in split] and len(full) == 10
    a, b = weights(tmp_path / "full" / "ckpt_0000010.pt"), weights(tmp_path / "split" / "ckpt_0000010.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adamw8bit_without_bitsandbytes_is_a_clear_error(char_data, tmp_path):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    with pytest.raises(config.ConfigError, match="pip install bitsandbytes"):
        train.run(tiny(char_data, tmp_path, optimizer="adamw8bit"))


def test_label_smoothing_changes_the_training_loss_but_never_the_validation_loss(char_data, tmp_path):
    train.run(tiny(char_data, tmp_path / "plain", max_iters=1, eval_interval=1))
    train.run(tiny(char_data, tmp_path / "smooth", max_iters=1, eval_interval=1, label_smoothing=0.2))
    plain, smooth = rows(tmp_path / "plain", "eval"), rows(tmp_path / "smooth", "eval")
    assert smooth[0]["val_loss"] == plain[0]["val_loss"]          # step 0: same weights, unsmoothed metric
    first_plain, first_smooth = rows(tmp_path / "plain")[0]["loss"], rows(tmp_path / "smooth")[0]["loss"]
    assert abs(first_smooth - first_plain) > 1e-4                 # the same weights and batch, another objective
    with pytest.raises(config.ConfigError, match="label_smoothing=1.5 must be a fraction"):
        tiny(char_data, tmp_path / "bad", label_smoothing=1.5)


# ----------------------------------------------------------------------------- optional GPU extras (fp8, liger)

def test_fp8_and_liger_on_cpu_are_clear_errors_before_training(char_data, tmp_path):
    with pytest.raises(config.ConfigError, match="fp8=linear needs a CUDA GPU.*--fp8=off"):
        train.run(tiny(char_data, tmp_path / "a", fp8="linear"))
    with pytest.raises(config.ConfigError, match="fused_loss=liger .* on CUDA.*--fused_loss=on"):
        train.run(tiny(char_data, tmp_path / "b", fused_loss="liger"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture
def fake_hopper(monkeypatch):
    """CUDA device checks answered as an H100 would, and no optional package installed."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(config.importlib.util, "find_spec", lambda name: None)
    return monkeypatch


def test_gpu_extras_name_what_is_missing(fake_hopper):
    def check(fused=False, **run):
        cfg = config.load_config(None, [f"--{k}={v}" for k, v in run.items()])
        config.check_gpu_extras(cfg, "cuda:0", fused)

    check()                                                      # nothing asked: nothing checked
    with pytest.raises(config.ConfigError, match="needs torchao.*pip install torchao"):
        check(fp8="linear")
    with pytest.raises(config.ConfigError, match="needs liger-kernel.*pip install liger-kernel"):
        check(fused=True, fused_loss="liger")
    fake_hopper.setattr(config.importlib.util, "find_spec", lambda name: object())
    check(fp8="all")
    with pytest.raises(config.ConfigError, match="fp8=all .*--fused_loss=off"):
        check(fused=True, fp8="all")
    fake_hopper.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(config.ConfigError, match="compute capability 8.9"):
        check(fp8="linear")


def tiny_gpt(**over):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(block_size=32, vocab_size=200, n_layer=2, n_head=2, n_embd=32), **over}))


@pytest.mark.parametrize("include_head", [False, True])
def test_fp8_conversion_swaps_linears_keeps_names_ties_and_learns(include_head):
    """torchao's float8 emulation runs on CPU too: the conversion itself is checked here, the speed and the
    loss curve on a GPU (tests/test_gpu.py, scripts/gpu_checks.sh fp8)."""
    pytest.importorskip("torchao")
    model, plain = tiny_gpt(vocab_size=256), tiny_gpt(vocab_size=256)
    names = list(model.state_dict())
    swapped = runtime.convert_to_fp8(model, include_head=include_head)
    assert swapped == 4 * 2 + include_head                       # c_attn, attn c_proj, c_fc, mlp c_proj per block
    assert type(model.lm_head).__name__ == ("Float8Linear" if include_head else "Linear")
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    assert list(model.state_dict()) == names                     # checkpoints stay plain
    plain.load_state_dict(model.state_dict())
    x = torch.randint(0, 256, (8, 33), generator=torch.Generator().manual_seed(1))
    ref = plain(x[:, :-1], x[:, 1:])
    loss = model(x[:, :-1], x[:, 1:])
    assert loss.item() == pytest.approx(ref.item(), rel=0.02)    # float8 rounding, not a different model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < ref.item() - 1.0


def test_liger_loss_keeps_the_fused_loss_contract(monkeypatch):
    """The wrapper drops padded vocabulary rows and maps ignore_index and softcap; liger's own kernel (CUDA
    only) is compared with the reference in tests/test_gpu.py. Here a stand-in computes what liger documents."""
    seen = {}

    def fake_liger(x, weight, target, ignore_index=-100, softcap=None, accum_dtype=None, label_smoothing=0.0):
        seen.update(rows=weight.shape[0], ignore_index=ignore_index, softcap=softcap, smoothing=label_smoothing)
        logits = x @ weight.t()
        logits = softcap * torch.tanh(logits / softcap) if softcap else logits
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index,
                                                 label_smoothing=label_smoothing)

    functional = SimpleNamespace(liger_fused_linear_cross_entropy=fake_liger)
    for name, mod in (("liger_kernel", SimpleNamespace()), ("liger_kernel.transformers", SimpleNamespace()),
                      ("liger_kernel.transformers.functional", functional)):
        monkeypatch.setitem(sys.modules, name, mod)
    model = tiny_gpt(vocab_size=200, pad_vocab_multiple=64, logit_softcap=15.0)   # 200 real rows of 256
    x = torch.randint(0, 200, (4, 33), generator=torch.Generator().manual_seed(2))
    y = x[:, 1:].clone()
    y[0, :5] = -1                                                # ignored positions
    ref = model(x[:, :-1], y, label_smoothing=0.1)
    liger = GPT(model.config, loss=runtime.model_loss("liger", "cuda"))
    liger.load_state_dict(model.state_dict())
    loss = liger(x[:, :-1], y, label_smoothing=0.1)
    assert seen == dict(rows=200, ignore_index=-1, softcap=15.0, smoothing=0.1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


# ----------------------------------------------------------------------------- README

def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_runs(shared_data, tmp_path):
    """Run the README's quickstart verbatim in a scratch checkout, shortened only by --key=value overrides."""
    cmds = quickstart_commands()
    assert any(c.startswith("pip install") and "torch" in c for c in cmds)
    assert any("pip install -r requirements.txt" in c for c in cmds)
    work = tmp_path / "repo"
    work.mkdir()
    for item in REPO.iterdir():
        if item.suffix == ".py" or item.name == "configs":
            (work / item.name).symlink_to(item)
    (tmp_path / "shared").symlink_to(shared_data.parent)
    extra = {"train.py": ["--max_iters=4", "--eval_interval=4", "--eval_iters=1", "--batch_size=2",
                          "--block_size=32", "--n_layer=1", "--n_embd=32", "--n_head=2", "--log_interval=2"],
             "sample.py": ["--max-new-tokens=8", "--num-samples=1"]}
    ran = []
    for cmd in cmds:
        if cmd.startswith("pip "):
            continue
        argv = shlex.split(cmd)
        assert argv[0] == "python", cmd
        argv = [sys.executable, *argv[1:], *extra.get(argv[1], [])]
        offline = {k: v for k, v in subprocess_env().items() if k != "TIKTOKEN_GPT2_FILE"}  # as written: no env var
        offline.update(TIKTOKEN_CACHE_DIR=str(tmp_path / "empty_cache"))                     # and no tiktoken cache
        proc = subprocess.run(argv, cwd=work, env=offline, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ran.append(argv[1])
    assert ran == ["prepare_data.py", "train.py", "sample.py"]
    assert (work / "out" / "shakespeare_tiny" / "ckpt_0000004.pt").exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_paths_run(char_data, tmp_path, dtype):
    """bf16 autocast, and fp16 autocast + GradScaler (saved in the checkpoint), exercised on CPU."""
    res = train.run(tiny(char_data, tmp_path, dtype=dtype, max_iters=3, eval_interval=3))
    assert math.isfinite(res["val_loss"])
    scaler = load_checkpoint(tmp_path)["scaler"]
    assert bool(scaler) == (dtype == "float16")


def test_downstream_tasks_and_sample_hooks(char_data, shared_data, tmp_path, capsys):
    """tasks_interval: the tasks are scored at evaluations, printed and logged next to the validation loss."""
    train.run(tiny(char_data, tmp_path, max_iters=2, eval_interval=2, tasks="piqa,copa", tasks_interval=2,
                     tasks_limit=4, tasks_dir=shared_data / "evals", sample_tokens=8))
    evals = rows(tmp_path, "eval")
    assert [e["step"] for e in evals] == [0, 2]
    for e in evals:
        assert 0 <= e["piqa_acc"] <= 1 and 0 <= e["copa_acc_norm"] <= 1 and "val_loss" in e
        assert e["tasks_score"] == pytest.approx((e["piqa_centred"] + e["copa_centred"]) / 2)
        assert e["tasks_style"] == "harness"
    out = capsys.readouterr().out
    assert "sample: " in out and "step 2: tasks score" in out and "harness style: piqa" in out


def test_bad_tasks_stop_the_run_at_start_up(char_data, shared_data, tmp_path):
    with pytest.raises(config.ConfigError, match="unknown task 'pica'; known tasks: hellaswag"):
        train.run(tiny(char_data, tmp_path / "a", tasks="pica", tasks_interval=2, eval_interval=2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(config.ConfigError, match="piqa_validation.jsonl is not in --tasks_dir"):
        train.run(tiny(char_data, tmp_path / "b", tasks="piqa", tasks_interval=2, eval_interval=2,
                         tasks_dir=tmp_path / "empty"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written
    with pytest.raises(config.ConfigError, match="hellaswag_interval'; renamed: use --tasks=hellaswag --tasks_interval=N"):
        config.build_config({"hellaswag_interval": 250})


def test_task_errors_name_train_keys_not_evaluate_flags(char_data, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "hub_rows", lambda *a: (_ for _ in ()).throw(ConnectionError("offline")))
    (tmp_path / "evals").mkdir()
    cases = [(tmp_path / "nope", r"--tasks=piqa: --tasks_dir=\S*nope: directory not found"),
             (tmp_path / "evals", r"--tasks=piqa: piqa: piqa_validation\.jsonl is not in --tasks_dir / \$EVALS_DIR "
                                  r".*leave the task out \(e\.g\. --tasks=all,-piqa\)")]
    for tasks_dir, message in cases:
        with pytest.raises(config.ConfigError, match=message) as e:
            train.run(tiny(char_data, tmp_path / "run", tasks="piqa", tasks_interval=2, eval_interval=2,
                             tasks_dir=tasks_dir))
        assert "--data-dir" not in str(e.value) and "--tasks " not in str(e.value)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- torch.compile

def test_compiled_run_matches_eager_and_saves_plain_names(char_data, tmp_path):
    """compile=True: same losses as eager (to float tolerance), eval and sampling run, no `_orig_mod.` keys."""
    over = dict(max_iters=2, eval_interval=2, sample_tokens=4, n_layer=1)
    train.run(tiny(char_data, tmp_path / "eager", **over))
    train.run(tiny(char_data, tmp_path / "compiled", compile=True, **over))
    eager, compiled = rows(tmp_path / "eager"), rows(tmp_path / "compiled")
    assert [r["step"] for r in compiled] == [r["step"] for r in eager]
    for a, b in zip(eager, compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-4)
    assert rows(tmp_path / "compiled", "eval")[-1]["val_loss"] == pytest.approx(
        rows(tmp_path / "eager", "eval")[-1]["val_loss"], rel=1e-4)
    state = weights(resolve_checkpoint(tmp_path / "compiled"))
    assert not [k for k in state if "_orig_mod" in k]
    assert state.keys() == weights(resolve_checkpoint(tmp_path / "eager")).keys()


# ----------------------------------------------------------------------------- never lose a run

def test_second_fresh_run_into_an_out_dir_stops_before_touching_it(char_data, tmp_path):
    train.run(tiny(char_data, tmp_path, max_iters=3, eval_interval=3))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(config.ConfigError, match=r"holds another run \(ckpt_0000003.pt.*--resume.*--out_dir.*"
                                                 r"--overwrite=True"):
        train.run(tiny(char_data, tmp_path, max_iters=2, learning_rate=1.0))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before   # nothing touched


def test_overwrite_moves_the_old_run_aside(char_data, tmp_path):
    train.run(tiny(char_data, tmp_path, max_iters=3, eval_interval=3))
    old_best = (tmp_path / "best.pt").read_bytes()
    train.run(tiny(char_data, tmp_path, max_iters=2, eval_interval=2, overwrite=True))
    (aside,) = tmp_path.glob("replaced_*")
    assert (aside / "best.pt").read_bytes() == old_best and (aside / "ckpt_0000003.pt").exists()
    assert [r["step"] for r in rows(aside)] == [1, 2, 3]                  # the old history, whole
    assert [r["step"] for r in rows(tmp_path)] == [1, 2]                  # the new one, alone
    assert [p.name for p in tmp_path.glob("ckpt_*.pt")] == ["ckpt_0000002.pt"]
    assert resolve_checkpoint(tmp_path).name == "ckpt_0000002.pt"


def test_crash_leftovers_are_cleaned_and_history_stays_single(char_data, tmp_path):
    """A killed save's temp file goes at the next start; after a crash the replayed steps are logged once."""
    train.run(tiny(char_data, tmp_path, max_iters=6, eval_interval=3))       # checkpoints at 3 and 6
    (tmp_path / "ckpt_0000006.pt").unlink()                                   # as if killed before saving 6:
    (tmp_path / ".ckpt_0000006.pt.tmp4242").write_bytes(b"half a checkpoint")  # metrics hold steps 4-6 already
    train.run(tiny(char_data, tmp_path, max_iters=6, eval_interval=3, resume="latest"))
    assert not list(tmp_path.glob(".*.tmp*"))
    steps = [r["step"] for r in rows(tmp_path)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows(tmp_path, "eval")] == [0, 3, 6]


def test_best_pt_is_weights_only(char_data, tmp_path):
    train.run(tiny(char_data, tmp_path, max_iters=3, eval_interval=3, n_embd=64))
    best, full = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "ckpt_0000003.pt")
    assert best["optimizer"] is None and "rng" not in best and "loader" not in best
    assert all(torch.equal(best["model"][k], full["model"][k]) for k in full["model"])
    assert (tmp_path / "best.pt").stat().st_size < 0.5 * (tmp_path / "ckpt_0000003.pt").stat().st_size
    with pytest.raises(config.ConfigError, match="weights only.*resume from a ckpt_"):
        train.run(tiny(char_data, tmp_path / "new", n_embd=64, resume=tmp_path / "best.pt"))


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(char_data, tmp_path, capsys):
    train.run(tiny(char_data, tmp_path, max_iters=6, eval_interval=3))
    (tmp_path / "ckpt_0000006.pt").write_bytes(b"\0" * 100)
    res = train.run(tiny(char_data, tmp_path, max_iters=6, eval_interval=3, resume="latest"))
    err = capsys.readouterr().err
    assert "ckpt_0000006.pt" in err and "resuming from the previous checkpoint" in err and "ckpt_0000003" in err
    assert res["step"] == 6 and load_checkpoint(tmp_path)["step"] == 6


def test_full_disk_says_so_and_keeps_the_previous_checkpoint(char_data, tmp_path, monkeypatch):
    train.run(tiny(char_data, tmp_path, max_iters=3, eval_interval=3))

    def no_space(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", no_space)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(checkpoint.CheckpointError, match="no space left on device while writing .*ckpt_0000006.pt; "
                                                         "the previous checkpoint is intact"):
        train.run(tiny(char_data, tmp_path, max_iters=6, eval_interval=3, resume="latest"))
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path).name == "ckpt_0000003.pt" and load_checkpoint(tmp_path)["step"] == 3
    assert not list(tmp_path.glob(".*.tmp*"))


def test_messages_name_the_problem_and_the_fix(char_data, tmp_path):
    def fails(match, **over):
        with pytest.raises(config.ConfigError, match=match):
            train.run(tiny(char_data, tmp_path / "x", **over))
    fails(r"learning_rate=-1.0 must be > 0", learning_rate=-1)
    if not torch.cuda.is_available():
        fails(r"device=cuda: torch .* use --device=cpu", device="cuda")
    train.run(tiny(char_data, tmp_path / "run", max_iters=3, eval_interval=3))
    with pytest.raises(config.ConfigError, match=r"seed was 1337, now 42.*resume with the settings it was trained"):
        train.run(tiny(char_data, tmp_path / "run", max_iters=6, seed=42, resume="latest"))
    bad = tmp_path / "bad_shards"
    shutil.copytree(char_data, bad)
    train_shard = next(bad.glob("*_train_*.bin"))
    train_shard.write_bytes(train_shard.read_bytes()[:5000])                    # truncated
    with pytest.raises(config.ConfigError, match=r"truncated or corrupt shard\); re-run prepare_data.py") as e:
        train.run(tiny(bad, tmp_path / "y"))
    assert "lower batch_size" not in str(e.value)


def test_nonfinite_before_any_checkpoint_says_so_and_logs_null(char_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train.Trainer, "all_reduce_stats", lambda self, loss, stop: (float("nan"), False))
    with pytest.raises(train.NonFiniteLoss, match="no checkpoint was saved yet") as e:
        train.run(tiny(char_data, tmp_path, max_iters=10, max_nonfinite=3, eval_interval=100))
    assert "is intact" not in str(e.value)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl")) for line in lines)
    assert rows(tmp_path)[0]["loss"] is None


def test_sigterm_between_micro_steps_saves_the_last_completed_step(char_data, tmp_path, monkeypatch):
    """With gradient accumulation a signal is heeded after the current micro-step, not the whole optimizer step
    (schedulers give ~30-120 s); the partial step is dropped, so resuming equals never stopping (dropout on)."""
    common = dict(total_batch_size=4 * 4 * 32, dropout=0.1, lr_schedule="constant", eval_interval=100,
                  max_iters=3)                                             # 4 micro-steps per step
    train.run(tiny(char_data, tmp_path / "ref", **common))
    real_next, calls = datalib.DataLoader.next_batch, []

    def next_batch(self, *a, **k):
        calls.append(1)
        if len(calls) == 6:                                                # step 2, micro-step 2 of 4
            os.kill(os.getpid(), signal.SIGTERM)
        return real_next(self, *a, **k)

    monkeypatch.setattr(datalib.DataLoader, "next_batch", next_batch)
    res = train.run(tiny(char_data, tmp_path / "run", **common))
    assert res["stopped"] == "SIGTERM" and res["step"] == 1 and len(calls) == 6
    assert load_checkpoint(tmp_path / "run")["step"] == 1
    monkeypatch.undo()
    train.run(tiny(char_data, tmp_path / "run", **common, resume="latest"))
    assert [r["loss"] for r in rows(tmp_path / "run")] == [r["loss"] for r in rows(tmp_path / "ref")]


def test_tokenizer_mismatch_and_missing_ranks_are_one_line_errors(char_data, shared_data, tmp_path, monkeypatch):
    """Resuming onto shards of another tokenizer with the same vocabulary size stops; so does a GPT-2 data dir
    whose ranks cannot be found offline, with one short paragraph instead of a network traceback."""
    train.run(tiny(char_data, tmp_path / "run", max_iters=3, eval_interval=3))
    text = (shared_data / "tinyshakespeare.txt").read_text()[-300_000:]   # the same 65 characters, other ids
    other = tokenization.train_sentencepiece([text], vocab_size=128, model_type="char", byte_fallback=False)
    assert other.vocab_size == 65 and other.sha256 != tokenization.load_tokenizer_for(char_data).sha256
    ids = other.encode(text)
    reversed_dir = write_token_dataset(tmp_path / "other", other, ids[:30_000], ids[30_000:], prefix="char")
    with pytest.raises(config.ConfigError, match="token ids mean different things"):
        train.run(tiny(reversed_dir, tmp_path / "run", max_iters=6, resume="latest"))
    spec = {k: v for k, v in tokenization.gpt2_tokenizer().spec().items() if k not in ("ranks_file", "sha256")}  # as of old
    gpt2_dir = write_token_dataset(tmp_path / "gpt2", SimpleNamespace(spec=lambda: spec), [1] * 5000, [1] * 50_000)
    monkeypatch.delenv("TIKTOKEN_GPT2_FILE")
    monkeypatch.setattr(tokenization, "_tiktoken_encoding", tokenization._tiktoken_encoding.__wrapped__)   # no cached result
    monkeypatch.setattr("tiktoken.get_encoding", lambda name: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(config.ConfigError) as e:
        train.run(config.load_config(None, tiny_args(char_data, tmp_path / "g", vocab_size=50257) +
                                       [f"--data_dir={gpt2_dir}"]))
    assert "TIKTOKEN_GPT2_FILE" in str(e.value) and "--tiktoken-file" in str(e.value) and "\n" not in str(e.value)


def test_header_names_both_parameter_counts_and_cpu_mfu_is_against_a_measured_peak(char_data, tmp_path, capsys):
    train.run(tiny(char_data, tmp_path, max_iters=2, eval_interval=2))
    out = capsys.readouterr().out
    assert re.search(r"params [\d,]+ total, [\d,]+ non-embedding", out)
    assert "measured float32 1024^3 matmul rate" in out
    assert all(0 < r["mfu"] < 1 for r in rows(tmp_path))


def test_quickstart_script_runs_and_is_idempotent(shared_data, tmp_path):
    """bash scripts/quickstart.sh in a scratch copy of the repo: prepares, trains, samples; run again it keeps
    the data and the finished run (resume is a no-op) and samples again. (Fresh-venv installs: see the note.)"""
    work = tmp_path / "repo"
    work.mkdir()
    for item in REPO.iterdir():
        if item.suffix in (".py", ".txt") or item.name in ("configs", "scripts"):
            (work / item.name).symlink_to(item)
    env = {**subprocess_env(), "PYTHON": sys.executable, "SHARED_DATA": str(shared_data)}
    env.pop("TIKTOKEN_GPT2_FILE")
    small = ["--max_iters=4", "--eval_interval=4", "--eval_iters=1", "--batch_size=2", "--block_size=32",
             "--n_layer=1", "--n_embd=32", "--n_head=2", "--log_interval=2"]
    outputs = []
    for _ in range(2):
        proc = subprocess.run(["bash", "scripts/quickstart.sh", *small], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outputs.append(proc.stdout)
    assert "wrote" in outputs[0] or (work / "data" / "shakespeare" / "meta.json").exists()
    assert "resumed from" in outputs[1] and "---------------" in outputs[1]        # a sample, both times
    assert [r["step"] for r in rows(work / "out" / "shakespeare_tiny")] == [2, 4]   # one history


def test_out_dir_lock_stops_a_second_run_naming_the_holder_and_dies_with_it(char_data, tmp_path):
    first = subprocess.Popen([sys.executable, "train.py"] + tiny_args(char_data, tmp_path, max_iters=10**6,
                                                                      eval_interval=2), cwd=REPO,
                             env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock, deadline = tmp_path / checkpoint.LOCK_FILE, time.time() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid) and list(tmp_path.glob("ckpt_*"))):
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.1)
        for extra in ([], ["--resume"], ["--overwrite=True"]):
            r = subprocess.run([sys.executable, "train.py"] + tiny_args(char_data, tmp_path) + extra, cwd=REPO,
                               env=subprocess_env(), capture_output=True, text=True, timeout=120)
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            assert f"in use by another run (PID {first.pid})" in r.stderr
        assert not list(tmp_path.glob("replaced_*"))  # the second run touched nothing
        with pytest.raises(checkpoint.RunDirBusy, match=str(first.pid)):
            checkpoint.lock_run_dir(tmp_path)
    finally:
        first.kill()
        first.wait()
    checkpoint.lock_run_dir(tmp_path).close()  # kill -9 left no stale lock
    train.run(tiny(char_data, tmp_path / "next", max_iters=2))  # and an in-process run releases its lock
    checkpoint.lock_run_dir(tmp_path / "next").close()


def test_resume_drops_a_truncated_last_metrics_row_and_names_garbage_by_line(char_data, tmp_path, capsys):
    train.run(tiny(char_data, tmp_path, max_iters=3, eval_interval=3))
    path = tmp_path / "metrics.jsonl"
    good = path.read_text()
    path.write_text(good + '{"type": "train", "step": 4, "lo')  # a crash mid-write
    train.run(tiny(char_data, tmp_path, max_iters=5, eval_interval=3, resume="latest"))
    assert f"{path}:{len(good.splitlines()) + 1}: dropped an incomplete last row" in capsys.readouterr().err
    steps = [r["step"] for r in rows(tmp_path)]
    assert steps == [1, 2, 3, 4, 5]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["garbage"] + lines[2:]) + "\n")
    r = subprocess.run([sys.executable, "train.py"] + tiny_args(char_data, tmp_path, max_iters=6) + ["--resume"],
                       cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{path}:3: not a metrics row" in r.stderr


def test_bench_plot_reads_metrics_the_same_way(tmp_path, capsys):
    import bench
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 2.0}\n{"type": "tr')
    assert [r["step"] for r in bench.read_metrics(tmp_path)] == [1]
    assert "metrics.jsonl:2: dropped an incomplete last row" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('[1]\n{"type": "train", "step": 1, "loss": 2.0}\n')
    with pytest.raises(SystemExit, match=r"metrics.jsonl:1: not a metrics row \(a JSON list"):
        bench.main(["--plot", str(tmp_path), "--out", str(tmp_path / "c.png")])


# ----------------------------------------------------------------------------- small promises (issue 21, item 15)

def test_max_iters_0_evaluates_only_and_a_negative_one_says_what_0_means(char_data, tmp_path):
    res = train.run(tiny(char_data, tmp_path, max_iters=0))
    assert res["step"] == 0 and res["val_loss"] is not None and not list(tmp_path.glob("ckpt_*"))
    assert [r["step"] for r in rows(tmp_path, "eval")] == [0] and rows(tmp_path) == []
    with pytest.raises(config.ConfigError, match=r"max_iters=-1 must be >= 0 \(optimizer steps; 0 = no training: "
                                                 r"evaluate the initial model only\)"):
        tiny(char_data, tmp_path / "x", max_iters=-1)


def test_label_smoothing_1_is_refused(char_data, tmp_path):
    tiny(char_data, tmp_path, label_smoothing=0.999)
    with pytest.raises(config.ConfigError, match=r"label_smoothing=1.0 must be a fraction in \[0, 1\) \(at 1 the "
                                                 r"target is uniform"):
        tiny(char_data, tmp_path, label_smoothing=1.0)


def test_resume_with_overwrite_is_a_conflict_not_silently_ignored(char_data, tmp_path):
    with pytest.raises(config.ConfigError, match=r"resume='latest' and overwrite=True conflict: .*drop one of them"):
        tiny(char_data, tmp_path, resume="latest", overwrite=True)
    with pytest.raises(config.ConfigError, match=r"resume=.* and overwrite=True conflict"):
        config.load_config(None, ["--init_from=resume", "--overwrite=True"])


def test_too_short_shards_name_block_size_not_seq_len(char_data, tmp_path):
    tok = tokenization.load_tokenizer_for(char_data)
    short = write_token_dataset(tmp_path / "short", tok, [1] * 200, [2] * 20, prefix="char")
    with pytest.raises(config.ConfigError, match=r"sequences of 32 tokens \(block_size\) need windows of 33 tokens "
                                                 r"but the longest train shard .* has 20 tokens, so block_size can be "
                                                 r"at most 19; lower batch_size or block_size") as e:
        train.run(tiny(short, tmp_path / "run", eval_iters=0))
    assert "seq_len" not in str(e.value)


def test_resume_onto_data_of_another_vocabulary_does_not_advise_a_new_vocab_size(char_data, shared_data, tmp_path):
    """The checkpoint fixes vocab_size, so --vocab_size=N (the fresh-run advice) would only fail next."""
    train.run(tiny(char_data, tmp_path / "run", max_iters=2, eval_interval=2))
    text = (shared_data / "tinyshakespeare.txt").read_text()[:300_000]
    other = tokenization.train_sentencepiece([text], vocab_size=100, model_type="bpe", byte_fallback=False, num_threads=1)
    ids = other.encode(text)
    other_dir = write_token_dataset(tmp_path / "other", other, ids[:20_000], ids[20_000:], prefix="bpe")
    with pytest.raises(config.ConfigError, match=r"vocab_size=100 \(meta.json\) but the model has vocab_size=65; a "
                                                 r"resumed run keeps its checkpoint's tokenizer, so point --data_dir "
                                                 r"at shards prepared with it") as e:
        train.run(config.load_config(None, tiny_args(char_data, tmp_path / "run", max_iters=4, resume="latest") +
                                       [f"--data_dir={other_dir}"]))
    assert "set --vocab_size" not in str(e.value)
    with pytest.raises(config.ConfigError, match=r"trained with vocab_size=65 \(config says 100\)"):   # the old advice
        train.run(config.load_config(None, tiny_args(char_data, tmp_path / "run", max_iters=4, resume="latest",
                                                       vocab_size=100) + [f"--data_dir={other_dir}"]))


def test_ctrl_c_saves_a_checkpoint_and_exits_130(char_data, tmp_path):
    """An interrupted run is not a finished one: scripts (`set -e`) stop instead of going on to sample."""
    out = tmp_path / "run"
    args = tiny_args(char_data, out, max_iters=100000, lr_schedule="constant", eval_interval=100000)
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "metrics.jsonl").exists() and len(rows(out)) >= 2):
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert "received SIGINT" in output and "stopped by signal" in output and "Traceback" not in output
    assert load_checkpoint(out)["step"] == rows(out)[-1]["step"] >= 2


def stub_python(tmp_path, script: str) -> dict:
    """PYTHON for the scripts: a bash stub that logs each call and runs `script` (a case body on "$1 $2")."""
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{tmp_path}/calls.log"\ncase "$1 $2" in\n{script}\nesac\n')
    stub.chmod(0o755)
    return {**subprocess_env(), "PYTHON": str(stub)}


def test_quickstart_stops_when_training_is_interrupted(tmp_path):
    (tmp_path / "scripts").mkdir()
    for name in ("quickstart.sh", "setup.sh"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)
    env = stub_python(tmp_path, '  "train.py "*) exit 130 ;;\n  *) exit 0 ;;')
    proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    calls = (tmp_path / "calls.log").read_text()
    assert proc.returncode == 130 and "train.py configs/shakespeare_tiny.py" in calls and "sample.py" not in calls


def test_setup_falls_back_to_the_default_index_within_seconds_when_the_torch_index_is_unreachable(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    env = stub_python(tmp_path, f'  "-c import torch") exit 1 ;;\n  "-c "*) exec {sys.executable} "$@" ;;\n'
                                f'  *) exit 0 ;;')
    env["TORCH_INDEX_URL"] = "http://127.0.0.1:9/whl/cpu"          # nothing listens there
    t0 = time.time()
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.time() - t0 < 30 and "127.0.0.1:9/whl/cpu cannot be reached" in proc.stderr
    install = [c for c in (tmp_path / "calls.log").read_text().splitlines() if c.startswith("-m pip install")]
    assert install[0] == "-m pip install --quiet torch>=2.5"        # pip's default index, no --index-url


def test_vocab_size_comes_from_the_data_unless_the_config_sets_it(char_data, tmp_path):
    """As nanoGPT reads meta.pkl: a char or sentencepiece run need not repeat its vocabulary by hand."""
    args = [f"--data_dir={char_data}", f"--out_dir={tmp_path}", "--device=cpu"]
    assert config.load_config(None, args).model.vocab_size == datalib_vocab(char_data) == 65
    assert config.load_config(None, args + ["--vocab_size=128"]).model.vocab_size == 128   # the config wins
    with pytest.raises(config.ConfigError, match="vocab_size=65 \\(meta.json\\) but the model has vocab_size=128"):
        config.check_data(config.load_config(None, args + ["--vocab_size=128"]))
    assert config.load_config(None, [f"--data_dir={tmp_path / 'none'}"]).model.vocab_size == 50257  # GPT-2's
    train.run(config.load_config(None, [a for a in tiny_args(char_data, tmp_path / "run") if "vocab" not in a]))


def datalib_vocab(data_dir) -> int:
    return tokenization.load_tokenizer_for(data_dir).vocab_size


def test_every_eval_row_says_the_wall_time_so_far_and_a_resume_continues_it(char_data, tmp_path, capsys):
    train.run(tiny(char_data, tmp_path, max_iters=4, eval_interval=2))
    evals = rows(tmp_path, "eval")
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert 0 < evals[0]["elapsed_s"] < evals[1]["elapsed_s"] < evals[2]["elapsed_s"]
    assert re.search(r"step 4: val loss [\d.]+ \| [\d.]+ s", capsys.readouterr().out)
    train.run(tiny(char_data, tmp_path, max_iters=6, eval_interval=2, resume="latest"))
    resumed = rows(tmp_path, "eval")
    assert resumed[-1]["step"] == 6 and resumed[-1]["elapsed_s"] > evals[-1]["elapsed_s"]   # the clock goes on


def test_in_training_sample_of_a_char_corpus_without_a_newline(tmp_path):
    """A char tokenizer has no special tokens; without a newline either, the in-training sample still runs."""
    text = "the quick brown fox jumps over the lazy dog " * 400
    tok = tokenization.char_tokenizer([text])
    ids = tok.encode(text)
    data = write_token_dataset(tmp_path / "data", tok, ids[:2000], ids[2000:], prefix="c")
    cfg = config.load_config(None, tiny_args(data, tmp_path / "run", max_iters=2, eval_interval=2, sample_tokens=8))
    assert train.run(cfg)["step"] == 2
