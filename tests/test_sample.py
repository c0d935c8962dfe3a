"""sample.py: greedy/top-k/top-p/seed behaviour, tokenizer round trip, streaming, bad input."""
import dataclasses
import math
import io
import re

import pytest
import torch

import runtime
import sample as smp
from load import load_model
from model import GPT, GPTConfig

PROMPT = "ROMEO:"



def save_ckpt(out_dir, model, tokenizer_spec, step=10):
    """A checkpoint in the contract format (only the keys readers need, plus the usual extras)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ckpt_{step:07d}.pt"
    torch.save({"format": 1, "model_config": dataclasses.asdict(model.config), "model": model.state_dict(),
                "tokenizer": tokenizer_spec, "config": {}, "step": step, "val_loss": None}, path)
    return path


def tiny_gpt(vocab_size, block_size=32, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32))


@pytest.fixture(scope="module")
def sp_tokenizer(shared_data):
    """A 512-piece sentencepiece BPE (byte fallback) trained on the first 100 kB of tinyshakespeare."""
    import tokenization
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:100_000]
    return tokenization.train_sentencepiece([text], vocab_size=512, model_type="bpe", num_threads=1)


@pytest.fixture(scope="module")
def sp_run(sp_tokenizer, tmp_path_factory):
    """Run directory with one sentencepiece checkpoint (the tokenizer travels inside it)."""
    out = tmp_path_factory.mktemp("run_sp")
    save_ckpt(out, tiny_gpt(sp_tokenizer.vocab_size), sp_tokenizer.spec())
    return out


@pytest.fixture(scope="module")
def gpt2_run(gpt2_tiktoken_file, tmp_path_factory):
    import tokenization
    tok = tokenization.gpt2_tokenizer(str(gpt2_tiktoken_file))
    out = tmp_path_factory.mktemp("run_gpt2")
    save_ckpt(out, tiny_gpt(tok.vocab_size, block_size=64), tok.spec())
    return out


def run(args):
    """sample.py's main() on args; returns (samples, stdout text)."""
    out = io.StringIO()
    samples = smp.main([str(a) for a in args], out=out)
    return samples, out.getvalue()


# --- decoding rules ----------------------------------------------------------------------------


