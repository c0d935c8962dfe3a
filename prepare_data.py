"""Tokenize a text corpus into llm.c-format uint16 shards plus meta.json.

Examples:
    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --out data/shakespeare
    python prepare_data.py shakespeare --tokenizer sentencepiece --vocab-size 2048 --out data/shakespeare_sp
    python prepare_data.py shakespeare_char --input ../shared/data/tinyshakespeare.txt --out data/shakespeare_char
    python prepare_data.py fineweb-edu-10B --out data/fineweb10B --num-proc 16
    python prepare_data.py news-tr --out data/news_tr                      # sentencepiece 8192, BOS...EOS
    python prepare_data.py my_corpus.jsonl --text-field content --out data/mine
    python prepare_data.py HuggingFaceFW/fineweb --name sample-10BT --streaming --out data/fw

SOURCE is a preset (shakespeare, shakespeare_char, fineweb-edu-10B, news-tr, openwebtext), a local file or directory
(.txt, .jsonl/.json, .parquet, .csv, or a dataset saved with save_to_disk), or a Hugging Face hub
dataset name. `--input PATH` reads a local copy instead of the preset's download.

Output (--out DIR): {prefix}_val_000000.bin, {prefix}_train_000001.bin, ... (llm.c format), meta.json,
and tokenizer.model for sentencepiece. The validation split is the first --val-tokens tokens of the
corpus in whole documents (the shakespeare presets instead use nanoGPT's split: the last 10% of
the characters). `--tokenizer char` (the shakespeare_char preset's) is nanoGPT's character tokenizer: one id per
distinct character of the whole corpus, sorted, no special tokens (so --boundary none), recorded in meta.json.
While the script runs, DIR/_INCOMPLETE exists, and loaders refuse the directory; a run that fails removes what
it wrote. `--overwrite` replaces only these files (shards with this --prefix,
meta.json, tokenizer.model): any other file in DIR is kept.

Slices for several machines: `--num-shards K --shard-index i` tokenizes the i-th of K contiguous,
disjoint parts of the corpus (split by data file for streamed datasets, by row otherwise) into
files named {prefix}-s{i:03d}of{K:03d}_..., with meta-s{i:03d}of{K:03d}.json. Copy all slices into
one directory; token_shards.read_meta() merges them. The validation split is the start of the corpus, so
slice 0 writes it and slices 1..K-1 write only train shards: slice 0's train tokens followed by
slice 1's, ... are exactly the train tokens of a single run, and the val shard is identical.
A sentencepiece model must be shared by all slices: make it once with --tokenizer-only and pass it
to every slice with --sp-model.
"""
from __future__ import annotations

import argparse
import codecs
import itertools
import json
import multiprocessing as mp
import os
import re
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import token_shards
import tokenization

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CHUNK_CHARS = 1 << 17      # long documents are cut into ~128K-character pieces (see tokenization.split_text)
BATCH_CHARS = 1 << 20      # characters per task sent to a worker process
SCAN_BYTES = 1 << 20       # input files are checked for binary content and bad bytes in chunks of this size


@dataclass(frozen=True)
class Preset:
    """Defaults for a named corpus; command-line flags override them."""
    dataset: str | None = None      # hub name; None = local text (shakespeare)
    name: str | None = None         # hub config / subset
    split: str = "train"
    text_field: str = "text"
    streaming: bool = False
    tokenizer: str = "gpt2"
    vocab_size: int | None = None
    boundary: str | None = None
    one_text: bool = False          # a single text split by characters like nanoGPT (the last val_fraction: val)
    prefix: str = "data"
    val_tokens: int = 1_000_000
    shard_size: int = 100_000_000


PRESETS = {
    "shakespeare": Preset(prefix="shakespeare", boundary="none", one_text=True),
    "shakespeare_char": Preset(prefix="shakespeare_char", tokenizer="char", boundary="none", one_text=True),
    "fineweb-edu-10B": Preset(dataset="HuggingFaceFW/fineweb-edu", name="sample-10BT", streaming=True,
                              prefix="edufineweb", val_tokens=100_000_000),
    "news-tr": Preset(dataset="habanoz/news-tr-1.8M", tokenizer="sentencepiece", vocab_size=8192,
                      boundary="bos_eos", prefix="newstr", val_tokens=2_000_000),
    "openwebtext": Preset(dataset="Skylion007/openwebtext", prefix="openwebtext", val_tokens=4_000_000),
}


