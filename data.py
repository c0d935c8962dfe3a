"""Tokenizers, token shards and the training data loader.

Shared by prepare_data.py (writes shards), train.py (DataLoader or BOSLoader, val_batches), sample.py and
hellaswag.py (tokenizers). Heavy optional imports (torch, datasets) happen inside the functions
that need them, so importing this module is cheap and works without `datasets`.

Shard format (the one llm.c uses): a header of 256 little-endian int32 (magic 20240520, version 1,
number of tokens, rest zero), then the tokens as little-endian uint16. The reader also accepts
build-nanogpt `.npy` shards and nanoGPT's headerless `train.bin` / `val.bin`.
"""
from __future__ import annotations

import base64
import bisect
import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_VOCAB = 1 << 16                 # token ids must fit in uint16 (largest id 65,535)
META_FILE = "meta.json"
SP_MODEL_FILE = "tokenizer.model"
INCOMPLETE_MARKER = "_INCOMPLETE"   # present while prepare_data.py writes a directory
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


# ----------------------------------------------------------------------------------------------
# Tokenizers

class Tokenizer(Protocol):
    """What every tokenizer offers (GPT2Tokenizer, SentencePieceTokenizer)."""

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
    """The tokenizer an export_hf.py directory carries: tokenizer.model (sentencepiece) or vocab.json (GPT-2
    BPE); None when it has neither (an export of weights only)."""
    path = Path(path)
    if (path / SP_MODEL_FILE).is_file():
        return load_sentencepiece(path / SP_MODEL_FILE)
    if (path / "vocab.json").is_file():
        return gpt2_from_vocab_json(path / "vocab.json")
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


def tokenizer_kind(spec: dict) -> str:
    """'gpt2' or 'sentencepiece' for a tokenizer spec; older spellings (type/name, tiktoken, spm) accepted."""
    kind = spec.get("kind") or spec.get("type") or spec.get("name")
    if kind in ("gpt2", "tiktoken", "r50k_base"):
        return "gpt2"
    if kind in ("sentencepiece", "spm") or "model_proto_b64" in spec:
        return "sentencepiece"
    raise ValueError(f"unknown tokenizer kind {kind!r} in spec (keys {sorted(spec)}); expected gpt2 or sentencepiece")


def tokenizer_from_spec(spec: dict, tiktoken_file: str | None = None,
                        base_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Rebuild a tokenizer from spec() (as stored in meta.json and in checkpoints)."""
    if tokenizer_kind(spec) == "gpt2":
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
# Shards

class ShardFormatError(ValueError):
    """A shard file is not a valid llm.c / nanoGPT / build-nanogpt token file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a hidden temporary path beside `path`; when the block succeeds, fsync it (a file) and rename it
    over `path` (a directory replaces the old one). On error the temporary is removed and `path` untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        else:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, *chunks: bytes) -> None:
    """Write the chunks to `path` through atomic_path: readers never see a half-written file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write tokens as an llm.c shard (256 int32 header, then uint16), atomically."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
        raise ValueError(f"{path}: token ids must be in [0, {MAX_VOCAB}) to fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    atomic_write_bytes(path, header.tobytes(), tokens.astype("<u2", copy=False).tobytes())


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a token file as uint16: an llm.c shard, a build-nanogpt .npy, or nanoGPT's
    headerless train.bin / val.bin. Raises ShardFormatError naming the file on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token shard not found: {path}")
    if path.suffix == ".npy":
        return _read_npy(path)
    size = path.stat().st_size
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS) if size >= HEADER_BYTES else None
    if header is not None and header[0] == SHARD_MAGIC:
        return _read_llmc(path, header, size)
    if path.name in ("train.bin", "val.bin"):
        if size % 2:
            raise ShardFormatError(f"{path}: headerless uint16 file must have an even size "
                                   f"(expected {size - 1} or {size + 1} bytes, actual size {size} bytes)")
        return np.memmap(path, dtype="<u2", mode="r", shape=(size // 2,)) if size else np.zeros(0, np.uint16)
    if header is None:
        raise ShardFormatError(f"{path}: too small for an llm.c shard (expected at least {HEADER_BYTES} "
                               f"bytes of header, actual size {size} bytes)")
    raise ShardFormatError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not an llm.c "
                           f"shard (nanoGPT headerless files must be named train.bin / val.bin)")


def _read_llmc(path: Path, header: np.ndarray, size: int) -> np.ndarray:
    version, n_tokens = int(header[1]), int(header[2])
    if version != SHARD_VERSION:
        raise ShardFormatError(f"{path}: unsupported shard version {version} (expected {SHARD_VERSION}, "
                               f"uint16 tokens)")
    expected = HEADER_BYTES + 2 * n_tokens
    if n_tokens < 0 or size != expected:
        raise ShardFormatError(f"{path}: header says {n_tokens} tokens, so expected size {expected} bytes, "
                               f"actual size {size} bytes (truncated or corrupt shard)")
    if n_tokens == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError as e:
        raise ShardFormatError(f"{path}: not a valid .npy file ({e})") from e
    if arr.dtype != np.uint16 or arr.ndim != 1:
        raise ShardFormatError(f"{path}: expected a 1-D uint16 array, got {arr.ndim}-D {arr.dtype}")
    return arr


def shard_name(prefix: str, split: str, index: int) -> str:
    return f"{prefix}_{split}_{index:06d}.bin"


def _check_complete(data_dir: Path) -> None:
    markers = sorted(data_dir.glob(INCOMPLETE_MARKER + "*"))
    if markers:
        raise RuntimeError(f"{data_dir} is incomplete: prepare_data.py did not finish ({markers[0].name} "
                           f"present); re-run it with --overwrite")


class MetaError(ValueError):
    """A meta.json unlike prepare_data.py's: not JSON, a path outside its directory, a count that is no count."""