def manual_greedy(model, ids, n):
    """Step-by-step argmax over a full forward each step (no cache)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-model.config.block_size:]]))
            ids.append(int(logits[0, -1].argmax()))
    return ids


def test_greedy_deterministic_and_equals_stepwise_argmax(sp_run):
    args = ["--ckpt", sp_run, "--prompt", PROMPT, "--greedy", "--max-new-tokens", 40, "--num-samples", 2]
    samples, text = run(args)
    nocache, _ = run(args + ["--no-cache"])
    model, tok = load_model(sp_run, tokenizer="required")
    want = manual_greedy(model, samples[0].prompt_ids, 40)  # 40 > block_size 32: the window slides
    assert samples[0].prompt_ids + samples[0].new_ids == want
    assert samples[1].new_ids == samples[0].new_ids == nocache[0].new_ids
    assert text.count(samples[0].text) == 2


def test_top_k_1_equals_greedy(sp_run):
    greedy, _ = run(["--ckpt", sp_run, "--prompt", PROMPT, "--greedy", "--max-new-tokens", 20])
    topk1, _ = run(["--ckpt", sp_run, "--prompt", PROMPT, "--top-k", 1, "--temperature", 1.5,
                    "--max-new-tokens", 20, "--seed", 3])
    assert topk1[0].new_ids == greedy[0].new_ids


def test_top_p_keeps_smallest_set_reaching_p():
    """probs [0.5, 0.3, 0.15, 0.05]: p=0.4 -> {0}; p=0.75 -> {0, 1} (0.5 < 0.75 <= 0.8);
    p=0.9 -> {0, 1, 2}; p=1 -> all. Row 2 is the same distribution in reverse order."""
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    logits = probs.log().repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    for p, keep in [(0.4, {0}), (0.75, {0, 1}), (0.9, {0, 1, 2}), (1.0, {0, 1, 2, 3})]:
        draws = smp.pick_token(logits, temperature=1.0, top_p=p, generator=g).view(-1, 2)
        assert set(draws[:, 0].tolist()) == keep
        assert set(draws[:, 1].tolist()) == {3 - i for i in keep}
    draws = smp.pick_token(logits, top_p=0.75, generator=g).view(-1, 2)[:, 0].float()
    assert (draws == 0).float().mean().item() == pytest.approx(0.5 / 0.8, abs=0.05)  # renormalised


def test_seed_reproduces_samples(sp_run):
    args = ["--ckpt", sp_run, "--prompt", PROMPT, "--max-new-tokens", 30, "--top-p", 0.95, "--num-samples", 2]
    a, text_a = run(args + ["--seed", 7])
    b, text_b = run(args + ["--seed", 7])
    c, _ = run(args + ["--seed", 8])
    assert text_a == text_b and [s.new_ids for s in a] == [s.new_ids for s in b]
    assert a[0].new_ids != a[1].new_ids  # samples differ from each other...
    assert [s.new_ids for s in c] != [s.new_ids for s in a]  # ...and across seeds


def test_sentencepiece_checkpoint_decodes_to_text(sp_run, sp_tokenizer):
    samples, text = run(["--ckpt", sp_run, "--prompt", PROMPT, "--max-new-tokens", 30, "--seed", 1])
    s = samples[0]
    assert s.text.startswith(PROMPT) and len(s.text) > len(PROMPT)
    assert s.text == sp_tokenizer.decode(s.prompt_ids + s.new_ids)
    assert "\u2581" not in s.text  # sentencepiece word-boundary marks became spaces
    assert text == s.text + "\n---------------\n"


# --- streaming and stopping ----------------------------------------------------------------------


def test_stream_decoder_holds_back_partial_utf8(gpt2_tiktoken_file):
    import tokenization
    tok = tokenization.gpt2_tokenizer(str(gpt2_tiktoken_file))
    text = "naïve café 😀 über 日本"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode(ids[:i]) for i in range(1, len(ids)))  # some cut splits a char
    dec = smp.StreamDecoder(tok, [])
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stream_output_equals_non_stream(gpt2_run):
    args = ["--ckpt", gpt2_run, "--prompt", "Hello", "--max-new-tokens", 24, "--seed", 5]
    streamed, text_s = run(args + ["--stream"])
    plain, text_p = run(args)
    assert streamed[0].new_ids == plain[0].new_ids
    assert text_s == text_p == plain[0].text + "\n---------------\n"


class ScriptedModel(torch.nn.Module):
    """Stands in for GPT: its next-token logits pick a fixed token sequence, one after the prompt's last token."""

    def __init__(self, tokens, block_size=16, vocab_size=50257):
        super().__init__()
        self.tokens, self.prompt_len = tokens, None
        self.config = GPTConfig(block_size=block_size, vocab_size=vocab_size)

    def forward(self, idx):
        self.prompt_len = self.prompt_len or idx.size(1)
        logits = torch.full((idx.size(0), idx.size(1), self.config.vocab_size), float("-inf"))
        logits[:, -1, self.tokens[idx.size(1) - self.prompt_len]] = 0.0
        return logits


@pytest.mark.parametrize("stream", [False, True])
def test_stop_at_eot(gpt2_tiktoken_file, stream):
    import tokenization
    tok = tokenization.gpt2_tokenizer(str(gpt2_tiktoken_file))
    hello, world = tok.encode("Hello")[0], tok.encode(" world")[0]
    model = ScriptedModel([hello, world, tok.eot_id, hello])
    out = io.StringIO()
    cfg = smp.SampleConfig(max_new_tokens=4, decoding=smp.Decoding(use_cache=False), stop_at_eot=True, stream=stream)
    (s,) = smp.generate_samples(model, tok, smp.Prompt([tok.eot_id]), cfg, out=out)
    assert s.new_ids == [hello, world] and s.text.endswith("Hello world")
    (s,) = smp.generate_samples(model, tok, smp.Prompt([tok.eot_id]), dataclasses.replace(cfg, stop_at_eot=False))
    assert s.new_ids == [hello, world, tok.eot_id, hello]


# --- prompts -------------------------------------------------------------------------------------


def test_long_prompt_truncated_from_left(sp_run, capsys):
    long_prompt = "First Citizen: we are accounted poor citizens. " * 20
    samples = smp.main(["--ckpt", str(sp_run), "--prompt", long_prompt, "--max-new-tokens", "5"],
                       out=io.StringIO())
    assert len(samples[0].prompt_ids) == 32 and len(samples[0].new_ids) == 5
    assert "dropped the first" in capsys.readouterr().err


