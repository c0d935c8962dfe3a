"""Tests for token_shards.py: the llm.c shard format, atomic writes, meta.json (untrusted input), documents."""
import json
import os
import struct

import numpy as np
import pytest

import config
import token_shards
import tokenization


def test_shard_header_bytes_exactly_llmc(tmp_path):
    path = tmp_path / "x_train_000001.bin"
    token_shards.write_shard(path, np.array([0, 1, 50256, 65535]))
    raw = path.read_bytes()
    assert len(raw) == 1024 + 8
    assert raw[:12] == struct.pack("<iii", 20240520, 1, 4) and raw[12:1024] == bytes(1012)
    assert raw[1024:] == struct.pack("<4H", 0, 1, 50256, 65535)
    assert token_shards.read_shard(path).tolist() == [0, 1, 50256, 65535]
    assert not list(tmp_path.glob("*.tmp"))


def test_reader_accepts_npy_and_nanogpt_bin(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)
    np.save(tmp_path / "edufineweb_train_000001.npy", tokens)
    tokens.tofile(tmp_path / "train.bin")
    assert np.array_equal(token_shards.read_shard(tmp_path / "edufineweb_train_000001.npy"), tokens)
    assert np.array_equal(token_shards.read_shard(tmp_path / "train.bin"), tokens)
    assert token_shards.list_shards(tmp_path, "train") == [tmp_path / "edufineweb_train_000001.npy"]
    (tmp_path / "edufineweb_train_000001.npy").unlink()
    assert token_shards.list_shards(tmp_path, "train") == [tmp_path / "train.bin"]


def test_bad_shards_name_file_and_sizes(tmp_path):
    good = tmp_path / "a_train_000001.bin"
    token_shards.write_shard(good, np.arange(10))
    raw = good.read_bytes()
    (tmp_path / "trunc_train_000001.bin").write_bytes(raw[:-2])
    with pytest.raises(token_shards.ShardFormatError, match=r"trunc_train_000001\.bin.*expected size 1044 bytes, actual size 1042"):
        token_shards.read_shard(tmp_path / "trunc_train_000001.bin")
    (tmp_path / "magic_train_000001.bin").write_bytes(struct.pack("<i", 123) + raw[4:])
    with pytest.raises(token_shards.ShardFormatError, match=r"magic_train_000001\.bin: bad magic 123 \(expected 20240520\)"):
        token_shards.read_shard(tmp_path / "magic_train_000001.bin")
    (tmp_path / "ver_train_000001.bin").write_bytes(raw[:4] + struct.pack("<i", 7) + raw[8:])
    with pytest.raises(token_shards.ShardFormatError, match=r"ver_train_000001\.bin: unsupported shard version 7"):
        token_shards.read_shard(tmp_path / "ver_train_000001.bin")
    (tmp_path / "tiny_val_000000.bin").write_bytes(b"abc")
    with pytest.raises(token_shards.ShardFormatError, match=r"tiny_val_000000\.bin.*at least 1024.*actual size 3"):
        token_shards.read_shard(tmp_path / "tiny_val_000000.bin")
    (tmp_path / "val.bin").write_bytes(b"abc")
    with pytest.raises(token_shards.ShardFormatError, match=r"val\.bin.*actual size 3"):
        token_shards.read_shard(tmp_path / "val.bin")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*_):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        token_shards.write_shard(tmp_path / "a_train_000001.bin", np.arange(10))
    assert not (tmp_path / "a_train_000001.bin").exists()