def inside(base: str | os.PathLike, name, what: str) -> Path:
    """base/name for a relative path that stays inside base. Paths read from meta.json are untrusted: an
    absolute path or '..' is refused (MetaError) before anything is read."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise MetaError(f"{Path(base) / META_FILE}: {what} {name!r} is not a file inside {base} (absolute paths "
                        f"and '..' are refused; nothing was read); re-run prepare_data.py --out {base}")
    return Path(base) / name


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_meta(meta, path: Path) -> dict:
    """meta (read from path) if it has prepare_data.py's shape, else MetaError naming the field: shard files
    inside the directory, splits train/val, counts that are integers >= 0, a vocab size that fits uint16."""
    def bad(field: str, value, want: str) -> MetaError:
        return MetaError(f"{path}: {field}={value!r} {want}; re-run prepare_data.py --out {path.parent}")
    if not isinstance(meta, dict) or not isinstance(meta.get("shards", []), list):
        raise MetaError(f"{path} is not a prepare_data.py meta.json (an object with a 'shards' list); re-run "
                        f"prepare_data.py --out {path.parent}")
    for i, shard in enumerate(meta.get("shards", [])):
        if not isinstance(shard, dict):
            raise bad(f"shards[{i}]", shard, "must be an object with file, split and tokens")
        inside(path.parent, shard.get("file"), f"shards[{i}].file")
        if shard.get("split") not in ("train", "val"):
            raise bad(f"shards[{i}].split", shard.get("split"), "must be 'train' or 'val'")
        if "tokens" in shard and not _is_count(shard["tokens"]):
            raise bad(f"shards[{i}].tokens", shard["tokens"], "must be an integer >= 0")
    for key in ("num_docs", "num_tokens"):
        counts = meta.get(key, {})
        if not isinstance(counts, dict) or not all(_is_count(v) for v in counts.values()):
            raise bad(key, counts, "must map each split to an integer >= 0")
    if "tokenizer" in meta:
        _check_meta_tokenizer(meta["tokenizer"], bad)
    part = meta.get("slice")
    if part is not None and not (isinstance(part, dict) and _is_count(part.get("index"))
                                 and _is_count(part.get("count")) and part["index"] < part["count"]):
        raise bad("slice", part, "must be {index, count} with 0 <= index < count")
    return meta


def _check_meta_tokenizer(spec, bad) -> None:
    if not isinstance(spec, dict):
        raise bad("tokenizer", spec, "must be a tokenizer spec (an object)")
    vocab = spec.get("vocab_size")
    if vocab is not None and not (_is_count(vocab) and 1 <= vocab <= MAX_VOCAB):
        raise bad("tokenizer.vocab_size", vocab, f"must be an integer in [1, {MAX_VOCAB:,}] (uint16 shards)")
    for key in ("bos_id", "eos_id", "eot_id"):
        token = spec.get(key)
        if token is not None and not (_is_count(token) and (vocab is None or token < vocab)):
            raise bad(f"tokenizer.{key}", token, "must be a token id below vocab_size, or null")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise MetaError(f"{path} is not valid JSON ({e}); re-run prepare_data.py --out {path.parent}") from None


def read_meta(data_dir: str | os.PathLike) -> dict:
    """meta.json of a prepared directory, checked (check_meta: it is untrusted input). A directory filled by
    `--num-shards K` slices (one meta-sIIIofKKK.json each) is merged on the fly: shards listed slice after slice."""
    data_dir = Path(data_dir)
    path = data_dir / META_FILE
    if path.is_file():
        return check_meta(_read_json(path), path)
    slices = sorted(data_dir.glob("meta-s*of*.json"))
    if not slices:
        raise FileNotFoundError(f"no {META_FILE} in {data_dir} (run prepare_data.py --out {data_dir})")
    return merge_slice_metas([check_meta(_read_json(p), p) for p in slices], data_dir)


def merge_slice_metas(metas: list[dict], where: str | os.PathLike = "") -> dict:
    """Combine the metas of the K slices of one run into the meta of the whole run."""
    metas = sorted(metas, key=lambda m: m["slice"]["index"])
    count = metas[0]["slice"]["count"]
    found = [m["slice"]["index"] for m in metas]
    if found != list(range(count)) or any(m["slice"]["count"] != count for m in metas):
        raise FileNotFoundError(f"{where}: slice metas found for slices {found}, expected all of 0..{count - 1}")
    for m in metas[1:]:
        for key in ("tokenizer", "boundary", "prefix"):
            if m[key] != metas[0][key]:
                raise ValueError(f"{where}: slices disagree on {key!r}; they are not from one run")
    merged = {k: v for k, v in metas[0].items() if k != "slice"}
    merged["shards"] = [s for m in metas for s in m["shards"]]
    merged["num_docs"] = {k: sum(m["num_docs"][k] for m in metas) for k in ("val", "train")}
    merged["num_tokens"] = {k: sum(m["num_tokens"][k] for m in metas) for k in ("val", "train")}
    merged["slices"] = count
    return merged


def list_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """Shard files of a split ("train" | "val"), in order: from meta.json when present, else by
    name (`*_{split}_*.bin`, `*_{split}_*.npy`, or nanoGPT's `{split}.bin`)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    _check_complete(data_dir)
    try:
        meta = read_meta(data_dir)
    except FileNotFoundError:
        meta = None
    if meta is not None and "shards" in meta:  # (a hand-written meta.json may record the tokenizer only)
        paths = [data_dir / s["file"] for s in meta["shards"] if s["split"] == split]  # inside data_dir: check_meta
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{data_dir}: shards listed in meta.json are missing: {missing[:5]}")
    else:
        paths = sorted(set(data_dir.glob(f"*_{split}_*.bin")) | set(data_dir.glob(f"*_{split}_*.npy")))
        if not paths and (data_dir / f"{split}.bin").is_file():
            paths = [data_dir / f"{split}.bin"]
    if not paths:
        raise FileNotFoundError(f"no {split} shards in {data_dir} (looked for meta.json, *_{split}_*.bin, "
                                f"*_{split}_*.npy, {split}.bin)")
    return paths


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


# ----------------------------------------------------------------------------------------------
# Loading batches

def _load_shards(data_dir, split: str) -> tuple[list[Path], list[np.ndarray]]:
    paths = list_shards(data_dir, split)
    return paths, [read_shard(p) for p in paths]


def _gather(shard: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Rows shard[s : s+length] for each start s, as uint16 (one vectorised read)."""
    idx = starts.astype(np.int64)[:, None] + np.arange(length, dtype=np.int64)[None, :]
    return np.asarray(shard[idx])


def _to_xy(rows: np.ndarray):
    """(B, T+1) uint16 rows -> x, y int64 tensors (B, T). The copies are done by numpy:
    torch's multi-threaded copy kernels are slower for this on busy machines."""
    import torch
    return torch.from_numpy(rows[:, :-1].astype(np.int64)), torch.from_numpy(rows[:, 1:].astype(np.int64))


class DataLoader:
    """Random (B, T+1) windows from memory-mapped shards, split disjointly across DDP ranks.

    Layout of one epoch e (all derived from (seed, e), so every rank computes the same thing):
      * the shards are visited in a random order;
      * shard s is cut into non-overlapping windows of T+1 tokens at stride T, starting at a random
        phase offset in [0, T) (so each target is the next window's first input token);
      * the windows of a shard are visited in a random order.
    This gives one global stream of windows. Each step consumes the next B*world_size windows of
    the stream; rank r takes windows [r*B, (r+1)*B) of them, so ranks never share a window. When
    fewer than B*world_size windows are left, the epoch ends and `epoch` increases.

    Sequence-length warmup: T is fixed at construction and defines the windows. next_batch(seq_len=t)
    with t <= T returns the first t+1 tokens of each window (the rest of the window is skipped), so
    the stream position, determinism and resumption do not depend on t.

    state_dict() stores the position in the global stream (epoch, shard, window), not anything
    rank-specific: a run can resume with another batch size or world size.
    """

    def __init__(self, data_dir, split: str, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, seed: int = 1337):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1 (got {batch_size}, {seq_len})")
        self.data_dir, self.split = Path(data_dir), split
        self.B, self.T, self.rank, self.world_size, self.seed = batch_size, seq_len, rank, world_size, seed
        self.paths, self.shards = _load_shards(data_dir, split)
        self.lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self._check_sizes()
        self.epoch = 0
        self._shard_pos = 0      # index into this epoch's shard order
        self._window_pos = 0     # index into the current shard's window order
        self._plan_epoch()

    def _check_sizes(self) -> None:
        T, need = self.T, self.B * self.world_size
        if self.lengths.max() < T + 1:
            raise ValueError(f"sequences of {T} tokens (block_size) need windows of {T + 1} tokens but the longest "
                             f"{self.split} shard in {self.data_dir} has {int(self.lengths.max())} tokens, so "
                             f"block_size can be at most {max(int(self.lengths.max()) - 1, 0)}")
        short = [p.name for p, n in zip(self.paths, self.lengths) if n < 2 * T + 1]
        if short:
            warnings.warn(f"{len(short)} {self.split} shard(s) shorter than 2*seq_len+1 tokens may give no "
                          f"window in some epochs: {short[:3]}")
        worst = int(np.maximum((self.lengths - T) // T, 0).sum())  # windows per epoch, worst offsets
        if worst < need:
            raise ValueError(f"{self.split} data in {self.data_dir} has only {worst} windows of {T + 1} tokens "
                             f"per epoch, fewer than batch_size*world_size = {need}")

    def _plan_epoch(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        self._order = rng.permutation(len(self.shards))
        self._offsets = rng.integers(0, self.T, size=len(self.shards))
        self._counts = np.maximum((self.lengths - 1 - self._offsets) // self.T, 0)
        self._perm_key, self._perm = None, None

    def _windows(self, s: int) -> np.ndarray:
        """Start positions of shard s's windows, in this epoch's order."""
        if self._perm_key != (self.epoch, s):
            rng = np.random.default_rng([self.seed, self.epoch, int(s), 1])
            self._perm = self._offsets[s] + rng.permutation(self._counts[s]) * self.T
            self._perm_key = (self.epoch, s)
        return self._perm

    def _remaining(self) -> int:
        return int(self._counts[self._order[self._shard_pos:]].sum()) - self._window_pos

    def _take(self, n: int) -> list[tuple[int, np.ndarray]]:
        """Advance the global stream by n windows; return them as (shard, starts) runs."""
        if self._remaining() < n:
            self.epoch += 1
            self._shard_pos = self._window_pos = 0
            self._plan_epoch()
        runs = []
        while n > 0:
            s = int(self._order[self._shard_pos])
            k = min(int(self._counts[s]) - self._window_pos, n)
            if k > 0:
                runs.append((s, self._windows(s)[self._window_pos:self._window_pos + k]))
            self._window_pos += k
            n -= k
            if self._window_pos >= self._counts[s]:
                self._shard_pos += 1
                self._window_pos = 0
        return runs

    def next_batch(self, seq_len: int | None = None):
        """Next (x, y) int64 tensors of shape (B, seq_len); y is x shifted by one token."""
        t = self.T if seq_len is None else int(seq_len)
        if not 1 <= t <= self.T:
            raise ValueError(f"seq_len {t} must be in [1, {self.T}] (the loader's windows are {self.T + 1} tokens)")
        lo, hi = self.rank * self.B, (self.rank + 1) * self.B
        rows, pos = [], 0
        for s, starts in self._take(self.B * self.world_size):
            a, b = max(lo - pos, 0), min(hi - pos, len(starts))
            if a < b:
                rows.append(_gather(self.shards[s], starts[a:b], t + 1))
            pos += len(starts)
        return _to_xy(np.concatenate(rows))

    def state_dict(self) -> dict:
        return {"version": 1, "epoch": int(self.epoch), "shard_pos": int(self._shard_pos),  # plain ints: weights_only
                "window_pos": int(self._window_pos), "seed": self.seed, "seq_len": self.T, "split": self.split,
                "shards": [p.name for p in self.paths], "lengths": self.lengths.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the saved loader stopped (same data, seed and seq_len)."""
        _check_state(self, state, "random", {"seed": self.seed, "seq_len": self.T})
        self.epoch = int(state["epoch"])
        self._plan_epoch()
        self._shard_pos, self._window_pos = int(state["shard_pos"]), int(state["window_pos"])

    def stats(self) -> dict:
        return {}


def document_start_id(data_dir, tokenizer) -> int | None:
    """The token that starts every document in data_dir's shards (meta.json's boundary), or None if they have none.
    eot: GPT-2's <|endoftext|> before each document; bos_eos: BOS doc EOS; no meta.json: llm.c's GPT-2 shards (eot)."""
    try:
        boundary = read_meta(data_dir).get("boundary")
    except FileNotFoundError:
        boundary = "eot"
    if boundary == "none":
        return None
    if boundary == "eot":
        return tokenizer.eot_id
    if boundary == "bos_eos":
        return tokenizer.bos_id
    return tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eot_id  # meta.json without "boundary"


def first_token_at(shard: np.ndarray, token: int, chunk: int = 1 << 20) -> int | None:
    """Index of the first occurrence of token in shard, or None (read a chunk at a time: usually near the start)."""
    for lo in range(0, len(shard), chunk):
        hits = np.flatnonzero(np.asarray(shard[lo:lo + chunk]) == token)
        if hits.size:
            return lo + int(hits[0])
    return None


class BOSLoader:
    """(B, T+1) rows that each start at a document start, documents packed best-fit (loader=bos_aligned).

    A document is a BOS token and everything up to the next BOS (across shard ends, so none is cut by
    sharding); tokens before the first BOS of the train data belong to no document and are never used.
    Documents stream in a random order per epoch, from (seed, epoch): shards in a random order, the
    documents of each shard (by where their BOS is) in a random order. A buffer holds buffer_size of them,
    sorted by (length, start). Each row of T+1 tokens is filled left to right: the longest buffered document
    that fits the room left goes in whole (best-fit decreasing); when none fits, the shortest one is cropped to
    the room left and its remaining tokens are dropped (counted in `cropped`). So every row is full, starts
    with BOS, and each later segment starts with BOS too; only a row's last segment can be cropped.

    Ranks: every rank runs the same packer over one global stream of rows; each step packs B*world_size
    rows and rank r keeps rows [r*B, (r+1)*B), so each document read lands on one rank. state_dict() (stream
    position, buffer, counts) is the same on every rank and resumes exactly, also on another world size.
    next_batch(seq_len=t) returns the first t+1 tokens of each row (sequence-length warmup).
    """

    def __init__(self, data_dir, split: str, batch_size: int, seq_len: int, bos_id: int, rank: int = 0,
                 world_size: int = 1, seed: int = 1337, buffer_size: int = 1000):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if batch_size < 1 or seq_len < 1 or buffer_size < 1:
            raise ValueError(f"batch_size, seq_len and buffer_size must be >= 1 (got {batch_size}, {seq_len}, "
                             f"{buffer_size})")
        self.data_dir, self.split, self.bos = Path(data_dir), split, int(bos_id)
        self.B, self.T, self.rank, self.world_size, self.seed = batch_size, seq_len, rank, world_size, seed
        self.buffer_size = buffer_size
        self.paths, self.shards = _load_shards(data_dir, split)
        self.lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])   # global position of each shard's start
        self._first = [first_token_at(s, self.bos) for s in self.shards]
        if all(f is None for f in self._first):
            raise ValueError(f"the {split} shards in {self.data_dir} hold no document-start token {self.bos}; "
                             f"prepare them with document boundaries or use loader=random")
        self.epoch, self._shard_pos, self._doc_pos = 0, 0, 0
        self._buffer: list[tuple[int, int]] = []    # (length, global start), sorted
        self.cropped = self.used = 0                # tokens dropped by cropping / placed in rows (all ranks)
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards))
        self._docs_key, self._docs = None, None

    def _end_after(self, s: int) -> int:
        """Global position where the last document starting in shard s ends: the next shard's first BOS."""
        later = [int(self.offsets[k]) + f for k, f in enumerate(self._first) if k > s and f is not None]
        return later[0] if later else int(self.offsets[-1])

    def _shard_docs(self, s: int) -> np.ndarray:
        """(n, 2) [global start, length] of the documents starting in shard s, in this epoch's order."""
        if self._docs_key != (self.epoch, s):
            starts = np.flatnonzero(np.asarray(self.shards[s]) == self.bos) + self.offsets[s]
            docs = np.stack([starts, np.diff(np.append(starts, self._end_after(s)))], axis=1)
            self._docs = docs[np.random.default_rng([self.seed, self.epoch, s, 1]).permutation(len(docs))]
            self._docs_key = (self.epoch, s)
        return self._docs

    def _next_doc(self) -> tuple[int, int]:
        """(length, global start) of the next document in the stream; a new epoch after the last."""
        while True:
            docs = self._shard_docs(int(self._order[self._shard_pos]))
            if self._doc_pos < len(docs):
                start, n = docs[self._doc_pos]
                self._doc_pos += 1
                return int(n), int(start)
            self._shard_pos, self._doc_pos = self._shard_pos + 1, 0
            if self._shard_pos == len(self.shards):
                self.epoch, self._shard_pos = self.epoch + 1, 0
                self._plan_epoch()

    def pack_row(self) -> list[tuple[int, int]]:
        """The next row of the global stream as (global start, length) segments summing to T+1."""
        room, row = self.T + 1, []
        while room:
            while len(self._buffer) < self.buffer_size:
                bisect.insort(self._buffer, self._next_doc())
            i = bisect.bisect_right(self._buffer, (room, math.inf)) - 1   # the longest document that fits
            n, start = self._buffer.pop(max(i, 0))                          # none fits: crop the shortest
            if n > room:
                self.cropped += n - room
                n = room
            row.append((start, n))
            room -= n
        self.used += self.T + 1
        return row

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start+n) of the train data seen as one stream (a document may cross a shard end)."""
        parts, s = [], int(np.searchsorted(self.offsets, start, side="right")) - 1
        while n > 0:
            local = start - int(self.offsets[s])
            k = min(n, int(self.lengths[s]) - local)
            parts.append(np.asarray(self.shards[s][local:local + k]))
            start, n, s = start + k, n - k, s + 1
        return np.concatenate(parts)

    def next_batch(self, seq_len: int | None = None):
        """Next (x, y) int64 tensors of shape (B, seq_len) of this rank; every row starts with BOS."""
        t = self.T if seq_len is None else int(seq_len)
        if not 1 <= t <= self.T:
            raise ValueError(f"seq_len {t} must be in [1, {self.T}] (the loader's rows are {self.T + 1} tokens)")
        rows = [self.pack_row() for _ in range(self.B * self.world_size)][self.rank * self.B:(self.rank + 1) * self.B]
        return _to_xy(np.stack([np.concatenate([self.read(a, n) for a, n in row])[:t + 1] for row in rows]))

    def stats(self) -> dict:
        """Tokens dropped by cropping so far (over all ranks) and their share of the documents' tokens taken."""
        return {"cropped_tokens": self.cropped, "cropped_frac": self.cropped / max(1, self.cropped + self.used)}

    def state_dict(self) -> dict:
        return {"version": 1, "loader": "bos_aligned", "epoch": int(self.epoch), "shard_pos": int(self._shard_pos),
                "doc_pos": int(self._doc_pos), "buffer": [[n, s] for n, s in self._buffer], "cropped": self.cropped,
                "used": self.used, "seed": self.seed, "seq_len": self.T, "bos": self.bos,
                "buffer_size": self.buffer_size, "split": self.split, "shards": [p.name for p in self.paths],
                "lengths": self.lengths.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the saved loader stopped (same data, seed, seq_len, BOS and buffer size)."""
        _check_state(self, state, "bos_aligned", {"seed": self.seed, "seq_len": self.T, "bos": self.bos,
                                                   "buffer_size": self.buffer_size})
        self.epoch = int(state["epoch"])
        self._plan_epoch()
        self._shard_pos, self._doc_pos = int(state["shard_pos"]), int(state["doc_pos"])
        self._buffer = [(int(n), int(s)) for n, s in state["buffer"]]
        self.cropped, self.used = int(state["cropped"]), int(state["used"])


def _check_state(loader, state: dict, kind: str, mine: dict) -> None:
    """ValueError naming what differs between a saved loader state and this loader."""
    if state.get("loader", "random") != kind:
        raise ValueError(f"loader state is from loader={state.get('loader', 'random')}, this run uses loader={kind}")
    for key, value in mine.items():
        if state[key] != value:
            raise ValueError(f"loader state does not match this loader: {key} was {state[key]!r}, now {value!r}")
    if state["shards"] != [p.name for p in loader.paths] or state["lengths"] != loader.lengths.tolist():
        raise ValueError(f"loader state does not match this loader: the {loader.split} shards differ")


def val_batches(data_dir, batch_size: int, seq_len: int, num_batches: int, rank: int = 0,
                world_size: int = 1) -> tuple[list, int]:
    """This rank's share of a fixed list of validation (x, y) batches: identical on every call, and the same
    list whatever the world size, so the validation loss does not depend on the number of ranks.

    The val shards are cut into windows of seq_len+1 tokens at stride seq_len from offset 0; the
    num_batches * batch_size windows used are spread evenly over all of them, and batch i holds windows
    [i*B, (i+1)*B). num_batches counts batches over all ranks: rank r gets batches r, r+W, r+2W, ..., so the
    ranks' shares are disjoint and together are the 1-rank list. Every rank gets ceil(num_batches / W)
    batches (an FSDP forward is collective); when num_batches is not a multiple of W the short ranks' last
    batch repeats batch 0 and is not counted. Returns (batches, counted): the first `counted` are this
    rank's share. If the split has too few windows, fewer batches are used (together the whole split once);
    if it has fewer than batch_size windows, one smaller batch (with a warning).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    paths, shards = _load_shards(data_dir, "val")
    T = seq_len
    counts = [max((len(s) - 1) // T, 0) for s in shards]
    total = sum(counts)
    if total == 0:
        raise ValueError(f"val data in {data_dir} ({sum(len(s) for s in shards)} tokens in {len(shards)} shard(s)) "
                         f"has no window of {T + 1} tokens")
    if total < batch_size:
        batch_size = total
        warnings.warn(f"val data in {data_dir} has only {total} windows of {T + 1} tokens; using one batch of {total}")
    n_batches = min(num_batches, total // batch_size)
    n = n_batches * batch_size
    chosen = (np.arange(n, dtype=np.int64) * total) // n        # evenly spread window indices
    shard_of = np.repeat(np.arange(len(shards)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    starts = (chosen - first[shard_of[chosen]]) * T
    mine = list(range(rank, n_batches, world_size))
    rounds = -(-n_batches // world_size)
    batches = []
    for i in mine + [0] * (rounds - len(mine)):
        sel = slice(i * batch_size, (i + 1) * batch_size)
        rows = [_gather(shards[s], starts[sel][shard_of[chosen[sel]] == s], T + 1)
                for s in np.unique(shard_of[chosen[sel]])]
        batches.append(_to_xy(np.concatenate(rows)))
    return batches, len(mine)