def test_prompt_sources(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("from a file")
    assert smp.read_prompt("arg", None) == "arg"
    assert smp.read_prompt(None, str(f)) == "from a file"
    assert smp.read_prompt(None, None, io.StringIO("piped")) == "piped"


def test_empty_prompt_starts_from_bos(sp_run, sp_tokenizer):
    samples, _ = run(["--ckpt", sp_run, "--prompt", "", "--max-new-tokens", 3])
    s = samples[0]
    assert s.prompt_ids == [sp_tokenizer.bos_id]
    assert s.text == sp_tokenizer.decode(s.new_ids)  # the start token is not shown


def test_verbose_reports_tokens_per_second(sp_run, capsys):
    smp.main(["--ckpt", str(sp_run), "--prompt", PROMPT, "--max-new-tokens", "5", "--verbose"],
             out=io.StringIO())
    assert "tokens/s" in capsys.readouterr().err


# --- bad input -----------------------------------------------------------------------------------


def test_missing_or_unreadable_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        run(["--ckpt", tmp_path / "nowhere", "--prompt", "x"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no ckpt_"):
        run(["--ckpt", tmp_path / "empty", "--prompt", "x"])
    bad = tmp_path / "ckpt_0000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        run(["--ckpt", bad, "--prompt", "x"])


@pytest.mark.parametrize("p", ["0", "-0.1", "1.5", "nan"])
def test_top_p_out_of_range(sp_run, p, capsys):
    with pytest.raises(SystemExit) as e:
        run(["--ckpt", sp_run, "--top-p", p])
    assert e.value.code == 2 and "(0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="top_p"):
        smp.validate(smp.SampleConfig(decoding=smp.Decoding(top_p=float(p))))


def test_autocast_dtype_follows_trains_auto_rule():
    """One rule for 'auto' (runtime.resolve_dtype): no autocast on CPU unless asked; explicit choices kept."""
    assert runtime.autocast_dtype("cpu", None) is None
    assert runtime.autocast_dtype("cpu", "float32") is None
    assert runtime.autocast_dtype("cpu", "bfloat16") is torch.bfloat16
    assert runtime.autocast_dtype("cpu", "float16") is torch.float16


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_decodes_in_bf16_where_the_cpu_has_it(sp_run, capsys, monkeypatch, native_bf16):
    """Decoding reads every weight once per token: on CPUs with native bf16 the weights are cast (half the bytes);
    elsewhere float32. --dtype float32 keeps float32; threads default to at most 4."""
    monkeypatch.setattr(runtime, "cpu_has_bf16_dot", lambda: native_bf16)
    torch.set_num_threads(1)
    samples, _ = run(["--ckpt", sp_run, "--prompt", PROMPT, "--max-new-tokens", 6, "--verbose", "--device", "cpu"])
    err = capsys.readouterr().err
    assert f"dtype {'bfloat16' if native_bf16 else 'float32'}, 1 threads" in err and len(samples[0].new_ids) == 6
    run(["--ckpt", sp_run, "--prompt", PROMPT, "--max-new-tokens", 2, "--verbose", "--dtype", "float32",
         "--threads", "1"])
    assert "dtype float32" in capsys.readouterr().err
    assert runtime.decode_threads(None) == min(torch.get_num_threads(), 4) and runtime.decode_threads(3) == 3


# --- --init-from an export directory ----------------------------------------------------------


@pytest.fixture
def offline_no_ranks(monkeypatch):
    """No GPT-2 ranks anywhere: no TIKTOKEN_GPT2_FILE, no cached encoding, no download."""
    import tokenization
    monkeypatch.delenv("TIKTOKEN_GPT2_FILE", raising=False)
    monkeypatch.setattr(tokenization, "_tiktoken_encoding", tokenization._tiktoken_encoding.__wrapped__)
    monkeypatch.setattr("tiktoken.get_encoding", lambda name: (_ for _ in ()).throw(ConnectionError("offline")))


def test_init_from_an_export_uses_its_own_tokenizer_files(gpt2_tiktoken_file, sp_tokenizer, shared_data, tmp_path,
                                                          capsys, offline_no_ranks):
    """sample.py / evaluate.py --init-from DIR read the export's vocab.json or tokenizer.model: the same ids as
    the tokenizer it was exported with, offline and without a tiktoken ranks file."""
    import tokenization
    import evaluate
    import export_hf
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000] + " caf\u00e9 \u2603\n\n\t 1234"
    gpt2 = tokenization.GPT2Tokenizer(tokenization._tiktoken_encoding(str(gpt2_tiktoken_file)), str(gpt2_tiktoken_file))
    for name, tok in (("gpt2", gpt2), ("sp", sp_tokenizer)):
        export_hf.export(tiny_gpt(tok.vocab_size, block_size=64), tmp_path / name, tokenizer=tok,
                         tiktoken_file=str(gpt2_tiktoken_file))
        model, loaded = load_model(tmp_path / name, tokenizer="required")
        assert loaded.kind == tok.kind and loaded.sha256 == tok.sha256
        assert loaded.encode(text) == tok.encode(text) and loaded.decode(tok.encode(text)) == text
        samples, _ = run(["--init-from", tmp_path / name, "--prompt", PROMPT, "--greedy", "--max-new-tokens", 4])
        assert samples[0].prompt_ids == tok.encode(PROMPT)
    evaluate.main(["--init-from", str(tmp_path / "gpt2"), "--tasks", "copa", "--limit", "2", "--quiet",
                   "--data-dir", str(shared_data / "evals")])
    assert re.search(r"^copa +2 ", capsys.readouterr().out, re.M)


def test_sharded_run_directory_points_to_consolidate_not_a_missing_best_pt(tmp_path):
    """An FSDP run writes ckpt_N/ directories and no best.pt: the error gives the command that makes one file."""
    for step in (2, 4):
        (tmp_path / f"ckpt_{step:07d}").mkdir()
        (tmp_path / f"ckpt_{step:07d}" / "COMPLETE").write_text(f"step {step}\n")
    for where in (tmp_path, tmp_path / "ckpt_0000004"):
        with pytest.raises(SystemExit, match=r"holds sharded \(FSDP\) checkpoints only; .*`python parallel.py "
                                             r"consolidate .*ckpt_0000004 .*ckpt_0000004.pt`") as e:
            run(["--ckpt", where, "--prompt", "x"])
        assert "best.pt" not in str(e.value)


# --- nanoGPT's character data end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def char_run(shared_data, tmp_path_factory):
    """prepare_data.py shakespeare_char, then a 2-step train.py run on it (its in-training sample starts at a
    newline: the char tokenizer has no special tokens)."""
    import config
    import prepare_data
    import train
    from test_train import tiny_args
    root = tmp_path_factory.mktemp("shakespeare_char")
    prepare_data.main(["shakespeare_char", "--input", str(shared_data / "tinyshakespeare.txt"),
                       "--out", str(root / "data"), "--num-proc", "1", "--quiet"])
    train.run(config.load_config(None, tiny_args(root / "data", root / "out", max_iters=2, eval_interval=2,
                                                 sample_tokens=8)))
    return root


def test_char_run_samples_and_scores(char_run, shakespeare, tmp_path, capsys):
    import perplexity
    chars = set(shakespeare)
    samples, _ = run(["--ckpt", char_run / "out", "--prompt", "", "--max-new-tokens", 20, "--device", "cpu"])
    model, tok = load_model(char_run / "out")
    assert tok.kind == "char" and samples[0].prompt_ids == tok.encode("\n")          # nanoGPT's start
    assert len(samples[0].new_ids) == 20 and samples[0].text == tok.decode(samples[0].new_ids)
    assert set(samples[0].text) <= chars
    samples, _ = run(["--ckpt", char_run / "out", "--prompt", PROMPT, "--max-new-tokens", 5, "--device", "cpu"])
    assert samples[0].prompt_ids == tok.encode(PROMPT) and samples[0].text.startswith(PROMPT)
    with pytest.raises(SystemExit, match=r"character '7' \(U\+0037, at offset 6\) is not one of"):
        run(["--ckpt", char_run / "out", "--prompt", "ROMEO 7", "--device", "cpu"])
    shards = perplexity.main([str(char_run / "out"), "--data", str(char_run / "data"), "--ctx", "32", "--stride",
                              "32", "--max-tokens", "3000", "--quiet", "--device", "cpu"])
    text = tmp_path / "val.txt"
    text.write_text(shakespeare[int(len(shakespeare) * 0.9):][:3000])             # the val shard's first 3000
    texts = perplexity.main([str(char_run / "out"), "--data", str(text), "--ctx", "32", "--stride", "32",
                             "--quiet", "--device", "cpu"])
    for r in shards + texts:                          # char: one byte per scored (ASCII) character
        assert r.tokens == r.bytes == 2999 and math.isfinite(r.loss) and r.loss < math.log(65) + 0.5
    assert texts[0].loss == pytest.approx(shards[0].loss, rel=1e-5)        # the same tokens, the same windows