def test_document_start_id_follows_the_boundary(tmp_path, sp_tok, gpt2):
    for boundary, tok, want in (("eot", gpt2, 50256), ("bos_eos", sp_tok, 1), ("none", gpt2, None)):
        (tmp_path / "meta.json").write_text(json.dumps({"boundary": boundary}))
        assert token_shards.document_start_id(tmp_path, tok) == want
    (tmp_path / "meta.json").unlink()
    assert token_shards.document_start_id(tmp_path, gpt2) == 50256             # llm.c's shards: <|endoftext|> first
    token_shards.write_shard(tmp_path / "x_train_000001.bin", np.arange(100))
    with pytest.raises(config.ConfigError, match=r"^loader=bos_aligned needs documents marked .* no token 50256 is "
                                                 r"in them; re-run prepare_data.py with --boundary eot"):
        config.check_documents(tmp_path, gpt2)
    (tmp_path / "meta.json").write_text(json.dumps({"boundary": "none"}))
    with pytest.raises(config.ConfigError, match="meta.json says boundary=none"):
        config.check_documents(tmp_path, gpt2)
    with pytest.raises(config.ConfigError, match="boundary=none; the char tokenizer has no token to mark them "
                                                 r"\(like nanoGPT's char data\): use --loader=random$"):
        config.check_documents(tmp_path, tokenization.char_tokenizer(["abc\n"]))


# ---------------------------------------------------------------------------------------------- untrusted meta.json

def edit_meta(d, edit):
    meta = json.loads((d / "meta.json").read_text())
    edit(meta)
    (d / "meta.json").write_text(json.dumps(meta))


def test_meta_shard_paths_stay_inside_data_dir(tmp_path, sp_tok):
    """meta.json names shards; a path outside its directory ('..', absolute) is refused before it is read."""
    from conftest import write_token_dataset
    d = write_token_dataset(tmp_path / "d", sp_tok, [1] * 2000, [2] * 20_000)
    token_shards.write_shard(tmp_path / "outside_train_000001.bin", np.arange(100))         # a valid shard, elsewhere
    cfg = config.load_config(None, [f"--data_dir={d}", f"--vocab_size={sp_tok.vocab_size}"])
    for name in ("../outside_train_000001.bin", str(tmp_path / "outside_train_000001.bin"), "/etc/passwd"):
        edit_meta(d, lambda m: m["shards"][1].update(file=name))
        with pytest.raises(token_shards.MetaError, match=r"shards\[1\].file .* is not a file inside .*nothing was read"):
            token_shards.list_shards(d, "train")
        with pytest.raises(config.ConfigError, match="re-run prepare_data.py") as e:
            config.check_data(cfg)
        assert "remove the file" not in str(e.value) and "\n" not in str(e.value)
    edit_meta(d, lambda m: (m["shards"][1].update(file=token_shards.shard_name("t", "train", 1)),
                            m["tokenizer"].update(model_proto_b64=None, model_file="../tokenizer.model")))
    (tmp_path / "tokenizer.model").write_bytes(sp_tok.proto)
    with pytest.raises(token_shards.MetaError, match="tokenizer model_file '../tokenizer.model' is not a file inside"):
        tokenization.load_tokenizer_for(d)


@pytest.mark.parametrize("field, value, match", [
    ("vocab_size", "65", r"tokenizer.vocab_size='65' must be an integer in \[1, 65,536\]"),
    ("vocab_size", 10**9, r"tokenizer.vocab_size=1000000000 must be an integer in \[1, 65,536\]"),
    ("eos_id", 70_000, r"tokenizer.eos_id=70000 must be a token id below vocab_size"),
    ("num_tokens", {"train": -5}, r"num_tokens=\{'train': -5\} must map each split to an integer >= 0"),
    ("tokens", 1.5, r"shards\[0\].tokens=1.5 must be an integer >= 0"),
    ("split", "test", r"shards\[0\].split='test' must be 'train' or 'val'"),
])
def test_meta_counts_and_vocab_size_are_checked(tmp_path, sp_tok, field, value, match):
    from conftest import write_token_dataset
    d = write_token_dataset(tmp_path / "d", sp_tok, [1] * 2000, [2] * 20_000)
    edit_meta(d, lambda m: (m["tokenizer"] if field in ("vocab_size", "eos_id") else
                            m["shards"][0] if field in ("tokens", "split") else m).update({field: value}))
    with pytest.raises(token_shards.MetaError, match=match + r".*; re-run prepare_data.py --out"):
        token_shards.read_meta(d)


def test_meta_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / "meta.json").write_text('{"shards": [')
    with pytest.raises(token_shards.MetaError, match=r"meta.json is not valid JSON \(Expecting value: line 1"):
        token_shards.list_shards(tmp_path, "train")
