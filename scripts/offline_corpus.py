"""A few million tokens of varied English from files already on disk, for quality comparisons on machines that
cannot reach FineWeb (issue 15's "speedrun vs gpt2_124m at 124M on the same tokens" on an offline GPU).

    python scripts/offline_corpus.py ../shared/data /tmp/offline_corpus.txt
    python prepare_data.py /tmp/offline_corpus.txt --sample-by paragraph --tokenizer gpt2 --boundary eot \
        --tiktoken-file ../shared/data/gpt2.tiktoken --val-tokens 250000 --out data/offline_corpus

One document per paragraph: every Tiny Shakespeare paragraph, and every row of the evaluation sets (HellaSwag
with its gold ending, and the jsonl files under evals/) as its string fields joined in order. Models trained on
it have seen those benchmarks' text: compare validation losses with it, never downstream scores.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def row_text(row: dict) -> str:
    """A row's strings in field order (lists of strings too), one line; HellaSwag keeps only its gold ending."""
    if "endings" in row and "label" in row:
        row = {"ctx": row["ctx"], "ending": row["endings"][int(row["label"])]}
    parts = []
    for value in row.values():
        values = value if isinstance(value, list) else [value]
        parts += [v.strip() for v in values if isinstance(v, str) and len(v.strip()) > 1]
    return " ".join(" ".join(parts).split())


def documents(shared: Path):
    for paragraph in (shared / "tinyshakespeare.txt").read_text().split("\n\n"):
        if paragraph.strip():
            yield " ".join(paragraph.split())
    files = [shared / "hellaswag_val.jsonl", *sorted((shared / "evals").glob("*.jsonl"))]
    for path in files:
        for line in path.read_text().split("\n"):          # (splitlines would also cut at U+2028 inside strings)
            if line.strip() and (text := row_text(json.loads(line))):
                yield text


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python scripts/offline_corpus.py SHARED_DATA_DIR OUT.txt")
    shared, out = Path(argv[0]), Path(argv[1])
    docs = list(documents(shared))
    out.write_text("\n\n".join(docs) + "\n")
    print(f"{out}: {len(docs):,} documents, {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
