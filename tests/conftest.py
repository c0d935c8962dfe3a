"""Shared test fixtures: locate ../shared/data and make the repo importable."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
if (SHARED_DATA / "gpt2.tiktoken").exists():
    # data.gpt2_tokenizer() reads this, so every test tokenizes offline.
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