@dataclass
class Corpus:
    """Where documents come from: either explicit val/train texts or one document stream."""
    describe: dict
    docs: Iterable[str] | None = None           # stream: val = first val_tokens tokens (whole docs)
    val_docs: list[str] | None = None           # explicit split (shakespeare)
    train_docs: list[str] | None = None
    num_docs: int | None = None                 # for the progress bar, when known
    sample_docs: Iterable[str] | None = None    # fresh iterator for tokenizer training


@dataclass
class SplitWriter:
    """Collects the token stream into val and train shards (atomic writes)."""
    out: Path
    prefix: str
    shard_size: int
    shards: list = field(default_factory=list)
    val_parts: list = field(default_factory=list)
    val_count: int = 0
    train_index: int = 1
    buf: np.ndarray | None = None
    fill: int = 0
    docs: dict = field(default_factory=lambda: {"val": 0, "train": 0})
    val_doc_ends: tuple = (0, 0)    # val tokens at the end of the last two val documents

    def add_val(self, tokens: np.ndarray) -> None:
        self.val_parts.append(tokens)
        self.val_count += len(tokens)

    def end_val_doc(self) -> None:
        self.val_doc_ends = (self.val_doc_ends[1], self.val_count)

    def close_val(self) -> None:
        if self.val_parts:
            self._write("val", 0, np.concatenate(self.val_parts))
            self.val_parts = []

    def add_train(self, tokens: np.ndarray) -> None:
        if self.buf is None:
            self.buf = np.empty(self.shard_size, dtype=np.uint16)
        while len(tokens):
            k = min(self.shard_size - self.fill, len(tokens))
            self.buf[self.fill:self.fill + k] = tokens[:k]
            self.fill += k
            tokens = tokens[k:]
            if self.fill == self.shard_size:
                self.flush_train()

    def flush_train(self) -> None:
        if self.fill:
            self._write("train", self.train_index, self.buf[:self.fill])
            self.train_index += 1
            self.fill = 0

    def _write(self, split: str, index: int, tokens: np.ndarray) -> None:
        name = token_shards.shard_name(self.prefix, split, index)
        token_shards.write_shard(self.out / name, tokens)
        self.shards.append({"file": name, "split": split, "tokens": int(len(tokens))})

    def num_tokens(self) -> dict:
        totals = {"val": 0, "train": 0}
        for s in self.shards:
            totals[s["split"]] += s["tokens"]
        return totals


# ----------------------------------------------------------------------------------------------
# Tokenization (parallel, order-preserving)

def encode_items(tok, boundary: str, items: list) -> tuple[np.ndarray, np.ndarray]:
    """Encode (text, starts_doc, ends_doc) pieces; returns uint16 tokens and the offsets where
    documents end. boundary: "eot" (EOT before each doc), "bos_eos" (BOS doc EOS) or "none"."""
    pre = {"eot": [tok.eot_id], "bos_eos": [tok.bos_id], "none": []}[boundary]
    post = [tok.eos_id] if boundary == "bos_eos" else []
    encode = getattr(tok, "encode_np", None) or (lambda t: np.asarray(tok.encode(t), dtype=np.uint32))
    parts, ends, n = [], [], 0
    for text, first, last in items:
        piece = [np.asarray(pre, np.uint32)] if first and pre else []
        piece.append(encode(text))
        if last and post:
            piece.append(np.asarray(post, np.uint32))
        for p in piece:
            parts.append(p)
            n += len(p)
        if last:
            ends.append(n)
    tokens = np.concatenate(parts).astype(np.uint16) if parts else np.zeros(0, np.uint16)
    return tokens, np.asarray(ends, dtype=np.int64)


_WORKER: dict = {}   # per worker process: the tokenizer, set once by _init_worker


def _init_worker(spec: dict, tiktoken_file: str | None) -> None:
    _WORKER["tok"] = tokenization.tokenizer_from_spec(spec, tiktoken_file)


def _worker_encode(boundary: str, items: list) -> tuple[np.ndarray, np.ndarray]:
    return encode_items(_WORKER["tok"], boundary, items)


def make_tasks(docs: Iterable[str], splittable: bool) -> Iterator[list]:
    """Group documents into tasks of about BATCH_CHARS characters; long documents are cut into
    pieces (when the tokenizer allows it) so that one big text still uses every process."""
    items, size = [], 0
    for doc in docs:
        pieces = tokenization.split_text(doc, CHUNK_CHARS) if splittable else [doc]
        for j, piece in enumerate(pieces):
            items.append((piece, j == 0, j == len(pieces) - 1))
            size += len(piece)
            if size >= BATCH_CHARS:
                yield items
                items, size = [], 0
    if items:
        yield items


