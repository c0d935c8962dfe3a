"""Tests for tokenization.py: GPT-2, sentencepiece and char tokenizers, their specs, the tokenizer of a shard
directory."""
import json
import os

import numpy as np
import pytest

import config
import token_shards
import tokenization

TRICKY = "First Citizen:\n\n  Before   we proceed\tany further,\n hear me speak.  \n\n\nÄ ü ☃ done\n"


def test_gpt2_known_ids_from_offline_ranks_file(gpt2_tiktoken_file):
    tok = tokenization.gpt2_tokenizer(gpt2_tiktoken_file)
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.encode("<|endoftext|>") != [50256]          # special tokens never parsed from text
    assert (tok.vocab_size, tok.eot_id, tok.eos_id, tok.bos_id) == (50257, 50256, 50256, None)
    assert os.environ["TIKTOKEN_GPT2_FILE"]                # conftest: the env lookup path works too
    assert tokenization.gpt2_tokenizer().encode("Hello world") == [15496, 995]
    assert tok.decode(tok.encode(TRICKY)) == TRICKY
    assert tok.encode_batch(["Hello world", " the"]) == [[15496, 995], [262]]
    assert list(tok.encode_np("Hello world")) == [15496, 995]


def test_split_text_keeps_gpt2_tokens(gpt2, shakespeare):
    text = shakespeare[:200_000]
    pieces = tokenization.split_text(text, 2_000)
    assert len(pieces) > 20 and "".join(pieces) == text
    assert sum((gpt2.encode(p) for p in pieces), []) == gpt2.encode(text)


def test_sentencepiece_round_trip_exact(sp_tok, shakespeare, tmp_path):
    assert sp_tok.decode(sp_tok.encode(TRICKY)) == TRICKY
    assert sp_tok.decode(sp_tok.encode(shakespeare)) == shakespeare
    nl = sp_tok.encode("\n")
    assert len(nl) == 1 and sp_tok.decode(nl) == "\n"       # the model can write a newline
    assert (sp_tok.bos_id, sp_tok.eos_id, sp_tok.eot_id) == (1, 2, 2) and sp_tok.vocab_size == 512
    assert sp_tok.splittable
    pieces = tokenization.split_text(shakespeare[:100_000], 2_000)
    assert sum((sp_tok.encode(p) for p in pieces), []) == sp_tok.encode(shakespeare[:100_000])
    # spec() is self-contained; the .model file loads the same model
    again = tokenization.tokenizer_from_spec(json.loads(json.dumps(sp_tok.spec())))
    assert again.encode(TRICKY) == sp_tok.encode(TRICKY)
    sp_tok.save(tmp_path / "tokenizer.model")
    assert tokenization.load_sentencepiece(tmp_path / "tokenizer.model").encode(TRICKY) == sp_tok.encode(TRICKY)


def test_sentencepiece_char_model(shakespeare):
    tok = tokenization.train_sentencepiece([shakespeare[:50_000]], vocab_size=400, model_type="char")
    assert tok.vocab_size < 400                            # a char model only has the characters it saw
    assert tok.decode(tok.encode(TRICKY)) == TRICKY        # byte fallback covers the tab, Ä, ☃
    assert all(len(tok.decode([i])) == 1 for i in tok.encode("First Citizen:\n"))


def nanogpt_char_ids(text: str) -> tuple[list[str], list[int]]:
    """nanoGPT's data/shakespeare_char/prepare.py scheme, written out: chars = sorted(list(set(data))), stoi."""
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    return chars, [stoi[c] for c in text]


