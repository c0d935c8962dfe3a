"""Token shards: the llm.c file format, meta.json, and atomic writes (temp file, then rename).

prepare_data.py writes shards and meta.json; data.py reads them into batches; tokenization.py reads the
tokenizer meta.json records. Importing this module is cheap (numpy only).

Shard format (the one llm.c uses): a header of 256 little-endian int32 (magic 20240520, version 1,
number of tokens, rest zero), then the tokens as little-endian uint16. The reader also accepts
build-nanogpt `.npy` shards and nanoGPT's headerless `train.bin` / `val.bin`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_VOCAB = 1 << 16                 # token ids must fit in uint16 (largest id 65,535)
META_FILE = "meta.json"
INCOMPLETE_MARKER = "_INCOMPLETE"   # present while prepare_data.py writes a directory


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
    problem = char_spec_problem(spec) if spec.get("kind") == "char" else None
    if problem:
        raise bad(*problem)


def chars_sha256(chars: list[str]) -> str:
    """The identity of a char tokenizer: sha256 of its characters in id order, as UTF-8."""
    return hashlib.sha256("".join(chars).encode("utf-8", "surrogatepass")).hexdigest()


def char_spec_problem(spec: dict) -> tuple[str, object, str] | None:
    """(field, value, what it must be) for the first fault of a char tokenizer spec, or None. The spec is untrusted
    (meta.json, a checkpoint): its chars must be distinct single characters, as many as vocab_size, with its sha256."""
    chars = spec.get("chars")
    if not isinstance(chars, list):
        return "tokenizer.chars", _brief(chars), "must be a list of single characters"
    if not 1 <= len(chars) <= MAX_VOCAB:
        return "len(tokenizer.chars)", len(chars), f"must be in [1, {MAX_VOCAB:,}] (uint16 shards)"
    seen: set[str] = set()
    for i, c in enumerate(chars):
        if not (isinstance(c, str) and len(c) == 1):
            return f"tokenizer.chars[{i}]", _brief(c), "must be a single character"
        if c in seen:
            return f"tokenizer.chars[{i}]", c, "appears twice (one id per character)"
        seen.add(c)
    if spec.get("vocab_size", len(chars)) != len(chars):
        return "tokenizer.vocab_size", spec.get("vocab_size"), f"must be the number of chars ({len(chars)})"
    digest = chars_sha256(chars)
    if spec.get("sha256", digest) != digest:
        return "tokenizer.sha256", spec.get("sha256"), f"is not the sha256 of its chars ({digest[:12]}...)"
    return None


def _brief(value):
    """value for an error message, or its type's name where its repr is long."""
    return value if len(repr(value)) <= 40 else f"<{type(value).__name__}>"


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



# ----------------------------------------------------------------------------------------------
# Documents

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

