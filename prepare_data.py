"""Tokenize a text corpus into llm.c-format uint16 shards plus meta.json.

Examples:
    python prepare_data.py shakespeare --input ../shared/data/tinyshakespeare.txt --out data/shakespeare
    python prepare_data.py shakespeare --tokenizer sentencepiece --vocab-size 2048 --out data/shakespeare_sp
    python prepare_data.py fineweb-edu-10B --out data/fineweb10B --num-proc 16
    python prepare_data.py news-tr --out data/news_tr                      # sentencepiece 8192, BOS...EOS
    python prepare_data.py my_corpus.jsonl --text-field content --out data/mine
    python prepare_data.py HuggingFaceFW/fineweb --name sample-10BT --streaming --out data/fw

SOURCE is a preset (shakespeare, fineweb-edu-10B, news-tr, openwebtext), a local file or directory
(.txt, .jsonl/.json, .parquet, .csv, or a dataset saved with save_to_disk), or a Hugging Face hub
dataset name. `--input PATH` reads a local copy instead of the preset's download.

Output (--out DIR): {prefix}_val_000000.bin, {prefix}_train_000001.bin, ... (llm.c format), meta.json,
and tokenizer.model for sentencepiece. The validation split is the first --val-tokens tokens of the
corpus in whole documents (the shakespeare preset instead uses nanoGPT's split: the last 10% of
the characters). While the script runs, DIR/_INCOMPLETE exists, and loaders refuse the directory.

Slices for several machines: `--num-shards K --shard-index i` tokenizes the i-th of K contiguous,
disjoint parts of the corpus (split by data file for streamed datasets, by row otherwise) into
files named {prefix}-s{i:03d}of{K:03d}_..., with meta-s{i:03d}of{K:03d}.json. Copy all slices into
one directory; data.read_meta() merges them. The validation split is the start of the corpus, so
slice 0 writes it and slices 1..K-1 write only train shards: slice 0's train tokens followed by
slice 1's, ... are exactly the train tokens of a single run, and the val shard is identical.
A sentencepiece model must be shared by all slices: make it once with --tokenizer-only and pass it
to every slice with --sp-model.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import data

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CHUNK_CHARS = 1 << 17      # long documents are cut into ~128K-character pieces (see data.split_text)
BATCH_CHARS = 1 << 20      # characters per task sent to a worker process


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
    prefix: str = "data"
    val_tokens: int = 1_000_000
    shard_size: int = 100_000_000


PRESETS = {
    "shakespeare": Preset(prefix="shakespeare", boundary="none"),
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

    def add_val(self, tokens: np.ndarray) -> None:
        self.val_parts.append(tokens)
        self.val_count += len(tokens)

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
        name = data.shard_name(self.prefix, split, index)
        data.write_shard(self.out / name, tokens)
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
    _WORKER["tok"] = data.tokenizer_from_spec(spec, tiktoken_file)


def _worker_encode(boundary: str, items: list) -> tuple[np.ndarray, np.ndarray]:
    return encode_items(_WORKER["tok"], boundary, items)


def make_tasks(docs: Iterable[str], splittable: bool) -> Iterator[list]:
    """Group documents into tasks of about BATCH_CHARS characters; long documents are cut into
    pieces (when the tokenizer allows it) so that one big text still uses every process."""
    items, size = [], 0
    for doc in docs:
        pieces = data.split_text(doc, CHUNK_CHARS) if splittable else [doc]
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
    """Tiny Shakespeare split like nanoGPT's data/shakespeare: val = last val_fraction of the
    characters, train = the rest; each encoded as one text, without boundary tokens."""
    path = Path(args.input) if args.input else Path(args.out) / "input.txt"
    if not args.input and not path.exists():
        print(f"downloading {SHAKESPEARE_URL} -> {path}")
        urllib.request.urlretrieve(SHAKESPEARE_URL, path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"empty corpus: {path} is empty")
    cut = int(len(text) * (1 - args.val_fraction))
    return Corpus(describe={"preset": "shakespeare", "path": str(path), "chars": len(text),
                            "val": f"last {args.val_fraction:g} of the characters (text[{cut}:])"},
                  val_docs=[text[cut:]] if cut < len(text) else [], train_docs=[text[:cut]],
                  sample_docs=[text])


LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _builder_for(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2", ".xz", ".zst")]
    return LOCAL_BUILDERS.get(suffixes[-1]) if suffixes else None


def _is_text_input(path: Path) -> bool:
    if path.is_dir():
        return any(_builder_for(p) == "text" for p in path.rglob("*.txt*"))
    return _builder_for(path) == "text"


def load_local(path: Path, args):
    """A local file / directory as a datasets Dataset (or IterableDataset when streaming)."""
    import datasets
    if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if args.split not in ds:
                raise ValueError(f"{path}: no split {args.split!r}; splits found: {list(ds)}")
            ds = ds[args.split]
        return ds
    files = sorted(p for p in path.rglob("*") if p.is_file() and _builder_for(p)) if path.is_dir() else [path]
    builders = {_builder_for(p) for p in files}
    if not files or None in builders or len(builders) != 1:
        raise ValueError(f"{path}: need .txt, .jsonl/.json, .parquet or .csv files of a single kind, "
                         f"found {sorted(str(b) for b in builders) or 'none'}")
    if all(p.stat().st_size == 0 for p in files):
        raise ValueError(f"empty corpus: {path} has no data")
    builder = builders.pop()
    kwargs = {"sample_by": args.sample_by, "keep_linebreaks": True} if builder == "text" else {}
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
        return data.gpt2_tokenizer(args.tiktoken_file)
    if args.sp_model:
        return data.load_sentencepiece(args.sp_model)
    t0 = time.time()
    tok = data.train_sentencepiece(corpus.sample_docs, args.vocab_size, args.sp_model_type,
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
    """Files in OUT that this run would (re)write, i.e. what --overwrite removes."""
    tag = slice_tag(args)
    if tag:
        patterns = [f"{args.prefix}-{tag}_*", f"meta-{tag}.json*", f"{data.INCOMPLETE_MARKER}-{tag}"]
    else:
        patterns = ["meta*.json*", "*_train_*.bin*", "*_val_*.bin*", "*_train_*.npy", "*_val_*.npy",
                    "train.bin", "val.bin", data.SP_MODEL_FILE + "*", data.INCOMPLETE_MARKER + "*"]
    return sorted({p for pat in patterns for p in out.glob(pat) if p.is_file()})


def prepare_out_dir(out: Path, args) -> None:
    """Refuse a used output directory unless --overwrite (then remove only our own files)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    mine = owned_files(out, args) if out.exists() else []
    used = mine if args.num_shards > 1 else ([p for p in out.iterdir()] if out.exists() else [])
    used = [p for p in used if p.name != "input.txt"]  # shakespeare download cache
    if used and not args.overwrite:
        raise FileExistsError(f"output directory {out} already holds {used[0].name} (and {len(used) - 1} more); "
                              f"pass --overwrite to replace it")
    for p in mine:
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="presets: " + ", ".join(PRESETS))
    p.add_argument("source", nargs="?", help="preset name, local file/directory, or hub dataset name")
    p.add_argument("--input", help="local file or directory to read (e.g. a copy of the preset's corpus)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace the shards already in --out")
    g = p.add_argument_group("source")
    g.add_argument("--name", help="hub dataset config / subset")
    g.add_argument("--split", help="dataset split to read (default: train)")
    g.add_argument("--text-field", help="column holding the text (default: text)")
    g.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                   help="stream instead of downloading first (default: on for local files and fineweb-edu)")
    g.add_argument("--sample-by", choices=["document", "paragraph", "line"], default="document",
                   help=".txt inputs: one document per file, per blank-line paragraph, or per line")
    g.add_argument("--max-docs", type=int, help="only the first N documents (quick tries)")
    g.add_argument("--cache-dir", help="datasets cache directory")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", choices=["gpt2", "sentencepiece"])
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
    g.add_argument("--val-fraction", type=float, default=0.1, help="shakespeare: fraction of characters for val")
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
        args.local = Path(args.input)
    elif args.preset is None and Path(args.source).exists():
        args.local = Path(args.source)
    else:
        args.local = None
    args.dataset = preset.dataset if args.preset else args.source
    for key in ("name", "split", "text_field", "tokenizer", "vocab_size", "prefix", "val_tokens", "shard_size"):
        if getattr(args, key) is None:
            setattr(args, key, getattr(preset, key))
    if args.streaming is None:
        args.streaming = True if args.local else preset.streaming
    if args.vocab_size is None:
        args.vocab_size = 8192
    if args.tokenizer == "sentencepiece" and not args.sp_model and args.vocab_size > data.MAX_VOCAB:
        raise SystemExit(f"--vocab-size {args.vocab_size:,} is over the uint16 shard limit of {data.MAX_VOCAB:,} "
                         f"ids; use at most {data.MAX_VOCAB:,}")
    if args.boundary is None:
        fits = preset.boundary == "none" or args.tokenizer == preset.tokenizer
        args.boundary = (preset.boundary if preset.boundary and fits else
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
    if args.preset == "shakespeare" and args.num_shards > 1:
        raise SystemExit("the shakespeare preset is a single text; it cannot be sliced")
    return args


def check_boundary(tok, boundary: str) -> None:
    needed = {"eot": ["eot_id"], "bos_eos": ["bos_id", "eos_id"], "none": []}[boundary]
    missing = [n for n in needed if getattr(tok, n) is None]
    if missing:
        raise ValueError(f"--boundary {boundary} needs {', '.join(missing)}, which the {tok.kind} tokenizer lacks")


def prepare(args: argparse.Namespace) -> dict:
    """Run the whole preparation; returns the meta dict written to disk."""
    out = Path(args.out)
    t0 = time.time()
    tok = None
    if args.tokenizer == "gpt2" or args.sp_model:
        tok = make_tokenizer(args, None)          # fail fast, before reading the corpus
        data.check_vocab_fits(tok)
    prepare_out_dir(out, args)
    corpus = shakespeare_corpus(args) if args.preset == "shakespeare" and not _is_dataset_input(args) \
        else dataset_corpus(args)
    if tok is None:
        tok = make_tokenizer(args, corpus)
        data.check_vocab_fits(tok)
    if tok.kind == "sentencepiece":
        tok.save(out / data.SP_MODEL_FILE)
    if args.tokenizer_only:
        print(f"wrote {out / data.SP_MODEL_FILE}" if tok.kind == "sentencepiece" else "gpt2 needs no model file")
        return {"tokenizer": tok.spec()}
    check_boundary(tok, args.boundary)
    tag = slice_tag(args)
    marker = out / (data.INCOMPLETE_MARKER + (f"-{tag}" if tag else ""))
    marker.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
    writer = SplitWriter(out, f"{args.prefix}-{tag}" if tag else args.prefix, args.shard_size)
    run_tokenization(corpus, tok, writer, args)
    meta = build_meta(args, tok, corpus, writer, time.time() - t0)
    meta_name = f"meta-{tag}.json" if tag else data.META_FILE
    data.atomic_write_bytes(out / meta_name, json.dumps(meta, indent=1).encode())
    marker.unlink()
    n = meta["num_tokens"]
    print(f"wrote {len(writer.shards)} shards to {out}: val {n['val']:,} tokens, train {n['train']:,} tokens "
          f"({meta['seconds']:.1f}s)")
    return meta


def _is_dataset_input(args) -> bool:
    """shakespeare preset with a directory / non-.txt --input goes through datasets."""
    return args.input is not None and (Path(args.input).is_dir() or _builder_for(Path(args.input)) not in ("text", None))


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
    counts = writer.num_tokens()
    if counts["train"] == 0:
        hint = ""
        if corpus.describe.get("sample_by") == "document":
            hint = (" (each .txt file is one document: try --sample-by paragraph, or the shakespeare preset's "
                    "character split: `prepare_data.py shakespeare --input FILE.txt`)")
        raise ValueError(f"no train tokens: the corpus has {counts['val']:,} tokens and all of them went to val "
                         f"(--val-tokens {args.val_tokens:,}); use a smaller --val-tokens{hint}")


def build_meta(args, tok, corpus: Corpus, writer: SplitWriter, seconds: float) -> dict:
    meta = {"format": 1, "created_by": "prepare_data.py", "prefix": args.prefix, "tokenizer": tok.spec(),
            "boundary": args.boundary, "source": corpus.describe, "shard_size": args.shard_size,
            "val_tokens": None if corpus.docs is None else args.val_tokens, "num_docs": writer.docs, "num_tokens": writer.num_tokens(),
            "shards": writer.shards, "seconds": round(seconds, 3)}
    if args.num_shards > 1:
        meta["slice"] = {"index": args.shard_index, "count": args.num_shards}
    return meta


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(build_parser().parse_args(argv))
    return prepare(args)


if __name__ == "__main__":
    main()