def tokenize_stream(docs: Iterable[str], tok, boundary: str, num_proc: int,
                    progress=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tokens, doc_end_offsets) per task, in input order, whatever num_proc is."""
    tasks = make_tasks(docs, getattr(tok, "splittable", False))
    if num_proc <= 1:
        results = (encode_items(tok, boundary, items) for items in tasks)
        yield from _counted(results, progress)
        return
    ctx = mp.get_context()
    args = (tok.spec(), getattr(tok, "tiktoken_file", None))
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=args) as pool:
        yield from _counted(_bounded_imap(pool, boundary, tasks, 2 * num_proc + 2), progress)


def _bounded_imap(pool, boundary: str, tasks: Iterator[list], ahead: int):
    """Like pool.imap, but reads at most `ahead` tasks ahead (bounded memory on huge corpora)."""
    pending = deque()
    for items in tasks:
        pending.append(pool.apply_async(_worker_encode, (boundary, items)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _counted(results, progress):
    for tokens, ends in results:
        if progress is not None:
            progress.add(len(ends), len(tokens))
        yield tokens, ends


class Progress:
    """tqdm bar counting documents, with tokens/s in the postfix."""

    def __init__(self, total: int | None, quiet: bool):
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit="docs", unit_scale=True, disable=quiet, dynamic_ncols=True,
                        file=sys.stderr)
        self.tokens, self.t0 = 0, time.time()

    def add(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(docs)
        rate = self.tokens / max(time.time() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens:,} tokens, {rate / 1e6:.2f}M tokens/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def write_stream(stream, writer: SplitWriter, val_tokens: int) -> None:
    """Route tokenized documents: whole documents go to val until it holds >= val_tokens tokens,
    everything after goes to train."""
    val_open = val_tokens > 0
    for tokens, ends in stream:
        start, val_docs = 0, 0
        while val_open and val_docs < len(ends):
            end = int(ends[val_docs])
            writer.add_val(tokens[start:end])
            writer.end_val_doc()
            start, val_docs = end, val_docs + 1
            if writer.val_count >= val_tokens:
                val_open = False
                writer.close_val()
        writer.docs["val"] += val_docs
        if val_open:                       # a document still going to val continues in the next task
            writer.add_val(tokens[start:])
            continue
        writer.docs["train"] += len(ends) - val_docs
        writer.add_train(tokens[start:])
    writer.close_val()
    writer.flush_train()


# ----------------------------------------------------------------------------------------------
# Sources

def first_or_error(texts: Iterable[str], what: str) -> Iterator[str]:
    """Peek at the first document so an empty corpus fails before anything is written."""
    it = iter(texts)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(f"empty corpus: {what} has no non-empty documents") from None
    return itertools.chain([first], it)


def shakespeare_corpus(args) -> Corpus:
    """Tiny Shakespeare split like nanoGPT's data/shakespeare and data/shakespeare_char: val = last val_fraction of
    the characters, train = the rest; each encoded as one text, without boundary tokens."""
    path = Path(args.input) if args.input else Path(args.out) / "input.txt"
    if not args.input and not path.exists():
        print(f"downloading {SHAKESPEARE_URL} -> {path}")
        urllib.request.urlretrieve(SHAKESPEARE_URL, path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    text = path.read_text(encoding=args.encoding, errors=args.errors)
    if not text:
        raise ValueError(f"empty corpus: {path} is empty; give a file with text")
    cut = int(len(text) * (1 - args.val_fraction))
    return Corpus(describe={"preset": args.preset, "path": str(path), "chars": len(text),
                            "val": f"last {args.val_fraction:g} of the characters (text[{cut}:])"},
                  val_docs=[text[cut:]] if cut < len(text) else [], train_docs=[text[:cut]],
                  sample_docs=[text])


LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
KINDS = ".txt, .jsonl/.json, .parquet or .csv"
SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def _builder_for(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in COMPRESSED]
    return LOCAL_BUILDERS.get(suffixes[-1]) if suffixes else None


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in SAVED_DATASET_FILES)


def looks_like_path(source: str) -> bool:
    """A SOURCE meant as a local path rather than a hub name ("org/name")."""
    return source.startswith(("/", ".", "~")) or _builder_for(Path(source)) is not None or source.count("/") > 1


def data_files(path: Path) -> list[Path]:
    """The corpus files of a local input: the file itself, or the supported files under a directory, all of
    one kind; else a ValueError naming what was found."""
    if path.is_file():
        if _builder_for(path) is None:
            raise ValueError(f"{path}: unsupported file type '{''.join(path.suffixes) or 'no suffix'}'; prepare_data.py "
                             f"reads {KINDS} files (also compressed: {', '.join(COMPRESSED)})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _builder_for(p))
    kinds = sorted({_builder_for(p) for p in files})
    if len(kinds) != 1:
        found = " and ".join(kinds) + " files mixed" if kinds else "none"
        raise ValueError(f"{path}: need {KINDS} files of a single kind, found {found}")
    return files


def check_text(path: Path, encoding: str, errors: str) -> None:
    """A text-kind file is not binary and (errors=strict) decodes with `encoding`: else a ValueError naming the
    file, the byte offset and the options. Compressed files are checked as they are read."""
    if path.suffix in COMPRESSED or _builder_for(path) == "parquet":
        return
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))  # NUL bytes are normal there
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(SCAN_BYTES):
            if not wide and (nul := chunk.find(b"\0")) >= 0:
                raise ValueError(f"{path} looks binary (a NUL byte at offset {offset + nul:,}), not text: give a "
                                 f"{KINDS} corpus, or --encoding utf-16 if it is UTF-16 text")
            if errors == "strict":
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path} is not valid {encoding} text at byte offset {offset - pending + e.start:,} "
                                     f"({e.reason}); pass its --encoding (e.g. latin-1, cp1252, utf-16), or --errors "
                                     f"replace (bad bytes become U+FFFD) or ignore (dropped)") from None
            offset += len(chunk)
    if errors == "strict" and decoder.getstate()[0]:
        raise ValueError(f"{path} ends inside a {encoding} character (byte offset {offset - len(decoder.getstate()[0]):,}); "
                         f"pass its --encoding, or --errors replace or ignore")


def check_inputs(args) -> None:
    """The local corpus, before any work: it exists, is of one supported kind, is not empty, and is text."""
    path = args.local
    if path is None:
        return
    if not path.exists():
        raise FileNotFoundError(f"input {path} not found: give an existing file or directory, or a hub dataset name")
    if _is_saved_dataset(path):
        return
    files = [path] if _is_one_text(args) else data_files(path)
    if all(p.stat().st_size == 0 for p in files):
        raise ValueError(f"empty corpus: {path} is empty; give a file with text")
    for p in files:
        check_text(p, args.encoding, args.errors)


def _is_text_input(path: Path) -> bool:
    if path.is_dir():
        return any(_builder_for(p) == "text" for p in path.rglob("*.txt*"))
    return _builder_for(path) == "text"


def load_local(path: Path, args):
    """A local file / directory as a datasets Dataset (or IterableDataset when streaming)."""
    import datasets
    if _is_saved_dataset(path):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if args.split not in ds:
                raise ValueError(f"{path}: no split {args.split!r}; splits found: {list(ds)}")
            ds = ds[args.split]
        return ds
    files = data_files(path)
    builder = _builder_for(files[0])
    kwargs = {"sample_by": args.sample_by, "keep_linebreaks": True} if builder == "text" else {}
    if builder != "parquet":
        kwargs.update(encoding=args.encoding, encoding_errors=args.errors)
        if builder == "json" and args.errors != "strict" and codecs.lookup(args.encoding).name == "utf-8":
            kwargs["encoding"] = "utf_8"  # datasets' json reader honours encoding_errors only for other spellings
    return datasets.load_dataset(builder, data_files={"train": [str(p) for p in files]}, split="train",
                                 streaming=args.streaming, cache_dir=args.cache_dir, **kwargs)


def load_hub(args):
    import datasets
    return datasets.load_dataset(args.dataset, args.name, split=args.split, streaming=args.streaming,
                                 cache_dir=args.cache_dir)


def slice_dataset(ds, k: int, i: int):
    """The i-th of k contiguous parts: by data file for streamed datasets, by row otherwise."""
    if k == 1:
        return ds
    import datasets
    if isinstance(ds, datasets.IterableDataset):
        if ds.num_shards < k and hasattr(ds, "reshard"):
            ds = ds.reshard()
        if ds.num_shards < k:
            raise ValueError(f"the streamed source has {ds.num_shards} data files, fewer than --num-shards {k}; "
                             f"use fewer slices, or --no-streaming to slice by rows")
    return ds.shard(num_shards=k, index=i, contiguous=True)


def iter_texts(ds, text_field: str, max_docs: int | None = None) -> Iterator[str]:
    """The non-empty text fields of a dataset, in order."""
    columns = getattr(ds, "column_names", None)
    if columns and text_field not in columns:
        raise KeyError(f"text field {text_field!r} not found; fields found: {columns} (use --text-field)")
    n = 0
    for batch in ds.iter(batch_size=1000):
        if text_field not in batch:
            raise KeyError(f"text field {text_field!r} not found; fields found: {list(batch)} (use --text-field)")
        for text in batch[text_field]:
            if text:
                yield text
                n += 1
                if max_docs is not None and n >= max_docs:
                    return


def dataset_corpus(args) -> Corpus:
    """A local file/directory or hub dataset, read through `datasets`, sliced if asked."""
    local = args.local
    ds_full = load_local(local, args) if local else load_hub(args)
    ds = slice_dataset(ds_full, args.num_shards, args.shard_index)
    what = str(local) if local else f"{args.dataset} ({args.name or 'default'}, split {args.split})"
    describe = {"preset": args.preset, "path": str(local) if local else None,
                "dataset": None if local else args.dataset, "name": args.name, "split": args.split,
                "text_field": args.text_field, "streaming": args.streaming, "max_docs": args.max_docs,
                "val": f"first {args.val_tokens} tokens, whole documents"}
    if local and _is_text_input(local):
        describe["sample_by"] = args.sample_by
    num_docs = len(ds) if hasattr(ds, "__len__") and args.max_docs is None else args.max_docs
    return Corpus(describe=describe, num_docs=num_docs,
                  docs=first_or_error(iter_texts(ds, args.text_field, args.max_docs), what),
                  sample_docs=iter_texts(ds_full, args.text_field, args.max_docs))


# ----------------------------------------------------------------------------------------------
# Tokenizer choice and output directory

def make_tokenizer(args, corpus: Corpus | None):
    if args.tokenizer == "gpt2":
        return tokenization.gpt2_tokenizer(args.tiktoken_file)
    if args.tokenizer == "char":
        tok = tokenization.char_tokenizer(corpus.sample_docs)
        print(f"char tokenizer: the corpus has {tok.vocab_size} distinct characters")
        return tok
    if args.sp_model:
        return tokenization.load_sentencepiece(args.sp_model)
    t0 = time.time()
    tok = tokenization.train_sentencepiece(corpus.sample_docs, args.vocab_size, args.sp_model_type,
                                   byte_fallback=args.byte_fallback, max_chars=args.sp_sample_chars,
                                   character_coverage=args.sp_character_coverage)
    print(f"trained sentencepiece {args.sp_model_type} model, vocab {tok.vocab_size} "
          f"({time.time() - t0:.1f}s)")
    if tok.vocab_size < args.vocab_size:  # hard_vocab_limit=False: a small corpus stops short of the request
        print(f"warning: the corpus yields only {tok.vocab_size:,} sentencepiece pieces, fewer than --vocab-size "
              f"{args.vocab_size:,}; the model's vocab_size must equal the tokenizer's: set "
              f"--vocab_size={tok.vocab_size} in the training config (meta.json records {tok.vocab_size})",
              file=sys.stderr)
    return tok


def slice_tag(args) -> str:
    return f"s{args.shard_index:03d}of{args.num_shards:03d}" if args.num_shards > 1 else ""


def owned_files(out: Path, args) -> list[Path]:
    """Files in OUT that this run writes (its shards, meta, tokenizer.model, _INCOMPLETE marker, and their
    temporaries): what --overwrite replaces and a failed run removes. Any other file is never touched."""
    tag = slice_tag(args)
    prefix = f"{args.prefix}-{tag}" if tag else args.prefix
    names = [rf"{re.escape(prefix)}_(?:train|val)_\d{{6}}\.bin",
             re.escape(f"meta-{tag}.json" if tag else token_shards.META_FILE),
             re.escape(token_shards.INCOMPLETE_MARKER + (f"-{tag}" if tag else ""))]
    if not tag:  # slices share one model, made by --tokenizer-only
        names.append(re.escape(tokenization.SP_MODEL_FILE))
    own = re.compile(rf"(?:{'|'.join(names)})|\.(?:{'|'.join(names)})\.tmp\d+")
    given = Path(args.sp_model).resolve() if args.sp_model else None  # an input, even when it lies in OUT
    return sorted(p for p in out.iterdir() if p.is_file() and own.fullmatch(p.name) and p.resolve() != given)


def check_out_dir(out: Path, args) -> None:
    """--out is a directory or absent, and holds no files (slices: none of this slice's) unless --overwrite."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a directory (it is created if missing)")
    if not out.exists() or args.overwrite:
        return
    used = owned_files(out, args) if args.num_shards > 1 else sorted(out.iterdir())
    used = [p for p in used if p.name != "input.txt"]  # shakespeare download cache
    marker = next((p for p in used if p.name.startswith(token_shards.INCOMPLETE_MARKER)), None)
    if marker is not None:
        raise FileExistsError(f"{out} holds an unfinished preparation ({marker.name}: a run was killed); pass "
                              f"--overwrite to redo it")
    if used:
        raise FileExistsError(f"output directory {out} already holds {used[0].name} (and {len(used) - 1} more); pass "
                              f"--overwrite to replace the files prepare_data.py writes (others are kept), or choose "
                              f"another --out")


def prepare_out_dir(out: Path, args) -> bool:
    """Check --out, remove this run's own files from it (--overwrite), create it; returns whether it was created."""
    check_out_dir(out, args)
    if not out.exists():
        out.mkdir(parents=True)
        return True
    for p in owned_files(out, args):
        p.unlink()
    return False


def remove_partial(out: Path, args, created: bool) -> None:
    """A failed run takes back what it wrote, so the corrected retry starts clean (no _INCOMPLETE left)."""
    for p in owned_files(out, args):
        p.unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()


# ----------------------------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="presets: " + ", ".join(PRESETS))
    p.add_argument("source", nargs="?", help="preset name, local file/directory, or hub dataset name")
    p.add_argument("--input", help="local file or directory to read (e.g. a copy of the preset's corpus)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files this script wrote in --out before (other files are kept)")
    g = p.add_argument_group("source")
    g.add_argument("--name", help="hub dataset config / subset")
    g.add_argument("--split", help="dataset split to read (default: train)")
    g.add_argument("--text-field", help="column holding the text (default: text)")
    g.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                   help="stream instead of downloading first (default: on for local files and fineweb-edu)")
    g.add_argument("--sample-by", choices=["document", "paragraph", "line"], default="document",
                   help=".txt inputs: one document per file, per blank-line paragraph, or per line")
    g.add_argument("--max-docs", type=int, help="only the first N documents (quick tries)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of local .txt/.jsonl/.json/.csv files")
    g.add_argument("--errors", choices=["strict", "replace", "ignore"], default="strict",
                   help="bytes invalid in --encoding: stop naming the file and offset (strict), replace them with "
                        "U+FFFD, or drop them")
    g.add_argument("--cache-dir", help="datasets cache directory")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", choices=["gpt2", "sentencepiece", "char"],
                   help="char: nanoGPT's one id per distinct character of the corpus (no special tokens)")
    g.add_argument("--tiktoken-file", help="GPT-2 ranks file for offline use (else env TIKTOKEN_GPT2_FILE, "
                                           "else tiktoken's download / TIKTOKEN_CACHE_DIR)")
    g.add_argument("--sp-model", help="existing sentencepiece .model (else one is trained on the corpus)")
    g.add_argument("--vocab-size", type=int, help="sentencepiece vocabulary size (default 8192)")
    g.add_argument("--sp-model-type", choices=["unigram", "bpe", "char", "word"], default="unigram")
    g.add_argument("--byte-fallback", action=argparse.BooleanOptionalAction, default=True,
                   help="sentencepiece: unknown characters become bytes (exact round trip)")
    g.add_argument("--sp-sample-chars", type=int, default=200_000_000,
                   help="sentencepiece trains on at most this many characters from the corpus start")
    g.add_argument("--sp-character-coverage", type=float, help="default 0.9995 (1.0 for char models)")
    g.add_argument("--tokenizer-only", action="store_true", help="only train and save tokenizer.model")
    g.add_argument("--boundary", choices=["eot", "bos_eos", "none"],
                   help="document boundaries: EOT before each doc (gpt2 default), BOS doc EOS "
                        "(sentencepiece default) or none")
    g = p.add_argument_group("output")
    g.add_argument("--prefix", help="shard file name prefix")
    g.add_argument("--shard-size", type=int, help="train tokens per shard (default 100M)")
    g.add_argument("--val-tokens", type=int, help="validation tokens, taken as whole documents from the start")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="shakespeare presets: fraction of characters for val")
    g.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1), help="tokenizer processes")
    g.add_argument("--num-shards", type=int, default=1, help="split the work into K slices (machines)")
    g.add_argument("--shard-index", type=int, default=0, help="which slice this run prepares (0..K-1)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the preset (if SOURCE names one), then from general defaults."""
    if args.source is None and args.input is None:
        raise SystemExit("give a SOURCE (preset, path or hub dataset) or --input PATH")
    args.preset = args.source if args.source in PRESETS else None
    preset = PRESETS.get(args.preset, Preset())
    if args.input is not None:
        args.local = Path(args.input).expanduser()
    elif args.preset is None and (Path(args.source).expanduser().exists() or looks_like_path(args.source)):
        args.local = Path(args.source).expanduser()
    else:
        args.local = None
    try:
        codecs.lookup(args.encoding)
    except LookupError:
        raise SystemExit(f"--encoding {args.encoding!r} is not an encoding Python knows (e.g. utf-8, latin-1, "
                         f"cp1252, utf-16)") from None
    args.dataset = preset.dataset if args.preset else args.source
    for key in ("name", "split", "text_field", "tokenizer", "vocab_size", "prefix", "val_tokens", "shard_size"):
        if getattr(args, key) is None:
            setattr(args, key, getattr(preset, key))
    if args.streaming is None:
        args.streaming = True if args.local else preset.streaming
    if args.vocab_size is None:
        args.vocab_size = 8192
    if args.tokenizer == "sentencepiece" and not args.sp_model and args.vocab_size > token_shards.MAX_VOCAB:
        raise SystemExit(f"--vocab-size {args.vocab_size:,} is over the uint16 shard limit of {token_shards.MAX_VOCAB:,} "
                         f"ids; use at most {token_shards.MAX_VOCAB:,}")
    if args.boundary is None:
        fits = preset.boundary == "none" or args.tokenizer == preset.tokenizer
        args.boundary = (preset.boundary if preset.boundary and fits else "none" if args.tokenizer == "char" else
                         "eot" if args.tokenizer == "gpt2" else "bos_eos")
    if not 0 <= args.shard_index < args.num_shards:
        raise SystemExit(f"--shard-index {args.shard_index} must be in [0, {args.num_shards})")
    if args.shard_size < 1 or args.val_tokens < 0 or args.num_proc < 1:
        raise SystemExit("--shard-size and --num-proc must be >= 1, --val-tokens >= 0")
    if not 0 <= args.val_fraction < 1:
        raise SystemExit("--val-fraction must be in [0, 1)")
    if args.tokenizer_only:
        args.num_shards, args.shard_index = 1, 0
    if args.num_shards > 1 and args.tokenizer == "sentencepiece" and not args.sp_model:
        raise ValueError("slices need one shared sentencepiece model: create it once with --tokenizer-only, "
                         "then pass --sp-model OUT/tokenizer.model to every slice")
    if preset.one_text and args.num_shards > 1:
        raise SystemExit(f"the {args.preset} preset is a single text; it cannot be sliced")
    check_char_args(args)
    return args


def check_char_args(args: argparse.Namespace) -> None:
    """The char tokenizer has no special tokens and is made from the whole corpus: no boundaries, no slices."""
    if args.tokenizer != "char":
        return
    if args.boundary != "none":
        raise SystemExit(f"--boundary {args.boundary} needs special tokens, which the char tokenizer has none of "
                         f"(like nanoGPT's char data); use --boundary none")
    if args.num_shards > 1:
        raise SystemExit("the char tokenizer is the characters of the whole corpus, which slices cannot share; "
                         "prepare it in one run (--num-shards 1)")


def check_boundary(tok, boundary: str) -> None:
    needed = {"eot": ["eot_id"], "bos_eos": ["bos_id", "eos_id"], "none": []}[boundary]
    missing = [n for n in needed if getattr(tok, n) is None]
    if missing:
        raise ValueError(f"--boundary {boundary} needs {', '.join(missing)}, which the {tok.kind} tokenizer lacks")


def prepare(args: argparse.Namespace) -> dict:
    """Run the whole preparation; returns the meta dict written to disk. Bad input stops before any work;
    a run that fails later removes what it wrote."""
    out = Path(args.out)
    t0 = time.time()
    check_inputs(args)
    check_out_dir(out, args)
    tok = None
    if args.tokenizer == "gpt2" or (args.tokenizer == "sentencepiece" and args.sp_model):
        tok = make_tokenizer(args, None)          # fail fast, before reading the corpus
        tokenization.check_vocab_fits(tok)
    created = prepare_out_dir(out, args)
    try:
        return write_prepared(args, out, tok, t0)
    except BaseException:
        remove_partial(out, args, created)
        raise


def write_prepared(args: argparse.Namespace, out: Path, tok, t0: float) -> dict:
    """Read the corpus, make the tokenizer if needed, write the shards and meta.json into `out`."""
    corpus = shakespeare_corpus(args) if _is_one_text(args) else dataset_corpus(args)
    if tok is None:
        tok = make_tokenizer(args, corpus)
        tokenization.check_vocab_fits(tok)
    if tok.kind == "sentencepiece":
        tok.save(out / tokenization.SP_MODEL_FILE)
    if args.tokenizer_only:
        print(f"wrote {out / tokenization.SP_MODEL_FILE}" if tok.kind == "sentencepiece" else
              f"the {tok.kind} tokenizer needs no model file")
        return {"tokenizer": tok.spec()}
    check_boundary(tok, args.boundary)
    tag = slice_tag(args)
    marker = out / (token_shards.INCOMPLETE_MARKER + (f"-{tag}" if tag else ""))
    marker.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
    writer = SplitWriter(out, f"{args.prefix}-{tag}" if tag else args.prefix, args.shard_size)
    run_tokenization(corpus, tok, writer, args)
    meta = build_meta(args, tok, corpus, writer, time.time() - t0)
    meta_name = f"meta-{tag}.json" if tag else token_shards.META_FILE
    token_shards.atomic_write_bytes(out / meta_name, json.dumps(meta, indent=1).encode())
    marker.unlink()
    n = meta["num_tokens"]
    print(f"wrote {len(writer.shards)} shards to {out}: val {n['val']:,} tokens, train {n['train']:,} tokens "
          f"({meta['seconds']:.1f}s)")
    return meta


def _is_dataset_input(args) -> bool:
    """shakespeare preset with a directory / non-.txt --input goes through datasets."""
    return args.input is not None and (Path(args.input).is_dir() or _builder_for(Path(args.input)) not in ("text", None))


def _is_one_text(args) -> bool:
    """A shakespeare preset on its text (a download or a .txt --input): split by characters like nanoGPT."""
    return PRESETS.get(args.preset, Preset()).one_text and not _is_dataset_input(args)


def run_tokenization(corpus: Corpus, tok, writer: SplitWriter, args) -> None:
    progress = Progress(corpus.num_docs, args.quiet)
    try:
        if corpus.docs is None:   # explicit val / train texts
            write_stream(tokenize_stream(corpus.val_docs, tok, args.boundary, args.num_proc, progress),
                         writer, val_tokens=1 << 62)
            write_stream(tokenize_stream(corpus.train_docs, tok, args.boundary, args.num_proc, progress),
                         writer, val_tokens=0)
        else:
            val_tokens = args.val_tokens if args.shard_index == 0 else 0
            write_stream(tokenize_stream(corpus.docs, tok, args.boundary, args.num_proc, progress),
                         writer, val_tokens=val_tokens)
            if args.num_shards > 1 and writer.val_count < val_tokens:
                raise ValueError(f"slice 0 holds only {writer.val_count:,} tokens, fewer than --val-tokens "
                                 f"{val_tokens:,}; use fewer slices or a smaller --val-tokens")
    finally:
        progress.close()
    if writer.num_tokens()["train"] == 0:
        raise ValueError(no_train_advice(corpus, writer, args))


def no_train_advice(corpus: Corpus, writer: SplitWriter, args) -> str:
    """Why every token went to val, and a setting that leaves some for training."""
    n = writer.num_tokens()["val"]
    if corpus.docs is None:
        return (f"no train tokens: the text is too short for a train part (--val-fraction {args.val_fraction:g}); "
                f"use a longer text or a smaller --val-fraction")
    keep = writer.val_doc_ends[0]   # val tokens before the last document
    if keep:
        return (f"no train tokens: all {writer.docs['val']:,} documents ({n:,} tokens) went to val, which takes whole "
                f"documents until it holds --val-tokens {args.val_tokens}; use --val-tokens {keep} or less")
    split = (" (--sample-by paragraph or line for .txt, or the shakespeare preset's character split: "
             "`prepare_data.py shakespeare --input FILE.txt`)" if corpus.describe.get("sample_by") else "")
    return (f"no train tokens: the corpus is one document ({n:,} tokens) and val takes whole documents, so it all "
            f"went to val; split it into documents{split}, or pass --val-tokens 0 (no val split: train with "
            f"--eval_iters=0)")


def build_meta(args, tok, corpus: Corpus, writer: SplitWriter, seconds: float) -> dict:
    meta = {"format": 1, "created_by": "prepare_data.py", "prefix": args.prefix, "tokenizer": tok.spec(),
            "boundary": args.boundary, "source": corpus.describe, "shard_size": args.shard_size,
            "val_tokens": None if corpus.docs is None else args.val_tokens, "num_docs": writer.docs, "num_tokens": writer.num_tokens(),
            "shards": writer.shards, "seconds": round(seconds, 3)}
    if args.num_shards > 1:
        meta["slice"] = {"index": args.shard_index, "count": args.num_shards}
    return meta


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        return prepare(resolve_args(args))
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # bad input: one line, no traceback
        sys.exit(f"prepare_data.py: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}")


if __name__ == "__main__":
    main()
