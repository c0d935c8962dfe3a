"""perplexity.py: sliding windows score every token once; equals the training loop's val loss; bpb by hand."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import config
import perplexity
import token_shards
import tokenization
import train
from checkpoint import load_checkpoint
from evaluate import Scoring
from load import load_model
from model import GPT, GPTConfig

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish? Ünïcödé — ça va.\n") * 3



@pytest.fixture(scope="module")
def gpt2_tok(gpt2_tiktoken_file):
    return tokenization.gpt2_tokenizer(str(gpt2_tiktoken_file))


def tiny_model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(block_size=32, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.mark.parametrize("n,ctx,stride", [(2, 8, 4), (9, 8, 8), (10, 8, 8), (100, 8, 3), (100, 16, 16),
                                          (101, 16, 16), (57, 64, 32), (1000, 7, 1)])
def test_window_plan_scores_every_target_once(n, ctx, stride):
    starts, first, length = perplexity.window_plan(n, ctx, stride)
    scored = np.zeros(n, dtype=int)
    for s, f in zip(starts, first):
        assert 0 <= s and s + length <= n - 1
        targets = s + 1 + np.arange(f, length)
        scored[targets] += 1
        if s > 0:
            assert f >= min(ctx, n - 1) - stride, "later windows keep ctx - stride tokens of context"
    assert scored[0] == 0 and (scored[1:] == 1).all()


def write_dir(path, tokens_val, tokens_train, spec):
    path.mkdir(parents=True, exist_ok=True)
    token_shards.write_shard(path / "t_val_000000.bin", np.asarray(tokens_val, dtype=np.uint16))
    token_shards.write_shard(path / "t_train_000001.bin", np.asarray(tokens_train, dtype=np.uint16))
    meta = {"format": 1, "prefix": "t", "tokenizer": spec,
            "shards": [{"file": "t_val_000000.bin", "split": "val", "tokens": len(tokens_val)},
                       {"file": "t_train_000001.bin", "split": "train", "tokens": len(tokens_train)}]}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_equals_training_loop_val_loss(tmp_path, shared_data, gpt2_tok):
    """ctx = block_size, stride = ctx on the whole val shard == the val loss train.py logged."""
    ids = gpt2_tok.encode((shared_data / "tinyshakespeare.txt").read_text()[:40_000])
    T, B, eval_iters = 32, 4, 4
    n_val = B * eval_iters * T + 1                       # exactly 16 non-overlapping windows
    data_dir = write_dir(tmp_path / "data", ids[:n_val], ids[n_val:], gpt2_tok.spec())
    cfg = config.load_config(None, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'run'}", "--device=cpu",
                                   f"--block_size={T}", "--n_layer=2", "--n_head=2", "--n_embd=32",
                                   f"--batch_size={B}", "--total_batch_size=0", "--max_iters=3",
                                   "--warmup_iters=1", "--learning_rate=1e-3", "--eval_interval=3",
                                   f"--eval_iters={eval_iters}", "--sample_tokens=0", "--log_interval=1"])
    train.run(cfg)
    model, _ = load_model(tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run")
    (res,) = perplexity.measure(model, gpt2_tok, data_dir, perplexity.Sweep((T,), stride=T))
    assert res.tokens == n_val - 1
    assert res.loss == pytest.approx(ckpt["val_loss"], rel=1e-5)
    # the same number straight from model forward on the same non-overlapping windows
    x = torch.tensor(ids[:n_val - 1]).view(-1, T)
    y = torch.tensor(ids[1:n_val]).view(-1, T)
    with torch.no_grad():
        loss = model(x, y)
    assert res.loss == pytest.approx(loss.item(), rel=1e-5)
    assert res.ppl == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_bits_per_byte_by_hand(tmp_path, gpt2_tok):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    model = tiny_model(block_size=256, pos_emb="rope")
    ids = [gpt2_tok.eot_id] + gpt2_tok.encode(TEXT)
    assert len(ids) <= 256
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))
    nll = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="sum").item()
    (res,) = perplexity.measure(model, gpt2_tok, path, perplexity.Sweep((256,)))
    assert res.tokens == len(ids) - 1 and res.bytes == len(TEXT.encode("utf-8"))
    assert res.loss == pytest.approx(nll / (len(ids) - 1), rel=1e-5)
    assert res.bpb == pytest.approx(nll / math.log(2) / len(TEXT.encode("utf-8")), rel=1e-5)


def naive_sliding(model, ids, ctx, stride):
    """Reference: one window at a time, per-token bookkeeping in Python."""
    total, done = 0.0, 0                                # done = last target index scored
    n = len(ids)
    start = 0
    while done < n - 1:
        end = min(start + ctx, n - 1)
        start = end - min(ctx, n - 1)
        with torch.no_grad():
            logits = model(torch.tensor([ids[start:end]]))
        for j in range(end - start):
            t = start + j + 1
            if t > done:
                total -= torch.log_softmax(logits[0, j], -1)[ids[t]].item()
        done = end
        start += stride
    return total


@pytest.mark.parametrize("ctx,stride", [(16, 8), (16, 5), (24, 24)])
def test_sliding_window_matches_naive_loop(ctx, stride, gpt2_tok):
    model = tiny_model(block_size=32)
    ids = [gpt2_tok.eot_id] + gpt2_tok.encode(TEXT)[:90]
    nll, count = perplexity.sliding_nll(model, torch.tensor(ids), ctx, stride, Scoring(token_budget=40))
    assert count == len(ids) - 1
    assert nll == pytest.approx(naive_sliding(model, ids, ctx, stride), rel=1e-5)


@pytest.mark.parametrize("pos_emb", ["alibi", "rope"])
def test_extrapolating_positions_go_past_block_size(pos_emb, tmp_path, gpt2_tok):
    path = tmp_path / "t.txt"
    path.write_text(TEXT * 2)
    model = tiny_model(block_size=16, pos_emb=pos_emb)
    res = perplexity.measure(model, gpt2_tok, path, perplexity.Sweep((16, 64, 128)))
    assert [r.ctx for r in res] == [16, 64, 128]
    assert all(math.isfinite(r.loss) and r.bpb > 0 for r in res)
    learned = perplexity.measure(tiny_model(block_size=16), gpt2_tok, path, perplexity.Sweep((16, 64)))
    assert [r.ctx for r in learned] == [16]             # learned positions stop at block_size


def test_cli_compares_checkpoints(tmp_path, gpt2_tok, capsys):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    for name, pos in (("a", "learned"), ("b", "alibi")):
        model = tiny_model(pos_emb=pos)
        torch.save({"format": 1, "model_config": __import__("dataclasses").asdict(model.config),
                    "model": model.state_dict(), "tokenizer": gpt2_tok.spec()}, tmp_path / f"{name}.pt")
    out = tmp_path / "r.json"
    res = perplexity.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--data", str(path),
                           "--ctx", "16,32", "--stride", "8", "--json", str(out)])
    assert len(res) == 4 and len(json.loads(out.read_text())) == 4
    assert "bpb" in capsys.readouterr().out


def save_tiny(path, tok, **kw):
    model = tiny_model(**kw)
    torch.save({"format": 1, "model_config": __import__("dataclasses").asdict(model.config),
                "model": model.state_dict(), "tokenizer": tok.spec()}, path)
    return path


def test_cli_default_ctx_is_each_block_size(tmp_path, gpt2_tok, capsys):
    """No --ctx: each checkpoint is scored at its own block_size; the progress bar stays on stderr."""
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    a = save_tiny(tmp_path / "a.pt", gpt2_tok, block_size=32)
    b = save_tiny(tmp_path / "b.pt", gpt2_tok, block_size=16, pos_emb="rope")
    res = perplexity.main([str(a), str(b), "--data", str(path)])
    assert [r.ctx for r in res] == [32, 16]
    out, err = capsys.readouterr()
    assert "win" in err and "win" not in out and out.count("\n") == 3          # header + 2 rows
    perplexity.main([str(a), "--data", str(path), "--quiet"])
    assert capsys.readouterr().err == ""


def test_cli_every_ctx_skipped_is_an_error(tmp_path, gpt2_tok, capsys):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    a = save_tiny(tmp_path / "a.pt", gpt2_tok, block_size=32)
    with pytest.raises(SystemExit, match=r"error: nothing to score.*block_size \(32\).*--ctx 32 or less") as e:
        perplexity.main([str(a), "--data", str(path), "--ctx", "64,128", "--quiet"])
    assert isinstance(e.value.code, str) and "\n" not in e.value.code     # one line, exit status 1
    assert "checkpoint" not in capsys.readouterr().out                      # no empty table


def test_tokenizer_identity_not_just_vocab_size_must_match(tmp_path, shared_data):
    """A unigram checkpoint scoring BPE shards of the same vocabulary size is an error, not a wrong number."""
    text = (shared_data / "tinyshakespeare.txt").read_text()[:60_000]
    uni = tokenization.train_sentencepiece([text], vocab_size=512, model_type="unigram")
    bpe = tokenization.train_sentencepiece([text], vocab_size=512, model_type="bpe")
    assert uni.vocab_size == bpe.vocab_size
    ids = bpe.encode(text)
    shards = write_dir(tmp_path / "bpe", ids[:5000], ids[5000:], bpe.spec())
    ckpt = save_tiny(tmp_path / "uni.pt", uni, vocab_size=uni.vocab_size)
    with pytest.raises(SystemExit, match="token ids mean different things"):
        perplexity.main([str(ckpt), "--data", str(shards), "--quiet"])
    perplexity.main([str(save_tiny(tmp_path / "bpe.pt", bpe, vocab_size=bpe.vocab_size)), "--data", str(shards),
                     "--quiet"])                                            # the right tokenizer scores