def test_char_ids_equal_nanogpts_scheme_and_round_trip():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n  \tÄ☃\n"
    chars, ids = nanogpt_char_ids(text)
    tok = tokenization.char_tokenizer([text])
    assert tok.chars == chars and tok.vocab_size == len(chars) and tok.encode(text) == ids
    assert tok.decode(ids) == text and tok.encode_batch([text[:5], ""]) == [ids[:5], []]
    assert (tok.kind, tok.bos_id, tok.eos_id, tok.eot_id, tok.splittable) == ("char", None, None, None, True)
    assert tokenization.char_tokenizer([text[:30], text[30:]]).chars == chars      # the set of all the texts
    with pytest.raises(ValueError, match=r"character '7' \(U\+0037, at offset 4\) is not one of the char "
                                         r"tokenizer's \d+ characters"):
        tok.encode("Spea7k")
    with pytest.raises(ValueError, match=r"token id -1 is not one of the char tokenizer's ids 0\.\.\d+"):
        tok.decode([0, -1])
    with pytest.raises(ValueError, match="corpus is empty"):
        tokenization.char_tokenizer(["", ""])


def test_char_spec_round_trips_and_names_its_tokenizer(shakespeare, sp_tok):
    tok = tokenization.char_tokenizer([shakespeare])
    spec = json.loads(json.dumps(tok.spec()))                     # as meta.json and checkpoints hold it
    assert spec["chars"] == sorted(set(shakespeare)) and spec["vocab_size"] == 65 and spec["kind"] == "char"
    again = tokenization.tokenizer_from_spec(spec)
    assert again.encode(shakespeare[:1000]) == tok.encode(shakespeare[:1000]) and again.sha256 == tok.sha256
    tokenization.check_same_tokenizer(spec, again.spec(), "the checkpoint", "the data")
    no_digest = {k: v for k, v in spec.items() if k != "sha256"}
    assert tokenization.tokenizer_identity(no_digest) == tokenization.tokenizer_identity(spec) == f"char:{tok.sha256}"
    other = tokenization.char_tokenizer([shakespeare[:1000]]).spec()       # fewer characters: other ids
    for b in (other, sp_tok.spec()):
        with pytest.raises(ValueError, match="token ids mean different things"):
            tokenization.check_same_tokenizer(spec, b, "the checkpoint", "the data")


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(chars=s["chars"][:-1] + ["a"]), r"tokenizer.chars\[64\]='a' appears twice"),
    (lambda s: s.update(chars=s["chars"][:-1] + ["ab"]), r"tokenizer.chars\[64\]='ab' must be a single character"),
    (lambda s: s.update(chars="abc"), r"tokenizer.chars='abc' must be a list of single characters"),
    (lambda s: s.update(chars=[]), r"len\(tokenizer.chars\)=0 must be in \[1, 65,536\]"),
    (lambda s: s.update(sha256="0" * 64), r"tokenizer.sha256='0+' is not the sha256 of its chars \(a2b8d0124693"),
    (lambda s: s.update(vocab_size=64), r"tokenizer.vocab_size=64 must be the number of chars \(65\)"),
])
def test_bad_char_spec_in_meta_json_is_one_line(tmp_path, shakespeare, edit, match):
    from conftest import write_token_dataset
    tok = tokenization.char_tokenizer([shakespeare])
    d = write_token_dataset(tmp_path / "d", tok, tok.encode(shakespeare[:2000]), tok.encode(shakespeare[2000:20_000]))
    meta = json.loads((d / "meta.json").read_text())
    spec = json.loads(json.dumps(meta["tokenizer"]))
    edit(meta["tokenizer"])
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(token_shards.MetaError, match=match + r".*; re-run prepare_data.py --out"):
        tokenization.load_tokenizer_for(d)
    cfg = config.load_config(None, [f"--data_dir={d}", "--vocab_size=65", "--device=cpu"])
    with pytest.raises(config.ConfigError, match=match) as e:
        config.check_data(cfg)
    assert "\n" not in str(e.value)
    edit(spec)                                                  # a checkpoint's spec is checked the same way
    with pytest.raises(ValueError, match="bad char tokenizer spec: " + match):
        tokenization.tokenizer_from_spec(spec)


