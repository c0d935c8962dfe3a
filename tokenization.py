"""Tokenizers: GPT-2 BPE through tiktoken, sentencepiece and nanoGPT's characters, their specs (what meta.json and
checkpoints record) and the checks that two specs name the same tokenizer.

Shared by prepare_data.py (trains / loads one, tokenizes), train.py and config.py (the shards' tokenizer),
sample.py, evaluate.py, perplexity.py and export_hf.py. Heavy optional imports (tiktoken, sentencepiece)
happen inside the functions that need them, so importing this module is cheap.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from token_shards import (MAX_VOCAB, META_FILE, atomic_write_bytes, char_spec_problem, chars_sha256, inside,
                          list_shards, read_meta, read_shard)

SP_MODEL_FILE = "tokenizer.model"
GPT2_EOT = 50256
GPT2_VOCAB = 50257
# sha256 of the GPT-2 BPE ranks in the .tiktoken format (GPT2Tokenizer.sha256; tiktoken's r50k_base hash)
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
MAX_RANKS_BYTES = 16 << 20          # the GPT-2 ranks file is 0.8 MB: a recorded file far larger is not one
# GPT-2's pre-tokenizer regex (tiktoken's r50k_pat_str), used if tiktoken_ext is unavailable.
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# A newline between two non-space characters is a hard token boundary for GPT-2 and for the
# sentencepiece models trained here, so long texts can be cut there and encoded in parallel.
_SAFE_SPLIT = re.compile(r"(?<=\S)\n(?=\S)")


class Tokenizer(Protocol):
    """What every tokenizer offers (GPT2Tokenizer, SentencePieceTokenizer, CharTokenizer)."""

    kind: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None

    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...
    def decode(self, ids: list[int]) -> str: ...
    def spec(self) -> dict: ...


class GPT2Tokenizer:
    """GPT-2 BPE through tiktoken. encode() never adds or recognises special tokens."""

    kind = "gpt2"
    vocab_size = GPT2_VOCAB
    bos_id = None
    eos_id = GPT2_EOT
    eot_id = GPT2_EOT
    splittable = True   # cutting text at _SAFE_SPLIT points does not change the tokens

    def __init__(self, encoding, tiktoken_file: str | None = None):
        self.enc = encoding
        self.tiktoken_file = tiktoken_file

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(list(texts))

    def encode_np(self, text: str) -> np.ndarray:
        """Like encode() but returns a numpy array without building a Python list."""
        return self.enc.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])

    @property
    def ranks(self) -> dict[bytes, int]:
        """The BPE merge ranks (token bytes -> id), e.g. for writing HF vocab.json / merges.txt."""
        return self.enc._mergeable_ranks

    @functools.cached_property
    def sha256(self) -> str:
        return ranks_sha256(self.ranks)

    def spec(self) -> dict:
        """ranks_file: where the ranks were read (later scripts find them there offline); sha256: their identity."""
        return {"kind": "gpt2", "name": "gpt2", "vocab_size": self.vocab_size, "bos_id": self.bos_id,
                "eos_id": self.eos_id, "eot_id": self.eot_id, "ranks_file": self.tiktoken_file,
                "sha256": self.sha256}


def ranks_sha256(ranks: dict[bytes, int]) -> str:
    """Hash of BPE ranks in the .tiktoken file format (base64 token, rank): the same wherever they came from."""
    lines = (base64.b64encode(tok) + b" " + str(rank).encode() for tok, rank in
             sorted(ranks.items(), key=lambda kv: kv[1]))
    return hashlib.sha256(b"\n".join(lines) + b"\n").hexdigest()


def _gpt2_encoding(ranks: dict[bytes, int]):
    """tiktoken's GPT-2 Encoding over ranks (token bytes -> id), with <|endoftext|> as its special token."""
    import tiktoken
    try:
        from tiktoken_ext.openai_public import r50k_pat_str as pat
    except ImportError:  # pragma: no cover - tiktoken_ext ships with tiktoken
        pat = GPT2_PAT
    return tiktoken.Encoding(name="gpt2", pat_str=pat, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": GPT2_EOT}, explicit_n_vocab=GPT2_VOCAB)


@functools.lru_cache(maxsize=4)
def _tiktoken_encoding(tiktoken_file: str | None):
    import tiktoken
    if tiktoken_file is None:
        try:
            return tiktoken.get_encoding("gpt2")  # downloads, or uses TIKTOKEN_CACHE_DIR
        except Exception as e:  # network errors come in many types (requests, urllib3, OSError)
            raise RuntimeError(f"could not load the GPT-2 tokenizer: tiktoken could not download its ranks "
                               f"({type(e).__name__}; offline?). Set TIKTOKEN_GPT2_FILE=path/to/gpt2.tiktoken (e.g. "
                               f"../shared/data/gpt2.tiktoken; the scripts also take --tiktoken-file), or prepare "
                               f"the data with --tiktoken-file so meta.json records where the ranks are") from None
    from tiktoken.load import load_tiktoken_bpe
    if not Path(tiktoken_file).is_file():
        raise FileNotFoundError(f"GPT-2 BPE ranks file {tiktoken_file} not found; pass --tiktoken-file PATH "
                                f"(e.g. ../shared/data/gpt2.tiktoken) or unset TIKTOKEN_GPT2_FILE")
    return _gpt2_encoding(load_tiktoken_bpe(str(tiktoken_file)))


def gpt2_tokenizer(tiktoken_file: str | os.PathLike | None = None, recorded: str | None = None,
                   recorded_sha256: str | None = None) -> GPT2Tokenizer:
    """GPT-2 tokenizer. Ranks file: the argument, else env TIKTOKEN_GPT2_FILE, else the file a spec recorded
    (meta.json, a checkpoint) if it is there and its bytes have the recorded sha256 (GPT-2's when none is
    recorded), else tiktoken.get_encoding("gpt2") (downloads, or reads the cache in TIKTOKEN_CACHE_DIR)."""
    given = tiktoken_file or os.environ.get("TIKTOKEN_GPT2_FILE")
    found = recorded if isinstance(recorded, str) and recorded and Path(recorded).is_file() else None
    if found and not given:
        check_recorded_ranks(found, recorded_sha256 or GPT2_SHA256)
    path = given or found
    path = str(Path(path).expanduser().resolve()) if path else None
    return GPT2Tokenizer(_tiktoken_encoding(path), path)


def check_recorded_ranks(path: str, sha256: str) -> None:
    """ValueError unless the ranks file a spec recorded has the recorded sha256; checked before it is parsed,
    since the path comes from a file (meta.json, a checkpoint) and could name anything."""
    size = Path(path).stat().st_size
    digest = file_sha256(path) if size <= MAX_RANKS_BYTES else None
    if digest != sha256:
        has = f"sha256 {digest[:12]}" if digest else f"{size:,} bytes"
        raise ValueError(f"the GPT-2 ranks file {path} named in the tokenizer spec has {has}, not the recorded "
                         f"sha256 {str(sha256)[:12]}, so it was not read; pass --tiktoken-file PATH (or set "
                         f"TIKTOKEN_GPT2_FILE) to the real gpt2.tiktoken")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (the "data gym" alphabet of vocab.json/merges.txt)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def gpt2_from_vocab_json(path: str | os.PathLike) -> GPT2Tokenizer:
    """GPT-2 tokenizer from a transformers vocab.json (an export's, or the hub's gpt2), no ranks file needed:
    its byte-level tokens are the BPE ranks. Only GPT-2's own vocabulary is accepted (sha256 GPT2_SHA256), for
    which tiktoken's merge-by-rank gives exactly the ids of merges.txt."""
    path = Path(path)
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        ranks = {bytes(u2b[ch] for ch in tok): int(i) for tok, i in vocab.items() if tok != "<|endoftext|>"}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a GPT-2 byte-level BPE vocab.json ({type(e).__name__}: {e})") from None
    if vocab.get("<|endoftext|>") != GPT2_EOT or ranks_sha256(ranks) != GPT2_SHA256:
        raise ValueError(f"{path} is not GPT-2's vocabulary ({len(vocab):,} tokens, ranks sha256 "
                         f"{ranks_sha256(ranks)[:12]}); only GPT-2 BPE and sentencepiece (tokenizer.model) are read")
    return GPT2Tokenizer(_gpt2_encoding(ranks))


def tokenizer_from_hf_dir(path: str | os.PathLike) -> Tokenizer | None:
    """The tokenizer an export_hf.py directory carries: tokenizer.model (sentencepiece), vocab.json (GPT-2 BPE) or
    a tokenizer.json over single characters (char); None when it has none of them (an export of weights only)."""
    path = Path(path)
    if (path / SP_MODEL_FILE).is_file():
        return load_sentencepiece(path / SP_MODEL_FILE)
    if (path / "vocab.json").is_file():
        return gpt2_from_vocab_json(path / "vocab.json")
    if (path / "tokenizer.json").is_file():
        return char_from_tokenizer_json(path / "tokenizer.json")
    return None


class SentencePieceTokenizer:
    """A sentencepiece model held in memory (its serialized proto travels in spec())."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm
        self.proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        self.vocab_size = int(self.sp.vocab_size())
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.eot_id = self.eos_id
        self._nl = self.sp.piece_to_id("\n")
        self.splittable = False   # encode() reads it while the check below runs
        self.splittable = self._newline_is_hard_boundary()

    def _newline_is_hard_boundary(self) -> bool:
        """True when "\\n" is its own piece, no other piece contains it and no dummy prefix or
        whitespace normalisation is applied (true for models from train_sentencepiece)."""
        nl = self._nl
        if nl == self.sp.unk_id():
            return False
        if any("\n" in self.sp.id_to_piece(i) for i in range(self.vocab_size) if i != nl):
            return False
        probe = "a\n  b  \nc"
        return self.sp.encode("a", out_type=str)[0].startswith("a") and self.decode(self.encode(probe)) == probe

    def encode(self, text: str) -> list[int]:
        """Token ids of text. For splittable models every line is encoded on its own: "\\n" is a hard
        boundary anyway, and this keeps sentencepiece's float32 Viterbi from flipping near-ties on
        long inputs, so a text encodes the same whole or in pieces."""
        if not self.splittable or "\n" not in text:
            return self.sp.encode(text)
        lines = self.sp.encode(text.split("\n"), num_threads=1)
        ids = lines[0]
        for line in lines[1:]:
            ids.append(self._nl)
            ids.extend(line)
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_np(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.uint32)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, self.proto)

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.proto).hexdigest()

    def spec(self) -> dict:
        return {"kind": "sentencepiece", "model_file": SP_MODEL_FILE, "vocab_size": self.vocab_size,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "eot_id": self.eot_id, "sha256": self.sha256,
                "model_proto_b64": base64.b64encode(self.proto).decode("ascii")}


def load_sentencepiece(model_file: str | os.PathLike, sha256: str | None = None) -> SentencePieceTokenizer:
    """Load an existing sentencepiece `.model` file; with sha256 (recorded in a spec), only if its bytes match."""
    path = Path(model_file)
    if not path.is_file():
        raise FileNotFoundError(f"sentencepiece model not found: {path}")
    raw = path.read_bytes()
    if sha256 and hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"sentencepiece model {path} has sha256 {hashlib.sha256(raw).hexdigest()[:12]}, not the "
                         f"recorded {str(sha256)[:12]}, so it was not read; re-run prepare_data.py for its directory")
    return SentencePieceTokenizer(raw)


def train_sentencepiece(texts: Iterable[str], vocab_size: int, model_type: str = "unigram",
                        byte_fallback: bool = True, max_chars: int = 200_000_000,
                        character_coverage: float | None = None, num_threads: int | None = None,
                        verbose: bool = False) -> SentencePieceTokenizer:
    """Train a sentencepiece model on (up to max_chars characters of) texts.

    Set up for exact round trips: identity normalisation, no dummy prefix, repeated spaces kept,
    "\\n" a piece of its own (user-defined symbol) and byte fallback for rare characters.
    Training sees the texts line by line; the first max_chars characters are used.
    """
    import sentencepiece as spm
    if model_type not in ("unigram", "bpe", "char", "word"):
        raise ValueError(f"unknown sentencepiece model_type {model_type!r} (unigram, bpe, char, word)")
    reserved = 4 + (256 if byte_fallback else 0)   # unk, bos, eos, "\n" (+ 256 byte pieces)
    if vocab_size <= reserved:
        raise ValueError(f"sentencepiece vocab_size {vocab_size} is too small: {reserved} ids are reserved for "
                         f"special tokens{' and the 256 byte-fallback pieces' if byte_fallback else ''}")
    lines = _sample_lines(texts, max_chars)
    if not lines:
        raise ValueError("cannot train sentencepiece: the corpus is empty")
    if character_coverage is None:
        character_coverage = 1.0 if model_type == "char" else 0.9995
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        user_defined_symbols=["\n"], byte_fallback=byte_fallback, allow_whitespace_only_pieces=True,
        split_digits=False, character_coverage=character_coverage, hard_vocab_limit=False,
        max_sentence_length=1 << 16, input_sentence_size=0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=num_threads or os.cpu_count() or 1, minloglevel=0 if verbose else 2)
    return SentencePieceTokenizer(buf.getvalue())


def _sample_lines(texts: Iterable[str], max_chars: int) -> list[str]:
    """Non-empty lines of texts, in order, until max_chars characters are collected."""
    lines, total = [], 0
    for text in texts:
        for line in text.split("\n"):
            if line:
                lines.append(line)
                total += len(line)
                if total >= max_chars:
                    return lines
    return lines


class UnknownCharacterError(ValueError):
    """A text holds a character that a char tokenizer has no id for (nanoGPT raises a KeyError there)."""


class CharTokenizer:
    """nanoGPT's character tokenizer (data/shakespeare_char/prepare.py): id i is the i-th character of `chars`, the
    sorted set of a corpus's characters. No special tokens; a text of known characters round-trips exactly."""

    kind = "char"
    bos_id = None
    eos_id = None
    eot_id = None
    splittable = True   # one id per character: a text cut anywhere encodes the same

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            where = f"{c!r} (U+{ord(c):04X}, at offset {text.index(c):,})"
            raise UnknownCharacterError(f"character {where} is not one of the char tokenizer's {self.vocab_size} "
                                        f"characters (those of the corpus it was made from)") from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is not one of the char tokenizer's ids 0..{self.vocab_size - 1}")
        return "".join(self.chars[i] for i in ids)

    @functools.cached_property
    def sha256(self) -> str:
        return chars_sha256(self.chars)

    def spec(self) -> dict:
        """chars: the vocabulary itself, in id order (small: one entry per distinct character)."""
        return {"kind": "char", "vocab_size": self.vocab_size, "bos_id": None, "eos_id": None, "eot_id": None,
                "sha256": self.sha256, "chars": list(self.chars)}


def char_tokenizer(texts: Iterable[str]) -> CharTokenizer:
    """nanoGPT's char tokenizer of a corpus: one id per distinct character of texts, in sorted order."""
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    if not seen:
        raise ValueError("cannot make a char tokenizer: the corpus is empty")
    return CharTokenizer(sorted(seen))


def char_from_spec(spec: dict) -> CharTokenizer:
    """The char tokenizer of a spec, checked first (it is untrusted input: meta.json, a checkpoint)."""
    problem = char_spec_problem(spec)
    if problem:
        field, value, want = problem
        raise ValueError(f"bad char tokenizer spec: {field}={value!r} {want}")
    return CharTokenizer(spec["chars"])


def char_from_tokenizer_json(path: Path) -> CharTokenizer | None:
    """The char tokenizer of a transformers tokenizer.json as export_hf.py writes one (a WordLevel model whose
    vocabulary is single characters with ids 0..n-1), or None for any other tokenizer.json."""
    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    vocab = model.get("vocab") if isinstance(model, dict) and model.get("type") == "WordLevel" else None
    if not isinstance(vocab, dict) or sorted(i for i in vocab.values() if type(i) is int) != list(range(len(vocab))):
        return None
    chars = sorted(vocab, key=vocab.get)
    return CharTokenizer(chars) if all(len(c) == 1 for c in chars) else None


def tokenizer_kind(spec: dict) -> str:
    """'gpt2', 'sentencepiece' or 'char' for a tokenizer spec; older spellings (type/name, tiktoken, spm) accepted."""
    kind = spec.get("kind") or spec.get("type") or spec.get("name")
    if kind in ("gpt2", "tiktoken", "r50k_base"):
        return "gpt2"
    if kind in ("sentencepiece", "spm") or "model_proto_b64" in spec:
        return "sentencepiece"
    if kind == "char":
        return "char"
    raise ValueError(f"unknown tokenizer kind {kind!r} in spec (keys {sorted(spec)}); expected gpt2, sentencepiece "
                     f"or char")


def tokenizer_from_spec(spec: dict, tiktoken_file: str | None = None,
                        base_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Rebuild a tokenizer from spec() (as stored in meta.json and in checkpoints)."""
    kind = tokenizer_kind(spec)
    if kind == "char":
        return char_from_spec(spec)
    if kind == "gpt2":
        tok = gpt2_tokenizer(tiktoken_file, recorded=spec.get("ranks_file"), recorded_sha256=spec.get("sha256"))
    elif spec.get("model_proto_b64"):
        tok = SentencePieceTokenizer(base64.b64decode(spec["model_proto_b64"]))
    else:
        model_file = spec.get("model_file") or spec.get("path") or SP_MODEL_FILE
        path = inside(base_dir, model_file, "tokenizer model_file") if base_dir is not None else Path(model_file)
        tok = load_sentencepiece(path, spec.get("sha256"))
    if spec.get("sha256") and spec["sha256"] != tok.sha256:
        raise ValueError(f"the {tok.kind} tokenizer loaded here (sha256 {tok.sha256[:12]}) is not the one the spec "
                         f"was written with (sha256 {spec['sha256'][:12]}); point --tiktoken-file / "
                         f"TIKTOKEN_GPT2_FILE at the right ranks file")
    return tok


def tokenizer_identity(spec: dict) -> str:
    """kind:sha256 of a tokenizer spec (older specs without a hash: computed from what they hold)."""
    kind = tokenizer_kind(spec)
    if spec.get("sha256"):
        return f"{kind}:{spec['sha256']}"
    if spec.get("model_proto_b64"):
        return f"{kind}:{hashlib.sha256(base64.b64decode(spec['model_proto_b64'])).hexdigest()}"
    if kind == "char" and char_spec_problem(spec) is None:
        return f"{kind}:{chars_sha256(spec['chars'])}"
    return f"{kind}:unknown"  # a GPT-2 spec from before hashes: the one public GPT-2 BPE


def check_same_tokenizer(a: dict, b: dict, what_a: str, what_b: str) -> None:
    """ValueError unless two specs name the same tokenizer (kind and model/ranks hash, where both are known)."""
    ia, ib = tokenizer_identity(a), tokenizer_identity(b)
    known = not (ia.endswith(":unknown") or ib.endswith(":unknown"))
    if ia.split(":")[0] != ib.split(":")[0] or (known and ia != ib):
        raise ValueError(f"{what_a} uses tokenizer {ia[:24]} but {what_b} uses {ib[:24]} (vocab "
                         f"{a.get('vocab_size')} vs {b.get('vocab_size')}): token ids mean different things; "
                         f"use data prepared with the model's tokenizer")


def check_vocab_fits(tok: Tokenizer) -> None:
    """Raise before tokenizing if the token ids would not fit in uint16 shards."""
    if tok.vocab_size > MAX_VOCAB:
        name = getattr(tok, "kind", type(tok).__name__)
        raise ValueError(f"tokenizer {name!r} has vocab size {tok.vocab_size:,}, over the uint16 shard limit "
                         f"of {MAX_VOCAB:,} ids (largest id 65,535); use a smaller vocabulary")


def split_text(text: str, target_chars: int) -> list[str]:
    """Cut text into pieces of about target_chars at newlines between two non-space characters.

    Encoding the pieces separately gives exactly the tokens of the whole text for GPT-2 and for
    tokenizers with `splittable` set (see SentencePieceTokenizer)."""
    if len(text) <= 2 * target_chars:
        return [text]
    pieces, start = [], 0
    while len(text) - start > 2 * target_chars:
        m = _SAFE_SPLIT.search(text, start + target_chars)
        if m is None:
            break
        pieces.append(text[start:m.end()])
        start = m.end()
    pieces.append(text[start:])
    return pieces



# ----------------------------------------------------------------------------------------------
# The tokenizer of a shard directory

# Files that mean the shards beside them were made by some tokenizer other than GPT-2's.
OTHER_TOKENIZER_FILES = (SP_MODEL_FILE, "meta.pkl", "tokenizer.json", "vocab.json")


def load_tokenizer_for(data_dir: str | os.PathLike, tiktoken_file: str | None = None) -> Tokenizer:
    """The tokenizer that made the shards in data_dir (from meta.json). Without meta.json (e.g. llm.c's FineWeb
    shards) GPT-2 is assumed, with a warning, only where nothing says otherwise: no other tokenizer's file
    beside the shards and no token id past GPT-2's vocabulary. Else a ValueError says how to write meta.json."""
    try:
        meta = read_meta(data_dir)
    except FileNotFoundError:
        check_gpt2_shards(Path(data_dir))
        warnings.warn(f"no meta.json in {data_dir}; assuming the GPT-2 tokenizer")
        return gpt2_tokenizer(tiktoken_file)
    if not meta.get("tokenizer"):
        raise ValueError(f"{Path(data_dir) / META_FILE} records no tokenizer; re-run prepare_data.py --out {data_dir}, "
                         f'or add the one that made the shards, e.g. "tokenizer": {{"kind": "sentencepiece", '
                         f'"model_file": "{SP_MODEL_FILE}"}}')
    return tokenizer_from_spec(meta["tokenizer"], tiktoken_file, base_dir=data_dir)


def check_gpt2_shards(data_dir: Path) -> None:
    """ValueError unless the shards of a directory without meta.json can only be GPT-2's."""
    others = [name for name in OTHER_TOKENIZER_FILES if (data_dir / name).is_file()]
    if SP_MODEL_FILE in others:
        raise ValueError(f"{data_dir} has no {META_FILE}, and {data_dir / SP_MODEL_FILE} beside the shards says they "
                         f"are not GPT-2 tokens; write {data_dir / META_FILE} containing "
                         f'{{"tokenizer": {{"kind": "sentencepiece", "model_file": "{SP_MODEL_FILE}"}}}}')
    if others:
        raise ValueError(f"{data_dir} has no {META_FILE}, and {others[0]} beside the shards says they are not GPT-2 "
                         f"tokens; re-run prepare_data.py on the source text with --out {data_dir}")
    first = read_shard(list_shards(data_dir, "val")[0])[:1 << 20]
    if len(first) and int(first.max()) >= GPT2_VOCAB:
        raise ValueError(f"{data_dir} has no {META_FILE}, and its shards hold token id {int(first.max())}, past "
                         f"GPT-2's {GPT2_VOCAB}; re-run prepare_data.py on the source text with --out {data_dir}")

