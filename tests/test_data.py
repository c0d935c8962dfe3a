"""Tests for data.py (the loaders, the validation batches) and prepare_data.py (the CLI)."""
import json
import re

import numpy as np
import pytest
import torch

import data
import prepare_data
import token_shards
import tokenization
from scripts import offline_corpus
from test_tokenization import TRICKY


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    return path


def make_docs(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["the", "king", "  spoke", "\n", "hello", "world", "Ä", "☃", "\t", "queen", "!", "\n\n", "1234"]
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 60)))) for _ in range(n)]


def read_split(out, split):
    return np.concatenate([np.asarray(token_shards.read_shard(p)) for p in token_shards.list_shards(out, split)])


def run_cli(*argv):
    return prepare_data.main([str(a) for a in argv] + ["--quiet"])


# ---------------------------------------------------------------------------------------------- CLI

def test_vocab_over_uint16_fails_before_tokenizing(tmp_path, monkeypatch):
    class Big:
        kind, vocab_size, bos_id, eos_id, eot_id = "cl100k", 100_277, None, 100_257, 100_257

        def encode(self, text):
            raise AssertionError("must not tokenize")
    with pytest.raises(ValueError, match=r"'cl100k'.*100,277.*65,536"):
        tokenization.check_vocab_fits(Big())
    monkeypatch.setattr(prepare_data, "make_tokenizer", lambda args, corpus: Big())
    with pytest.raises(SystemExit, match="uint16"):
        run_cli(write_jsonl(tmp_path / "c.jsonl", ["hi"]), "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_round_trip_text_to_shards_to_text(tmp_path):
    docs = make_docs(40) + [TRICKY]
    src = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "out"
    meta = run_cli(src, "--out", out, "--val-tokens", "100", "--shard-size", "300", "--num-proc", "1")
    tok = tokenization.load_tokenizer_for(out)
    val, train = read_split(out, "val"), read_split(out, "train")
    assert val[0] == tok.eot_id and train[0] == tok.eot_id      # val ends on a document boundary
    stream = np.concatenate([val, train])
    texts = tok.decode(stream.tolist()).split("<|endoftext|>")
    assert texts == [""] + docs
    assert meta == token_shards.read_meta(out) and meta["boundary"] == "eot" and meta["num_docs"]["val"] + meta["num_docs"]["train"] == len(docs)
    assert [s["file"] for s in meta["shards"]][:3] == ["data_val_000000.bin", "data_train_000001.bin", "data_train_000002.bin"]
    assert all(s["tokens"] == len(token_shards.read_shard(out / s["file"])) for s in meta["shards"])
    assert all(s["tokens"] == 300 for s in meta["shards"][1:-1]) and len(val) >= 100
    assert not list(out.glob("*.tmp")) and not list(out.glob("_INCOMPLETE*"))


def test_cli_sentencepiece_bos_eos(tmp_path, sp_tok):
    docs = ["To be,  or not\n to be", "that is\n\nthe question", TRICKY]
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    sp_tok.save(tmp_path / "sp.model")
    out = tmp_path / "out"
    meta = run_cli(src, "--out", out, "--tokenizer", "sentencepiece", "--sp-model", tmp_path / "sp.model",
                   "--val-tokens", "0", "--num-proc", "2")
    assert meta["boundary"] == "bos_eos" and (out / "tokenizer.model").is_file()
    expected = sum(([1] + sp_tok.encode(d) + [2] for d in docs), [])
    assert read_split(out, "train").tolist() == expected
    assert tokenization.load_tokenizer_for(out).decode(expected[1:-1][:len(sp_tok.encode(docs[0]))]) == docs[0]


def test_shakespeare_preset_matches_nanogpt_split_and_num_proc(tmp_path, shared_data, shakespeare, gpt2, monkeypatch):
    monkeypatch.setattr(prepare_data, "CHUNK_CHARS", 4_000)     # many tasks, so worker order matters
    monkeypatch.setattr(prepare_data, "BATCH_CHARS", 20_000)
    outs = []
    for num_proc in (1, 2):
        outs.append(tmp_path / f"np{num_proc}")
        run_cli("shakespeare", "--input", shared_data / "tinyshakespeare.txt", "--out", outs[-1],
                "--num-proc", num_proc, "--shard-size", 200_000)
    names = sorted(p.name for p in outs[0].glob("*.bin"))
    assert names == ["shakespeare_train_000001.bin", "shakespeare_train_000002.bin", "shakespeare_val_000000.bin"]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    n = len(shakespeare)
    assert read_split(outs[0], "val").tolist() == gpt2.encode(shakespeare[int(n * 0.9):])
    assert read_split(outs[0], "train").tolist() == gpt2.encode(shakespeare[:int(n * 0.9)])


def test_shakespeare_char_preset_is_nanogpts_shakespeare_char(tmp_path, shared_data, shakespeare):
    """nanoGPT's data/shakespeare_char: chars = sorted(set(data)), train = data[:int(n*0.9)], val the rest."""
    out = tmp_path / "sc"
    meta = run_cli("shakespeare_char", "--input", shared_data / "tinyshakespeare.txt", "--out", out, "--num-proc", 2)
    n = len(shakespeare)
    assert n == 1_115_394 and meta["num_tokens"] == {"train": 1_003_854, "val": 111_540}
    chars = sorted(set(shakespeare))
    stoi = {c: i for i, c in enumerate(chars)}
    assert meta["tokenizer"]["chars"] == chars and meta["tokenizer"]["vocab_size"] == 65 and meta["boundary"] == "none"
    tok = tokenization.load_tokenizer_for(out)
    val, train = read_split(out, "val"), read_split(out, "train")
    assert tok.kind == "char" and tok.decode(val.tolist()) == shakespeare[int(n * 0.9):]
    assert train.tolist() == [stoi[c] for c in shakespeare[:int(n * 0.9)]]
    assert sorted(p.name for p in out.glob("*.bin")) == ["shakespeare_char_train_000001.bin",
                                                        "shakespeare_char_val_000000.bin"]


def test_char_tokenizer_on_any_corpus_and_what_it_refuses(tmp_path, shared_data):
    docs = ["To be,  or not\n to be", "that is\n\nthe question", TRICKY]
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    meta = run_cli(src, "--out", tmp_path / "out", "--tokenizer", "char", "--val-tokens", "0", "--num-proc", 1)
    tok = tokenization.load_tokenizer_for(tmp_path / "out")
    assert meta["boundary"] == "none" and tok.chars == sorted(set("".join(docs)))
    assert tok.decode(read_split(tmp_path / "out", "train").tolist()) == "".join(docs)
    with pytest.raises(SystemExit, match="--boundary eot needs special tokens, which the char tokenizer has none"):
        run_cli("shakespeare_char", "--input", shared_data / "tinyshakespeare.txt", "--out", tmp_path / "o",
                "--boundary", "eot")
    with pytest.raises(SystemExit, match="slices cannot share"):
        run_cli(src, "--out", tmp_path / "o", "--tokenizer", "char", "--num-shards", 2)
    with pytest.raises(SystemExit, match="shakespeare_char preset is a single text"):
        run_cli("shakespeare_char", "--out", tmp_path / "o", "--num-shards", 2)
    assert not (tmp_path / "o").exists()


def test_slices_together_equal_one_full_run(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    docs = make_docs(90, seed=1)
    for i in range(3):
        write_jsonl(src / f"part{i}.jsonl", docs[30 * i:30 * (i + 1)])
    common = ["--val-tokens", 150, "--shard-size", 500, "--num-proc", 1, "--prefix", "c"]
    full = run_cli(src, "--out", tmp_path / "full", *common)
    sliced = tmp_path / "sliced"
    for i in range(2):
        run_cli(src, "--out", sliced, "--num-shards", 2, "--shard-index", i, *common)
    files = sorted(p.name for p in sliced.iterdir())
    assert "c-s000of002_val_000000.bin" in files and "c-s001of002_train_000001.bin" in files
    assert not any(f.startswith("c-s001of002_val") for f in files) and "meta-s001of002.json" in files
    assert np.array_equal(read_split(sliced, "val"), read_split(tmp_path / "full", "val"))
    assert np.array_equal(read_split(sliced, "train"), read_split(tmp_path / "full", "train"))
    merged = token_shards.read_meta(sliced)
    assert merged["num_tokens"] == full["num_tokens"] and merged["num_docs"] == full["num_docs"]
    with pytest.raises(SystemExit, match="already holds"):       # a slice refuses to overwrite its own files
        run_cli(src, "--out", sliced, "--num-shards", 2, "--shard-index", 1, *common)


def test_cli_bad_inputs(tmp_path, shared_data):
    with pytest.raises(SystemExit, match="empty corpus"):
        run_cli(write_jsonl(tmp_path / "empty.jsonl", []), "--out", tmp_path / "o1")
    with pytest.raises(SystemExit, match=r"error: text field 'content' not found; fields found: \['text', 'id'\]"):
        run_cli(write_jsonl(tmp_path / "c.jsonl", ["a b c"]), "--out", tmp_path / "o2", "--text-field", "content")
    out = tmp_path / "o3"
    args = ["shakespeare", "--input", shared_data / "tinyshakespeare.txt", "--out", out, "--num-proc", 1]
    run_cli(*args)
    with pytest.raises(SystemExit, match="--overwrite"):
        run_cli(*args)
    (out / "shakespeare_train_000009.bin").write_bytes(b"")    # a stale shard of this preparation
    run_cli(*args, "--overwrite")
    assert not (out / "shakespeare_train_000009.bin").exists()
    (out / "_INCOMPLETE").write_text("{}")      # what an interrupted run leaves behind
    with pytest.raises(RuntimeError, match="incomplete"):
        token_shards.list_shards(out, "train")
    with pytest.raises(SystemExit, match="unfinished preparation .*--overwrite to redo it"):
        run_cli(*args)
    with pytest.raises(SystemExit, match="no train tokens"):
        run_cli(write_jsonl(tmp_path / "d.jsonl", ["a b c"]), "--out", tmp_path / "o4", "--val-tokens", "1000")


def test_overwrite_replaces_only_the_files_prepare_data_writes(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(20))
    out = tmp_path / "out"
    common = ["--out", out, "--prefix", "c", "--val-tokens", 50, "--num-proc", 1]
    run_cli(src, *common)
    foreign = {"old_train_000001.bin": b"someone else's shard", "train.bin": b"nanoGPT", "notes.txt": b"mine",
               "c_train_000001.bin.bak": b"a backup"}
    for name, content in foreign.items():
        (out / name).write_bytes(content)
    (out / "c_train_000009.bin").write_bytes(b"")          # a stale shard of this preparation: replaced
    meta = run_cli(src, *common, "--overwrite")
    assert all((out / name).read_bytes() == content for name, content in foreign.items())
    assert not (out / "c_train_000009.bin").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([*foreign, "meta.json", *(s["file"] for s in meta["shards"])])


def stop_message(capsys, *argv) -> str:
    """The one-line error of a run that must stop before tokenizing."""
    with pytest.raises(SystemExit) as e:
        run_cli(*argv)
    assert isinstance(e.value.code, str) and "\n" not in e.value.code and "Traceback" not in capsys.readouterr().err
    assert e.value.code.startswith("prepare_data.py: error: ")
    return e.value.code


@pytest.mark.parametrize("case, expected", [
    ("empty", r"empty corpus: .*empty\.txt is empty; give a file with text"),
    ("binary", r"binary\.txt looks binary \(a NUL byte at offset 3\), not text"),
    ("missing", r"input .*missing\.txt not found: give an existing file or directory"),
    ("unsupported", r"notes\.md: unsupported file type '\.md'; prepare_data\.py reads \.txt, \.jsonl"),
    ("out_is_a_file", r"--out .*taken is a file; give a directory"),
    ("out_in_use", r"output directory .*used already holds x\.bin \(and 0 more\); pass --overwrite"),
])
def test_bad_input_is_one_line_naming_the_fix_before_any_work(tmp_path, monkeypatch, capsys, case, expected):
    monkeypatch.setattr(prepare_data, "tokenize_stream", lambda *a, **k: pytest.fail("must not tokenize"))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"PK\x03\x00\x14\x00 zip-like bytes")
    (tmp_path / "notes.md").write_text("# not a corpus kind")
    (tmp_path / "ok.txt").write_text("some text\n")
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.bin").write_bytes(b"")
    src = {"empty": "empty.txt", "binary": "binary.txt", "missing": "missing.txt", "unsupported": "notes.md"}
    out = {"out_is_a_file": "taken", "out_in_use": "used"}.get(case, "out")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert re.search(expected, stop_message(capsys, tmp_path / src.get(case, "ok.txt"), "--out", tmp_path / out))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before      # nothing written


def test_non_utf8_bytes_name_the_file_and_offset_and_encoding_or_errors_read_them(tmp_path, capsys):
    raw = "caf\u00e9 au lait\n".encode("latin-1")                   # é is one byte, 0xe9, at offset 3
    for name in ("latin.txt", "latin.jsonl"):
        path = tmp_path / name
        path.write_bytes(raw if name.endswith(".txt") else b'{"text": "' + raw.strip() + b'"}\n')
        offset = 3 if name.endswith(".txt") else 13
        message = stop_message(capsys, path, "--out", tmp_path / "o", "--val-tokens", 0)
        assert f"{path} is not valid utf-8 text at byte offset {offset}" in message
        assert "--encoding" in message and "--errors replace" in message
        for fix, text in ((["--encoding", "latin-1"], "caf\u00e9 au lait"), (["--errors", "replace"], "caf\ufffd au lait")):
            out = tmp_path / f"{name}{fix[1]}"
            run_cli(path, "--out", out, "--val-tokens", 0, "--num-proc", 1, *fix)
            decoded = tokenization.load_tokenizer_for(out).decode(read_split(out, "train").tolist())
            assert decoded.removeprefix("<|endoftext|>").strip() == text


def test_no_train_tokens_advice_works_and_the_failed_run_does_not_block_the_retry(tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text("To be, or not to be, that is the question.\n")
    out = tmp_path / "out"
    message = stop_message(capsys, one, "--out", out)
    assert "the corpus is one document" in message and "--val-tokens 0" in message and "--sample-by" in message
    assert not out.exists()                                         # no _INCOMPLETE, nothing to --overwrite
    meta = run_cli(one, "--out", out, "--val-tokens", 0)           # the advice, into the same --out
    assert meta["num_tokens"]["train"] > 0
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, ["first document here", "a second one", "the third and last"])
    message = stop_message(capsys, docs, "--out", tmp_path / "o2", "--val-tokens", 1000)
    advised = int(re.search(r"use --val-tokens ([\d,]+) or less", message).group(1).replace(",", ""))
    meta = run_cli(docs, "--out", tmp_path / "o2", "--val-tokens", advised)
    assert meta["num_docs"] == {"val": 2, "train": 1} and meta["num_tokens"]["val"] >= advised


def test_failed_run_removes_what_it_wrote_and_keeps_other_files(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(30))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("kept")

    def crash(*a, **k):
        prepare_data.write_stream.__wrapped__(*a, **k)
        raise OSError(28, "No space left on device")
    crash.__wrapped__ = prepare_data.write_stream
    monkeypatch.setattr(prepare_data, "write_stream", crash)
    with pytest.raises(SystemExit, match="No space left on device"):
        run_cli(src, "--out", out, "--overwrite", "--val-tokens", 50, "--num-proc", 1)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    monkeypatch.undo()
    assert run_cli(src, "--out", out, "--overwrite", "--val-tokens", 50, "--num-proc", 1)["num_tokens"]["train"] > 0


def test_offline_without_gpt2_ranks_is_one_line_naming_the_fix(tmp_path, monkeypatch, capsys):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")
    monkeypatch.delenv("TIKTOKEN_GPT2_FILE", raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    tokenization._tiktoken_encoding.cache_clear()
    try:
        src = write_jsonl(tmp_path / "c.jsonl", ["some text"])
        message = stop_message(capsys, src, "--out", tmp_path / "out")
    finally:
        tokenization._tiktoken_encoding.cache_clear()
    assert "could not load the GPT-2 tokenizer" in message and "TIKTOKEN_GPT2_FILE=" in message
    assert "--tiktoken-file" in message and not (tmp_path / "out").exists()


def test_cli_sentencepiece_vocab_size_promise(tmp_path, shakespeare, capsys):
    """A corpus too small for --vocab-size trains fewer pieces and says which vocab_size to train with;
    a --vocab-size over uint16 stops before reading the corpus."""
    src = tmp_path / "small.txt"
    src.write_text(shakespeare[:20_000], encoding="utf-8")
    common = ["--tokenizer", "sentencepiece", "--val-tokens", 0, "--num-proc", 1]
    meta = run_cli(src, "--out", tmp_path / "o1", "--vocab-size", 8000, *common)
    n = meta["tokenizer"]["vocab_size"]
    assert n < 8000 and tokenization.load_tokenizer_for(tmp_path / "o1").vocab_size == n
    err = capsys.readouterr().err
    assert f"only {n:,} sentencepiece pieces" in err and "--vocab-size 8,000" in err and f"--vocab_size={n} " in err
    with pytest.raises(SystemExit, match=r"--vocab-size 70,000 is over the uint16 shard limit of 65,536"):
        run_cli(src, "--out", tmp_path / "o2", "--vocab-size", 70_000, *common)
    assert not (tmp_path / "o2").exists()


def test_cli_shakespeare_sentencepiece_trains_and_round_trips(tmp_path, shared_data, shakespeare):
    out = tmp_path / "sp"
    meta = run_cli("shakespeare", "--input", shared_data / "tinyshakespeare.txt", "--out", out, "--tokenizer",
                   "sentencepiece", "--vocab-size", 400, "--sp-model-type", "bpe", "--sp-sample-chars", 50_000)
    tok = tokenization.load_tokenizer_for(out)
    assert (out / "tokenizer.model").read_bytes() == tok.proto and meta["tokenizer"]["vocab_size"] == 400
    cut = int(len(shakespeare) * 0.9)
    val, train = read_split(out, "val"), read_split(out, "train")
    assert tok.decode(val.tolist()) == shakespeare[cut:] and tok.decode(train.tolist()) == shakespeare[:cut]
    assert val.tolist() == tok.encode(shakespeare[cut:]) and tok.bos_id not in val   # boundary "none"


def test_offline_corpus_has_a_document_per_paragraph_and_row_with_only_the_gold_ending(tmp_path):
    (tmp_path / "evals").mkdir()
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n")
    hs = {"ind": 1, "ctx": "A man sits down.", "label": 1, "endings": ["He flies.", "He reads.", "He swims."]}
    (tmp_path / "hellaswag_val.jsonl").write_text(json.dumps(hs) + "\n")
    piqa = {"goal": "Open a jar", "sol1": "twist the lid\u2028firmly", "sol2": "x", "label": 0, "tags": ["a b", 3]}
    (tmp_path / "evals" / "piqa_validation.jsonl").write_text(json.dumps(piqa, ensure_ascii=False) + "\n")
    offline_corpus.main([str(tmp_path), str(tmp_path / "corpus.txt")])
    docs = (tmp_path / "corpus.txt").read_text().strip().split("\n\n")
    assert docs == ["First Citizen: Before we proceed.", "All: Speak, speak.", "A man sits down. He reads.",
                    "Open a jar twist the lid firmly a b"]


# ---------------------------------------------------------------------------------------------- loader

@pytest.fixture
def token_dir(tmp_path):
    """Two train shards whose tokens are all distinct, and a val shard."""
    token_shards.write_shard(tmp_path / "t_val_000000.bin", np.arange(50_000, 51_000))
    token_shards.write_shard(tmp_path / "t_train_000001.bin", np.arange(0, 3_000))
    token_shards.write_shard(tmp_path / "t_train_000002.bin", np.arange(10_000, 12_001))
    return tmp_path


def test_loader_ranks_disjoint_and_cover_data(token_dir):
    B, T, W = 4, 16, 2
    loaders = [data.DataLoader(token_dir, "train", B, T, rank=r, world_size=W, seed=0) for r in range(W)]
    seen = [set(), set()]
    covered = set()
    while loaders[0].epoch == 0:
        for r, loader in enumerate(loaders):
            x, y = loader.next_batch()
            assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == __import__("torch").int64
            assert (x[:, 1:] == y[:, :-1]).all() and (y - x == 1).all()   # contiguous windows
            if loader.epoch == 0:
                seen[r].update(x[:, 0].tolist())
                covered.update(x.flatten().tolist())
                covered.update(y.flatten().tolist())
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert len(covered) >= 3_000 + 2_001 - 4 * (T + 1) - 2 * B * W * T   # everything but edges and the last partial step
    assert loaders[0].epoch == loaders[1].epoch == 1


def test_loader_deterministic_reshuffled_and_resumable(token_dir):
    def batches(loader, n, **kw):
        return [loader.next_batch(**kw)[0] for _ in range(n)]
    a = data.DataLoader(token_dir, "train", 4, 16, seed=1)
    first = batches(a, 100)                                  # crosses several epochs
    b = data.DataLoader(token_dir, "train", 4, 16, seed=1)
    assert all((u == v).all() for u, v in zip(first, batches(b, 100)))
    c = data.DataLoader(token_dir, "train", 4, 16, seed=2)
    assert not (c.next_batch()[0] == first[0]).all()
    per_epoch = (3_000 + 2_001) // 16 // 4
    assert not (first[0] == first[per_epoch]).all()          # epoch 1 is ordered differently
    e = data.DataLoader(token_dir, "train", 4, 16, seed=1)
    starts = {0: [], 1: []}
    while e.epoch < 2:
        x = e.next_batch()[0]
        if e.epoch < 2:
            starts[e.epoch] += x[:, 0].tolist()
    phases = [{(v % 10_000) % 16 + 100 * (v >= 10_000) for v in starts[ep]} for ep in (0, 1)]
    assert len(set(starts[0])) == len(starts[0]) and len(phases[0]) == 2 and phases[0] != phases[1]  # new offsets
    # resume mid-run, including across an epoch boundary
    a = data.DataLoader(token_dir, "train", 4, 16, seed=1)
    batches(a, per_epoch - 3)
    state = json.loads(json.dumps(a.state_dict()))
    expected = batches(a, 10)
    r = data.DataLoader(token_dir, "train", 4, 16, seed=1)
    r.load_state_dict(state)
    assert all((u == v).all() for u, v in zip(expected, batches(r, 10))) and r.epoch == a.epoch
    # sequence-length warmup: a shorter seq_len gives the prefix of the same windows
    r.load_state_dict(state)
    short = batches(r, 10, seq_len=5)
    assert all(s.shape == (4, 5) and (s == e[:, :5]).all() for s, e in zip(short, expected))


def test_loader_errors(token_dir):
    with pytest.raises(ValueError, match="longest train shard .* has 3000 tokens"):
        data.DataLoader(token_dir, "train", 1, 5_000)
    loader = data.DataLoader(token_dir, "train", 2, 16)
    with pytest.raises(ValueError, match="seq_len 32"):
        loader.next_batch(seq_len=32)
    other = data.DataLoader(token_dir, "train", 2, 8)
    with pytest.raises(ValueError, match="seq_len"):
        loader.load_state_dict(other.state_dict())
    (token_dir / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train shards"):
        data.DataLoader(token_dir / "empty", "train", 2, 8)


def test_val_batches_fixed_and_disjoint(token_dir):
    one, counted = data.val_batches(token_dir, 4, 16, num_batches=3)
    two, _ = data.val_batches(token_dir, 4, 16, num_batches=3)
    assert len(one) == counted == 3 and all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(one, two))
    every, _ = data.val_batches(token_dir, 4, 16, num_batches=1000)   # more than exist: the whole split once
    assert len(every) == (1_000 - 1) // 16 // 4
    with pytest.warns(UserWarning, match="one batch of 3"):     # val smaller than one batch: a smaller batch
        small, counted = data.val_batches(token_dir, 64, 300, num_batches=5)
    assert counted == 1 and small[0][0].shape == (3, 300) and small[0][0][0, 0] == 50_000
    with pytest.raises(ValueError, match="no window of 1001 tokens"):
        data.val_batches(token_dir, 4, 1000, num_batches=5)


@pytest.mark.parametrize("num_batches, world_size", [(6, 2), (5, 2), (7, 3), (1, 2)])
def test_val_batches_of_the_ranks_together_are_the_one_rank_batches(token_dir, num_batches, world_size):
    """eval_iters counts batches in total: each rank gets disjoint ones and together they are the 1-rank list;
    every rank runs the same number of batches (FSDP), the padding ones not counted."""
    single, _ = data.val_batches(token_dir, 4, 16, num_batches=num_batches)
    shares = [data.val_batches(token_dir, 4, 16, num_batches, rank=r, world_size=world_size)
              for r in range(world_size)]
    assert len({len(batches) for batches, _ in shares}) == 1 and sum(c for _, c in shares) == num_batches
    counted = [x for batches, c in shares for x, _ in batches[:c]]
    key = lambda x: tuple(x[:, 0].tolist())  # noqa: E731
    assert sorted(map(key, counted)) == sorted(key(x) for x, _ in single)


# ---------------------------------------------------------------------------------------------- BOS-aligned loader

BOS = 0


@pytest.fixture
def doc_dir(tmp_path):
    """Three train shards of documents [BOS, distinct tokens...] (a few longer than a row), cut at arbitrary
    points so documents cross shard ends, after a 5-token fragment that belongs to no document."""
    rng = np.random.default_rng(0)
    toks, nxt = list(range(1, 6)), 6
    for _ in range(600):
        n = int(rng.integers(1, 120)) if rng.random() < 0.1 else int(rng.integers(1, 25))
        toks += [BOS] + list(range(nxt, nxt + n))
        nxt += n
    stream = np.array(toks)
    bos_at = np.flatnonzero(stream == BOS)
    inside = [int(p) + 2 for p, q in zip(bos_at, bos_at[1:]) if 4 < q - p < 20]   # cuts inside short documents
    cuts = [0, inside[len(inside) // 3], inside[2 * len(inside) // 3], len(stream)]
    for i in range(3):
        token_shards.write_shard(tmp_path / f"d_train_{i + 1:06d}.bin", stream[cuts[i]:cuts[i + 1]])
    return tmp_path, stream, cuts


def reference_rows(stream, cuts, T, buffer_size, seed, n_rows):
    """Slow, obvious packing: per epoch shards in rng([seed, epoch]) order, each shard's documents (by where their
    BOS is) in rng([seed, epoch, shard, 1]) order; per row the longest buffered document that fits (ties: the later
    start), else the shortest (ties: the earlier start) cropped. Rows of (start, tokens used, doc length, epoch)."""
    bos_at = [p for p in range(len(stream)) if stream[p] == BOS]
    doc_len = {p: (bos_at[i + 1] if i + 1 < len(bos_at) else len(stream)) - p for i, p in enumerate(bos_at)}

    def docs():
        for epoch in range(10**6):
            for s in np.random.default_rng([seed, epoch]).permutation(len(cuts) - 1):
                mine = [p for p in bos_at if cuts[s] <= p < cuts[s + 1]]
                for i in np.random.default_rng([seed, epoch, s, 1]).permutation(len(mine)):
                    yield (doc_len[mine[i]], mine[i], epoch)
    stream_of_docs, buffer, rows, cropped = docs(), [], [], 0
    for _ in range(n_rows):
        room, row = T + 1, []
        while room:
            while len(buffer) < buffer_size:
                buffer.append(next(stream_of_docs))
            fits = [d for d in buffer if d[0] <= room]
            d = max(fits, key=lambda d: (d[0], d[1])) if fits else min(buffer, key=lambda d: (d[0], d[1]))
            buffer.remove(d)
            cropped += max(0, d[0] - room)
            row.append((d[1], min(d[0], room), d[0], d[2]))
            room -= min(d[0], room)
        rows.append(row)
    return rows, cropped


def full_rows(x, y):
    """The (B, T+1) rows a batch was cut from."""
    return torch.cat([x[:, :1], y], dim=1).numpy()


def test_bos_loader_matches_the_reference_packing(doc_dir):
    path, stream, cuts = doc_dir
    B, T, buf = 4, 32, 16
    loader = data.BOSLoader(path, B, T, bos_id=BOS, seed=3, buffer_size=buf)
    got = np.concatenate([full_rows(*loader.next_batch()) for _ in range(60)])      # crosses epochs
    ref, cropped = reference_rows(stream, cuts, T, buf, 3, len(got))
    assert loader.epoch >= 1 and loader.cropped == cropped > 0 and loader.used == len(got) * (T + 1)
    stats = loader.stats()
    assert loader.epoch <= stats.pop("epoch") <= loader.epoch + 1                 # passes over the data so far
    assert stats == {"cropped_tokens": cropped, "cropped_frac": cropped / (cropped + len(got) * (T + 1))}
    for row, segs in zip(got, ref):
        assert np.array_equal(row, np.concatenate([stream[a:a + n] for a, n, _, _ in segs]))
    # what the packing promises, checked on the reference rows (each a row the loader returned)
    seen = [s for segs in ref for s in segs if s[3] == 0 and all(t[3] == 0 for t in segs)]
    assert len({s[0] for s in seen}) == len(seen)                      # a document at most once per epoch
    for segs in ref:
        assert all(stream[a] == BOS for a, _, _, _ in segs) and sum(n for _, n, _, _ in segs) == T + 1
        assert all(n == full for _, n, full, _ in segs[:-1])           # only the last segment may be cropped
    assert not {1, 2, 3, 4, 5} & set(got.ravel().tolist())              # the fragment before the first BOS
    crossing = [a for segs in ref for a, n, _, _ in segs if any(a < c < a + n for c in cuts[1:-1])]
    assert crossing                                                     # documents read across a shard end


def test_bos_loader_rows_start_at_documents_on_every_rank(doc_dir):
    path, stream, _ = doc_dir
    index = {int(v): i for i, v in enumerate(stream) if v != BOS}
    loaders = [data.BOSLoader(path, 3, 24, BOS, rank=r, world_size=2, seed=5, buffer_size=8) for r in (0, 1)]
    single = data.BOSLoader(path, 6, 24, BOS, seed=5, buffer_size=8)
    starts = [set(), set()]
    while loaders[0].epoch == 0:
        batches = [full_rows(*ld.next_batch()) for ld in loaders]
        assert np.array_equal(np.concatenate(batches), full_rows(*single.next_batch()))   # one global stream
        for r, rows in enumerate(batches):
            for row in rows:
                assert row[0] == BOS
                cut = np.flatnonzero(row == BOS).tolist() + [len(row)]
                for k, (a, b) in enumerate(zip(cut, cut[1:])):
                    seg = row[a:b]
                    if len(seg) == 1:
                        assert b == len(row)                            # a lone BOS: a crop at the row's end
                        continue
                    p = index[int(seg[1])] - 1
                    assert np.array_equal(stream[p:p + len(seg)], seg)  # one contiguous span of one document
                    whole = p + len(seg) == len(stream) or stream[p + len(seg)] == BOS
                    assert whole or b == len(row)                       # cropped only at the row's end
                    if loaders[0].epoch == 0:                           # no epoch-1 document taken yet
                        starts[r].add(p)
    assert starts[0] and starts[1] and not starts[0] & starts[1]        # ranks never share a document


def test_bos_loader_deterministic_resumable_and_checked(doc_dir, tmp_path):
    path, _, _ = doc_dir

    def batches(loader, n, **kw):
        return [full_rows(*loader.next_batch(**kw)) for _ in range(n)]
    a = data.BOSLoader(path, 4, 16, BOS, seed=1, buffer_size=32)
    first = batches(a, 5)
    assert all(np.array_equal(u, v) for u, v in zip(first, batches(data.BOSLoader(path, 4, 16, BOS, seed=1,
                                                                                   buffer_size=32), 5)))
    assert not np.array_equal(first[0], batches(data.BOSLoader(path, 4, 16, BOS, seed=2), 1)[0])
    for skip in (7, 150):                                              # mid-epoch, and past an epoch boundary
        a = data.BOSLoader(path, 4, 16, BOS, seed=1, buffer_size=32)
        batches(a, skip)
        state = json.loads(json.dumps(a.state_dict()))
        expected = batches(a, 20)
        r = data.BOSLoader(path, 4, 16, BOS, seed=1, buffer_size=32)
        r.load_state_dict(state)
        assert all(np.array_equal(u, v) for u, v in zip(expected, batches(r, 20)))
        assert (r.epoch, r.cropped, r.used) == (a.epoch, a.cropped, a.used)
    r.load_state_dict(state)                                           # sequence-length warmup: row prefixes
    assert all(np.array_equal(s, e[:, :6]) for s, e in zip(batches(r, 20, seq_len=5), expected))
    with pytest.raises(ValueError, match="buffer_size was 32, now 8"):
        data.BOSLoader(path, 4, 16, BOS, seed=1, buffer_size=8).load_state_dict(state)
    with pytest.raises(ValueError, match="loader state is from loader=bos_aligned, this run uses loader=random"):
        data.DataLoader(path, "train", 4, 16, seed=1).load_state_dict(state)
    (tmp_path / "plain").mkdir()
    token_shards.write_shard(tmp_path / "plain" / "p_train_000001.bin", np.arange(8, 500))
    with pytest.raises(ValueError, match="no document-start token 7"):
        data.BOSLoader(tmp_path / "plain", 4, 16, bos_id=7)


# ---------------------------------------------------------------------------------------------- the loaders' contract

def one_of_each(path) -> list:
    """A loader of each kind over the same shards and seed."""
    return [data.DataLoader(path, "train", 4, 16, seed=1),
            data.BOSLoader(path, 4, 16, BOS, seed=1, buffer_size=32)]


def test_both_loaders_keep_the_one_contract(doc_dir):
    """Each is a data.Loader: its state is plain JSON and resumes to the same next batches, a state of the other kind
    is refused, and stats() counts the passes over the data."""
    path = doc_dir[0]
    for a, b, other in zip(one_of_each(path), one_of_each(path), one_of_each(path)[::-1]):
        assert isinstance(a, data.Loader) and a.kind != other.kind
        for _ in range(3):
            a.next_batch()
        state = json.loads(json.dumps(a.state_dict()))
        expected = [a.next_batch(seq_len=t) for t in (16, 5, 16)]
        b.load_state_dict(state)
        assert all(torch.equal(x, u) and torch.equal(y, v)
                   for (x, y), (u, v) in zip(expected, [b.next_batch(seq_len=t) for t in (16, 5, 16)]))
        assert b.state_dict() == a.state_dict()
        with pytest.raises(ValueError, match=f"state is from loader={a.kind}, this run uses loader={other.kind}"):
            other.load_state_dict(state)
        passes = [a.stats()["epoch"]]
        while a.epoch == 0:
            a.next_batch()
            passes.append(a.stats()["epoch"])
        assert 0 < passes[0] < 1 <= passes[-1] < 1.1 and passes == sorted(passes)