# ---------------------------------------------------------------------------------------------- the tokenizer of a shard directory

def test_shards_without_meta_json_are_gpt2_only_when_nothing_says_otherwise(char_data, tmp_path):
    import shutil
    d = tmp_path / "sp"
    shutil.copytree(char_data, d)
    spec = json.loads((d / "meta.json").read_text())["tokenizer"]
    (d / "meta.json").unlink()
    with pytest.warns(UserWarning, match="assuming the GPT-2"):  # nothing contradicts GPT-2: the old assumption
        assert tokenization.load_tokenizer_for(d).kind == "gpt2"
    (d / "tokenizer.model").write_bytes(tokenization.tokenizer_from_spec(spec).proto)
    with pytest.raises(ValueError, match=r'no meta.json, and .*tokenizer.model beside the shards says they are not '
                                         r'GPT-2 tokens; write .*meta.json containing \{"tokenizer"'):
        tokenization.load_tokenizer_for(d)
    cfg = config.load_config(None, [f"--data_dir={d}", "--vocab_size=50257", "--device=cpu"])
    with pytest.raises(config.ConfigError, match="tokenizer.model beside the shards"):
        config.check_data(cfg)
    advice = '{"tokenizer": {"kind": "sentencepiece", "model_file": "tokenizer.model"}}'
    (d / "meta.json").write_text(advice)  # the advice, followed word for word, works
    assert tokenization.load_tokenizer_for(d).sha256 == spec["sha256"] and token_shards.list_shards(d, "train")
    (d / "meta.json").unlink()
    (d / "tokenizer.model").unlink()
    token_shards.write_shard(d / "x_val_000000.bin", np.array([60000, 1], dtype=np.uint16))
    for p in d.glob("char_val_*"):
        p.unlink()
    with pytest.raises(ValueError, match="token id 60000, past GPT-2's 50257"):
        tokenization.load_tokenizer_for(d)


def test_recorded_ranks_file_is_checked_before_it_is_parsed(tmp_path, gpt2, monkeypatch):
    """A ranks_file recorded in meta.json or a checkpoint is read only if its bytes have the recorded sha256."""
    import tiktoken.load
    monkeypatch.delenv("TIKTOKEN_GPT2_FILE", raising=False)
    parsed = []
    real = tiktoken.load.load_tiktoken_bpe
    monkeypatch.setattr(tiktoken.load, "load_tiktoken_bpe", lambda path, *a, **k: parsed.append(path) or real(path))
    monkeypatch.setattr(tokenization, "_tiktoken_encoding", tokenization._tiktoken_encoding.__wrapped__)   # no cached result
    secret = tmp_path / "secret.txt"
    secret.write_text("password hunter2\n")
    for spec in ({**gpt2.spec(), "ranks_file": str(secret)},                             # as meta.json records it
                 {k: v for k, v in gpt2.spec().items() if k != "sha256"} | {"ranks_file": str(secret)}):  # older
        with pytest.raises(ValueError, match=r"ranks file .*secret.txt named in the tokenizer spec has sha256 "
                                             r"\w+, not the recorded sha256 306cd27f03c1, so it was not read") as e:
            tokenization.tokenizer_from_spec(spec)
        assert "hunter2" not in str(e.value) and parsed == []
    assert tokenization.tokenizer_from_spec(gpt2.spec()).encode("Hello world") == [15496, 995]   # the real file: read


def test_a_meta_json_without_a_tokenizer_is_a_one_line_error(tmp_path):
    token_shards.write_shard(tmp_path / "t_val_000000.bin", np.array([1, 2, 3], dtype=np.uint16))
    (tmp_path / "meta.json").write_text(json.dumps({"format": 1, "shards": [{"file": "t_val_000000.bin",
                                                                              "split": "val"}]}))
    with pytest.raises(ValueError, match="records no tokenizer; re-run prepare_data.py --out"):
        tokenization.load_tokenizer_for(tmp_path)
