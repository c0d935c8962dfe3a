"""Shared test fixtures: locate ../shared/data and make the repo importable."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
if (SHARED_DATA / "gpt2.tiktoken").exists():
    # tokenization.gpt2_tokenizer() reads this, so every test tokenizes offline.
    os.environ.setdefault("TIKTOKEN_GPT2_FILE", str(SHARED_DATA / "gpt2.tiktoken"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gpt2_tiktoken_file(shared_data) -> Path:
    return shared_data / "gpt2.tiktoken"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and DDP tests' worker processes don't fight for CI's 2 cores."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_token_dataset(out: Path, tokenizer, val_ids, train_ids, prefix: str = "t") -> Path:
    """A minimal prepared-data directory (one val and one train shard + meta.json), as prepare_data.py writes."""
    import json

    import numpy as np

    import token_shards
    out.mkdir(parents=True, exist_ok=True)
    shards = [(token_shards.shard_name(prefix, "val", 0), "val", val_ids), (token_shards.shard_name(prefix, "train", 1), "train", train_ids)]
    for name, _, ids in shards:
        token_shards.write_shard(out / name, np.asarray(ids, dtype=np.uint16))
    meta = {"format": 1, "prefix": prefix, "tokenizer": tokenizer.spec(),
            "shards": [{"file": n, "split": s, "tokens": int(len(ids))} for n, s, ids in shards]}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="session")
def char_data(shared_data, tmp_path_factory) -> Path:
    """Tiny Shakespeare (first 300k characters) as char-level sentencepiece shards + meta.json."""
    import numpy as np

    import tokenization
    text = (shared_data / "tinyshakespeare.txt").read_text()[:300_000]
    tok = tokenization.train_sentencepiece([text], vocab_size=128, model_type="char", byte_fallback=False)
    ids = np.asarray(tok.encode(text), dtype=np.uint16)
    n_val = len(ids) // 10
    return write_token_dataset(tmp_path_factory.mktemp("char_data"), tok, ids[-n_val:], ids[:-n_val], prefix="char")


@pytest.fixture(scope="session")
def shakespeare(shared_data) -> str:
    return (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def gpt2(gpt2_tiktoken_file):
    import tokenization
    return tokenization.gpt2_tokenizer(gpt2_tiktoken_file)


@pytest.fixture(scope="session")
def sp_tok(shakespeare):
    """A small sentencepiece model trained on the first 100k characters of Tiny Shakespeare."""
    import tokenization
    return tokenization.train_sentencepiece([shakespeare], vocab_size=512, model_type="unigram", max_chars=100_000)
