"""
Downstream evaluation: one scoring engine for multiple-choice, yes/no and last-word tasks, and a
multi-task score (each task's accuracy centred on its random baseline, then averaged).

    python evaluate.py --ckpt out/run --tasks all                      # every task, and the score over them
    python evaluate.py --ckpt out/run --tasks quick                    # a fast subset (200 examples a task)
    python evaluate.py --ckpt out/run --tasks piqa,arc_easy --limit 500 --shots 5 --style completion --out r.json
    python evaluate.py --ckpt out/run --tasks all,-lambada             # a suite minus a task
    torchrun --standalone --nproc_per_node=8 evaluate.py --ckpt out/run --tasks all    # examples split over ranks

Tasks: hellaswag, piqa, arc_easy, arc_challenge, winogrande, openbookqa, sciq, boolq, copa, commonsense_qa,
social_i_qa, mmlu (shots from its dev split) and lambada (last-word accuracy and perplexity).
Data: local jsonl files with the hub's fields (`--data-dir DIR` or $EVALS_DIR; see TASKS for the file
names; HellaSwag also $HELLASWAG_FILE), else the hub through `datasets` (HellaSwag: the original release).

Scoring styles; every number says which it is, and the two are not comparable:
  harness     lm-evaluation-harness's prompts and rules. The context and the continuation are encoded
              together and the continuation is what follows the context's own tokens.
              acc = highest summed log-likelihood; acc_norm = highest log-likelihood per character.
  completion  llm.c / "Let's reproduce GPT-2": context and continuation encoded separately.
              acc = lowest summed token loss; acc_norm = lowest mean token loss.
Ties go to the first choice. Few-shot prompts (--shots k): k solved examples, each followed by a blank
line, drawn deterministically (seeded by task and item) from the task's shot split when it can be loaded
(MMLU: the first k dev examples of the item's subject), else from the scored split without the item.

The score: per task, centred = (acc - random) / (1 - random) on the task's headline metric (see
Task.metric), where random is the expected accuracy of guessing (the mean of 1/number of choices); the
suite score is the mean over its tasks. 0 is chance, 1 is perfect, below 0 is worse than chance.
Suites: all (every task; for LAMBADA its accuracy, not its perplexity) and quick (six fast tasks, 200
examples each, for use inside training). `all` was called `core` and is not nanochat's CORE (the DCLM
paper's 22 tasks with their own prompts and shots; see the README): the two scores do not compare.

Speed: the engine encodes every request first, then scores them together: identical inputs and inputs
that are a prefix of another (MMLU's " A"/" B"/" C"/" D", BoolQ's " no"/" yes") share one row, rows are
sorted by length and batched to a token budget, and the output layer runs only at scored positions.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

import runtime
from load import add_model_args, load_model
from token_shards import atomic_path
from tokenization import UnknownCharacterError

STYLES = ("harness", "completion")
EVALS_ENV = "EVALS_DIR"
HELLASWAG_ENV = "HELLASWAG_FILE"
HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
FEWSHOT_SEPARATOR = "\n\n"
CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET = 8192, 65536  # padded tokens per forward

# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TaskSetup:
    """What is scored, and so what the numbers depend on: the prompt style, the solved examples before each
    item, the first `limit` examples of each task (None: all), and the longest request in tokens (None: the
    model's block_size; a longer context is cut from the left)."""
    style: str = "harness"
    shots: int = 0
    limit: int | None = None
    context: int | None = None


@dataclass(frozen=True)
class Scoring:
    """How the scoring runs, for evaluate.py, hellaswag.py and perplexity.py: the device and its autocast dtype,
    padded tokens per forward, a progress bar or not, and this process's rank among world_size ranks, each
    scoring its share of the examples (perplexity.py: one process). Batching and ranks change no number."""
    device: str | torch.device = "cpu"
    autocast_dtype: torch.dtype | None = None
    token_budget: int = CPU_TOKEN_BUDGET
    progress: bool = False
    rank: int = 0
    world_size: int = 1

# ----------------------------------------------------------------------------- items: text to score
# One builder per task, <task>_item: a line of the task's data -> the Item to score, in the given style.


@dataclass(frozen=True)
class Item:
    """One example as (context, continuation) pairs, one pair per choice; `chars` = each choice's length
    in characters (harness acc_norm)."""
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    chars: tuple[int, ...]

    def solved(self) -> str:
        """The example with its answer, as a few-shot prompt shows it."""
        return self.contexts[self.gold] + self.continuations[self.gold]


def choice(context: str, choices: list[str], gold: int, delimiter: str = " ") -> Item:
    """The usual multiple choice: one context, each choice continues it after `delimiter`."""
    return Item((context,) * len(choices), tuple(delimiter + c for c in choices), gold,
                tuple(len(c) for c in choices))


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness's clean-up of HellaSwag text (WikiHow bracket artifacts)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(doc: dict, style: str) -> Item:
    if style == "completion":  # llm.c: the raw context, each ending after a space
        return choice(doc["ctx"], doc["endings"], int(doc["label"]))
    query = hellaswag_preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
    return choice(query, [hellaswag_preprocess(e) for e in doc["endings"]], int(doc["label"]))


def piqa_item(doc: dict, style: str) -> Item:
    return choice(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], int(doc["label"]))


def arc_item(doc: dict, style: str) -> Item:
    c = doc["choices"]
    return choice(f"Question: {doc['question']}\nAnswer:", c["text"], c["label"].index(doc["answerKey"]))


def winogrande_item(doc: dict, style: str) -> Item:
    """Partial scoring: each option fills the blank, and only the words after the blank are scored."""
    blank = doc["sentence"].index("_")
    rest = " " + doc["sentence"][blank + 1:].strip()
    options = [doc["option1"], doc["option2"]]
    return Item(tuple(doc["sentence"][:blank] + o for o in options), (rest, rest), int(doc["answer"]) - 1,
                (len(rest) - 1,) * 2)


def openbookqa_item(doc: dict, style: str) -> Item:
    c = doc["choices"]
    return choice(doc["question_stem"], c["text"], c["label"].index(doc["answerKey"].lstrip()))


def sciq_item(doc: dict, style: str) -> Item:
    return choice(f"{doc['support'].lstrip()}\nQuestion: {doc['question']}\nAnswer:",
                  [doc["distractor1"], doc["distractor2"], doc["distractor3"], doc["correct_answer"]], 3)


def boolq_item(doc: dict, style: str) -> Item:
    gold = int(doc["answer"]) if "answer" in doc else int(doc["label"])  # google/boolq | super_glue
    return choice(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"], gold)


def copa_item(doc: dict, style: str) -> Item:
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    lower = [" " + c[0].lower() + c[1:] for c in (doc["choice1"], doc["choice2"])]  # harness keeps this space
    return choice(doc["premise"].strip()[:-1] + " " + connector, lower, int(doc["label"]))


def lettered(question: str, options: list[str]) -> str:
    return question + "".join(f"\n{chr(65 + i)}. {o}" for i, o in enumerate(options)) + "\nAnswer:"


def commonsense_qa_item(doc: dict, style: str) -> Item:
    letters = doc["choices"]["label"]
    return choice(lettered("Question: " + doc["question"].strip(), doc["choices"]["text"]), letters,
                  letters.index(doc["answerKey"]))


def social_i_qa_item(doc: dict, style: str) -> Item:
    return choice(f"Q: {doc['context']} {doc['question']}\nA:", [doc["answerA"], doc["answerB"], doc["answerC"]],
                  int(doc["label"]) - 1)


def mmlu_item(doc: dict, style: str) -> Item:
    return choice(lettered(doc["question"].strip(), doc["choices"]), ["A", "B", "C", "D"], int(doc["answer"]))


def mmlu_header(doc: dict) -> str:
    return f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"


def lambada_item(doc: dict, style: str) -> Item:
    words = doc["text"].split(" ")
    return Item((" ".join(words[:-1]),), (" " + words[-1],), 0, (len(words[-1]),))


# ----------------------------------------------------------------------------- the task table


@dataclass(frozen=True)
class Split:
    """Where a split lives: a local file name, else the hub (dataset, config, split), or a URL. The hub copies
    are the ones lm-evaluation-harness reads where the original needs a loading script (piqa, social_i_qa),
    which recent `datasets` no longer runs; same fields as the local files."""
    file: str
    hub: tuple[str, str | None, str]
    url: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    build: Callable[[dict, str], Item]
    fields: tuple[str, ...]                 # keys every line must have
    split: Split                            # the scored split
    shots: Split | None = None              # where few-shot examples come from (None: the scored split)
    metric: str = "acc"                     # the accuracy that the suite score centres
    header: Callable[[dict], str] | None = None  # text before the shots (MMLU's subject line)
    same_subject_shots: bool = False        # MMLU: the first k dev examples of the item's subject


def _split(stem: str, hub: str, config: str | None, split: str) -> Split:
    return Split(f"{stem}_{split}.jsonl", (hub, config, split))


TASKS = {t.name: t for t in (
    Task("hellaswag", hellaswag_item, ("activity_label", "ctx", "ctx_a", "ctx_b", "endings", "label"),
         Split("hellaswag_val.jsonl", ("Rowan/hellaswag", None, "validation"), HELLASWAG_URL),
         _split("hellaswag", "Rowan/hellaswag", None, "train"), metric="acc_norm"),
    Task("piqa", piqa_item, ("goal", "sol1", "sol2", "label"), _split("piqa", "baber/piqa", None, "validation"),
         _split("piqa", "baber/piqa", None, "train"), metric="acc_norm"),
    Task("arc_easy", arc_item, ("question", "choices", "answerKey"),
         _split("arc_easy", "allenai/ai2_arc", "ARC-Easy", "validation"),
         _split("arc_easy", "allenai/ai2_arc", "ARC-Easy", "train"), metric="acc_norm"),
    Task("arc_challenge", arc_item, ("question", "choices", "answerKey"),
         _split("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "validation"),
         _split("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "train"), metric="acc_norm"),
    Task("winogrande", winogrande_item, ("sentence", "option1", "option2", "answer"),
         _split("winogrande_xl", "allenai/winogrande", "winogrande_xl", "validation"),
         _split("winogrande_xl", "allenai/winogrande", "winogrande_xl", "train")),
    Task("openbookqa", openbookqa_item, ("question_stem", "choices", "answerKey"),
         _split("openbookqa", "allenai/openbookqa", "main", "validation"),
         _split("openbookqa", "allenai/openbookqa", "main", "train"), metric="acc_norm"),
    Task("sciq", sciq_item, ("support", "question", "distractor1", "distractor2", "distractor3", "correct_answer"),
         _split("sciq", "allenai/sciq", None, "validation"), _split("sciq", "allenai/sciq", None, "train"),
         metric="acc_norm"),
    Task("boolq", boolq_item, ("passage", "question"), _split("boolq", "google/boolq", None, "validation"),
         _split("boolq", "google/boolq", None, "train")),
    Task("copa", copa_item, ("premise", "choice1", "choice2", "question", "label"),
         _split("copa", "aps/super_glue", "copa", "validation"), _split("copa", "aps/super_glue", "copa", "train")),
    Task("commonsense_qa", commonsense_qa_item, ("question", "choices", "answerKey"),
         _split("commonsense_qa", "tau/commonsense_qa", None, "validation"),
         _split("commonsense_qa", "tau/commonsense_qa", None, "train")),
    Task("social_i_qa", social_i_qa_item, ("context", "question", "answerA", "answerB", "answerC", "label"),
         _split("social_i_qa", "lighteval/siqa", None, "validation"),
         _split("social_i_qa", "lighteval/siqa", None, "train")),
    Task("mmlu", mmlu_item, ("question", "subject", "choices", "answer"),
         _split("mmlu", "hails/mmlu_no_train", "all", "test"),
         _split("mmlu", "hails/mmlu_no_train", "all", "dev"), header=mmlu_header, same_subject_shots=True),
    Task("lambada", lambada_item, ("text",), _split("lambada_openai", "EleutherAI/lambada_openai", "default", "test")),
)}
SUITES = {"all": tuple(TASKS),
          "quick": ("hellaswag", "piqa", "arc_easy", "winogrande", "copa", "boolq")}
SUITE_LIMIT = {"quick": 200}  # examples per task unless --limit says otherwise
RENAMED_SUITES = {"core": "all"}  # old name -> new: 'core' read as nanochat's CORE, which it is not


def check_task_name(key: str) -> None:
    """A task or suite name, else a one-line error (an old suite name: its new one)."""
    if key in RENAMED_SUITES:
        raise ValueError(f"the suite {key!r} is now {RENAMED_SUITES[key]!r}: it is not nanochat's CORE (the DCLM "
                         f"paper's 22 tasks, with their own prompts and shots) and its score does not compare with CORE's")
    if key not in SUITES and key not in TASKS:
        raise ValueError(f"unknown task {key!r}; known tasks: {', '.join(TASKS)}; suites: {', '.join(SUITES)}")


def parse_tasks(spec: str) -> list[str]:
    """'all', 'quick', 'piqa,arc_easy' or 'all,-lambada' -> task names, in order, without repeats."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        drop = part.startswith("-")
        key = part.lstrip("-")
        check_task_name(key)
        group = SUITES.get(key, (key,))
        names = [n for n in names if n not in group] if drop else names + [n for n in group if n not in names]
    if not names:
        raise ValueError(f"the task spec {spec!r} selects no task")
    return names


def default_limit(spec: str) -> int | None:
    """A suite's own per-task limit when the spec names only that suite (quick: 200)."""
    return SUITE_LIMIT.get(spec.strip())


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Flags:
    """How the calling script spells the settings that error messages point to (train.py has its own keys)."""
    data_dir: str | None = "--data-dir"   # the directory of task files (None: the script has none)
    tasks: str | None = "--tasks "        # ...followed by a spec, to leave a task out (None: no such choice)
    data_file: str | None = None          # a flag naming HellaSwag's file itself (hellaswag.py --data)


CLI_FLAGS = Flags()


@dataclass
class TaskData:
    task: Task
    docs: list[dict]
    shot_docs: list[dict] | None   # None: shots come from `docs` without the item


def check_doc(task: Task, doc) -> str | None:
    """What is wrong with a row of `task` (None if it builds into a valid item in both styles)."""
    missing = [k for k in task.fields if not isinstance(doc, dict) or k not in doc]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        items = [task.build(doc, style) for style in STYLES]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    if not all(0 <= it.gold < len(it.contexts) for it in items):
        return f"answer index {items[0].gold} is not one of the {len(items[0].contexts)} choices"
    return None


def read_jsonl(path: Path, task: Task) -> list[dict]:
    """Rows of a task's jsonl file; a malformed line is a ValueError naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed {task.name} line (invalid JSON: {e.msg})") from None
            why = check_doc(task, row)
            if why:
                raise ValueError(f"{path}:{lineno}: malformed {task.name} line ({why})")
            rows.append(row)
    if not rows:
        raise ValueError(f"no examples in {path}; the file is empty or holds only blank lines")
    return rows


def local_file(split: Split, data_dir: str | os.PathLike | None, task: str) -> Path | None:
    """--data-dir / $EVALS_DIR holding split.file; for HellaSwag also $HELLASWAG_FILE and the download cache."""
    base = data_dir or os.environ.get(EVALS_ENV)
    if base and (Path(base) / split.file).is_file():
        return Path(base) / split.file
    if task == "hellaswag" and split.url:
        env = os.environ.get(HELLASWAG_ENV)
        if env:
            if not Path(env).is_file():
                raise FileNotFoundError(f"${HELLASWAG_ENV}={env}: no such file")
            return Path(env)
        cached = cache_dir() / split.file
        return cached if cached.is_file() else None
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanogpt-evals"


def download(split: Split) -> Path:
    path = cache_dir() / split.file
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {split.url} -> {path}", file=sys.stderr)
    with atomic_path(path) as tmp:
        urllib.request.urlretrieve(split.url, tmp)
    return path


def hub_rows(split: Split, task: Task) -> list[dict]:
    """The split from the Hugging Face hub (needs `datasets` and a connection)."""
    import datasets  # optional: only for data that is not on disk
    path, config, name = split.hub
    rows = [dict(r) for r in datasets.load_dataset(path, config, split=name)]
    why = check_doc(task, rows[0]) if rows else "no rows"
    if why:
        raise ValueError(f"hub dataset {path} ({config}, {name}): {why}")
    return rows


def load_split(task: Task, split: Split, data_dir, flags: Flags = CLI_FLAGS) -> tuple[list[dict], str | None]:
    """(rows, local path, or None when they came from the hub / a download: then so may the shots)."""
    path = local_file(split, data_dir, task.name)
    if path is not None:
        return read_jsonl(path, task), str(path)
    try:
        return (read_jsonl(download(split), task) if split.url else hub_rows(split, task)), None
    except Exception as e:  # offline, no `datasets`, unknown dataset: say where the file goes
        raise FileNotFoundError(missing_split_message(task, split, data_dir, flags, e)) from None


def missing_split_message(task: Task, split: Split, data_dir, flags: Flags, error: Exception) -> str:
    """Where the split was looked for, why the download failed, and the fixes, in the caller's own flags."""
    dirs = " / ".join(([flags.data_dir] if flags.data_dir else []) + [f"${EVALS_ENV}"])
    where = f"{dirs} ({data_dir or os.environ.get(EVALS_ENV) or 'not set'})"
    if task.name == "hellaswag":  # its file is not among the other tasks' files: HELLASWAG_FILE points at it
        where += f" nor ${HELLASWAG_ENV}"
        also = f"pass {flags.data_file} FILE" if flags.data_file else f"put it in {flags.data_dir}" if flags.data_dir else ""
        fix = f"set {HELLASWAG_ENV}=path/to/{split.file}" + (f" (or {also})" if also else "")
    else:
        fix = "put the hub split there as jsonl"
    drop = f", or leave the task out (e.g. {flags.tasks}all,-{task.name})" if flags.tasks else ""
    return (f"{task.name}: {split.file} is not in {where}, and loading {split.url or split.hub[0]} failed "
            f"({type(error).__name__}: {str(error)[:160]}); {fix}, go online{drop}")


def load_task(name: str, data_dir=None, shots: int = 0, flags: Flags = CLI_FLAGS) -> TaskData:
    """A task's scored split and, for shots > 0, its shot split: a local file, else the hub when the scored
    split came from there too; else None (shots are then drawn from the scored split without the item)."""
    task = TASKS[name]
    docs, path = load_split(task, task.split, data_dir, flags)
    shot_docs = None
    if shots and task.shots is not None:
        shot_file = local_file(task.shots, data_dir, name)
        if shot_file is not None:
            shot_docs = read_jsonl(shot_file, task)
        elif path is None:
            try:
                shot_docs = hub_rows(task.shots, task)
            except Exception:  # no shot split online either: the scored split serves
                shot_docs = None
        if task.same_subject_shots and shot_docs is None:
            raise FileNotFoundError(f"{name}: {shots}-shot needs its dev split {task.shots.file} in "
                                    f"{flags.data_dir or '$' + EVALS_ENV}")
    return TaskData(task, docs, shot_docs)


def load_tasks(spec: str, data_dir=None, shots: int = 0, flags: Flags = CLI_FLAGS) -> list[TaskData]:
    """Every task of a --tasks spec, read before any scoring so that bad input stops the run at once."""
    names = parse_tasks(spec)
    check_data_dir(data_dir, flags)
    return [load_task(name, data_dir, shots, flags) for name in names]


def check_data_dir(data_dir, flags: Flags = CLI_FLAGS) -> None:
    """A task directory that is not there stops at once (not after the hub's retries for every task)."""
    name, value = (flags.data_dir, data_dir) if data_dir else (f"${EVALS_ENV}", os.environ.get(EVALS_ENV))
    if value and not Path(value).is_dir():
        raise FileNotFoundError(f"{name}={value}: directory not found; give the directory that holds the tasks' "
                                f"jsonl files (e.g. ../shared/data/evals)")


# ----------------------------------------------------------------------------- prompts


def shot_prefix(data: TaskData, index: int, k: int, style: str) -> str:
    """Header, then k solved examples each followed by a blank line; never the scored item itself."""
    task, doc = data.task, data.docs[index]
    header = task.header(doc) if task.header else ""
    if k == 0:
        return header
    if task.same_subject_shots:
        pool = [d for d in data.shot_docs if d["subject"] == doc["subject"]][:k]
    else:
        source, skip = (data.shot_docs, None) if data.shot_docs is not None else (data.docs, index)
        n = len(source) - (skip is not None)
        if n < k:
            raise ValueError(f"{task.name}: {k} shots asked but only {n} examples to draw from")
        picks = random.Random(f"{task.name}/{index}").sample(range(n), k)
        pool = [source[i + (skip is not None and i >= skip)] for i in picks]  # the scored item is skipped
    return header + "".join(task.build(d, style).solved() + FEWSHOT_SEPARATOR for d in pool)


def shots_source(data: TaskData) -> str:
    """Where this task's few-shot examples come from, as results report it."""
    if data.task.same_subject_shots:
        return f"{data.task.shots.hub[2]} split, the first examples of the item's subject"
    if data.shot_docs is not None:
        return f"{data.task.shots.hub[2]} split, drawn per item"
    return f"{data.task.split.hub[2]} split without the scored item, drawn per item"


def build_items(data: TaskData, style: str, shots: int, indices: list[int]) -> list[Item]:
    items = []
    for i in indices:
        item = data.task.build(data.docs[i], style)
        prefix = shot_prefix(data, i, shots, style)
        items.append(Item(tuple(prefix + c for c in item.contexts), item.continuations, item.gold, item.chars))
    return items


# ----------------------------------------------------------------------------- scoring engine


@dataclass
class Request:
    """Tokens of context + continuation; the last n_cont are scored."""
    tokens: list[int]
    n_cont: int


def encode_pair(tokenizer, context: str, continuation: str, style: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids). harness: trailing spaces of the context move to the continuation,
    and the continuation is whatever follows encode(context) in encode(context + continuation)."""
    if style == "completion":
        return tokenizer.encode(context), tokenizer.encode(continuation)
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = tokenizer.encode(context)
    return ctx, tokenizer.encode(context + continuation)[len(ctx):]


def make_requests(items: list[Item], tokenizer, style: str, max_len: int | None) -> tuple[list[Request], int]:
    """One request per choice, contexts cut from the left to max_len tokens; (requests, number cut)."""
    out, cut = [], 0
    for item in items:
        for ctx_text, cont_text in zip(item.contexts, item.continuations):
            ctx, cont = encode_pair(tokenizer, ctx_text, cont_text, style)
            if not cont:
                raise ValueError(f"continuation {cont_text!r} encodes to no tokens")
            tokens = ctx + cont
            if max_len is not None and len(tokens) - 1 > max_len:
                tokens, cut = tokens[-(max_len + 1):], cut + 1
            out.append(Request(tokens, min(len(cont), len(tokens) - 1)))
    return out, cut


def share_rows(requests: list[Request]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Unique model inputs, with every input that is a prefix of another folded into the longer one (a
    causal model gives the same logits there); returns (rows, row of each request)."""
    inputs = sorted({tuple(r.tokens[:-1]) for r in requests})
    host = {}
    for i in range(len(inputs) - 1, -1, -1):  # sorted: a prefix of anything is a prefix of its successor
        nxt = inputs[i + 1] if i + 1 < len(inputs) else None
        host[inputs[i]] = host[nxt] if nxt is not None and nxt[:len(inputs[i])] == inputs[i] else inputs[i]
    rows = sorted(set(host.values()), key=len, reverse=True)
    where = {row: j for j, row in enumerate(rows)}
    return rows, [where[host[tuple(r.tokens[:-1])]] for r in requests]


def batch_ranges(lengths: list[int], token_budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) ranges of rows (longest first) whose padded size fits token_budget."""
    out, start = [], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and (end + 1 - start) * lengths[start] <= token_budget:
            end += 1
        out.append((start, end))
        start = end
    return out


def token_scores(model, idx: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, targets: torch.Tensor,
                 chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, whether argmax) of targets at (rows, pos) of a right-padded batch, float32. A GPT runs its output
    layer at those positions only, `chunk` rows at a time (a (chunk, vocab) block stays in cache); any other
    model(idx) -> logits (a compiled or stub model) gives every position's logits."""
    core = getattr(model, "_orig_mod", model)
    if hasattr(core, "hidden_states") and hasattr(core, "output_logits"):
        h = core.hidden_states(idx)[rows, pos]
        blocks = (core.output_logits(h[i:i + chunk], padded=True).float() for i in range(0, len(h), chunk))
    else:
        out = model(idx)
        blocks = [(out[0] if isinstance(out, (tuple, list)) else out)[rows, pos].float()]
    nll, hit, start = [], [], 0
    for logits in blocks:
        t = targets[start:start + len(logits)]
        nll.append(F.cross_entropy(logits, t, reduction="none"))
        hit.append(logits.argmax(-1) == t)
        start += len(logits)
    return torch.cat(nll), torch.cat(hit)


def compile_for_scoring(model) -> None:
    """torch.compile the part scoring runs (hidden_states), for the many shapes of scoring batches."""
    model.hidden_states = torch.compile(model.hidden_states, dynamic=True)


@torch.no_grad()
def score_requests(model, requests: list[Request], scoring: Scoring = Scoring(),
                   label: str | None = None) -> tuple[list[float], list[bool]]:
    """Summed loss (nats; float64 sums of float32 token losses) of each request's continuation, and whether
    greedy decoding would produce it (every token the argmax). `label`: a progress bar's, None for none."""
    device = torch.device(scoring.device)
    rows, row_of = share_rows(requests)
    by_row: list[list[int]] = [[] for _ in rows]
    for i, j in enumerate(row_of):
        by_row[j].append(i)
    nll = torch.zeros(len(requests), dtype=torch.float64)
    misses = torch.zeros(len(requests), dtype=torch.long)
    ranges = batch_ranges([len(r) for r in rows], scoring.token_budget)
    for start, end in tqdm(ranges, desc=label, unit="batch", disable=label is None, dynamic_ncols=True):
        idx = torch.zeros((end - start, len(rows[start])), dtype=torch.long)
        b_rows, b_pos, targets, owner = [], [], [], []
        for b, j in enumerate(range(start, end)):
            idx[b, :len(rows[j])] = torch.tensor(rows[j])
            for i in by_row[j]:
                r = requests[i]
                first = len(r.tokens) - 1 - r.n_cont  # input position that predicts the first scored token
                b_rows += [b] * r.n_cont
                b_pos += range(first, first + r.n_cont)
                targets += r.tokens[-r.n_cont:]
                owner += [i] * r.n_cont
        with runtime.autocast(device, scoring.autocast_dtype), runtime.variable_shape_attention():
            token_nll, hit = token_scores(model, idx.to(device), torch.tensor(b_rows, device=device),
                                          torch.tensor(b_pos, device=device), torch.tensor(targets, device=device))
        owner_t = torch.tensor(owner)
        nll.index_add_(0, owner_t, token_nll.double().cpu())
        misses.index_add_(0, owner_t, (~hit).long().cpu())
    return nll.tolist(), (misses == 0).tolist()


# ----------------------------------------------------------------------------- metrics


def first_best(values: list[float]) -> int:
    """Index of the smallest value; ties go to the first."""
    return min(range(len(values)), key=lambda i: (values[i], i))


def decide(item: Item, nll: list[float], requests: list[Request], style: str) -> tuple[int, int]:
    """(pred, pred_norm): lowest summed loss; lowest loss per character (harness) or per token (completion)."""
    norms = item.chars if style == "harness" else [r.n_cont for r in requests]
    return first_best(nll), first_best([x / n if n > 0 else math.inf for x, n in zip(nll, norms)])


def stderr(p: float, n: int) -> float:
    """Standard error of a mean of n 0/1 outcomes (sample variance, as lm-evaluation-harness reports)."""
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def centred(acc: float, random_acc: float) -> float:
    return (acc - random_acc) / (1 - random_acc)


def shard(n: int, rank: int, world_size: int) -> list[int]:
    """This rank's examples: rank, rank + world_size, ... (the ranks cover 0..n-1 once)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    return list(range(rank, n, world_size))


def score_items(model, tokenizer, items: list[Item], indices: list[int], setup: TaskSetup, scoring: Scoring,
                label: str | None = None) -> tuple[list[dict], int]:
    """Per-example records (index, gold, pred, pred_norm, nll, greedy) and the number of truncated requests."""
    requests, n_cut = make_requests(items, tokenizer, setup.style, setup.context or model_context(model))
    nll, greedy = score_requests(model, requests, scoring, label)
    records, k = [], 0
    for index, item in zip(indices, items):
        n = len(item.contexts)
        pred, pred_norm = decide(item, nll[k:k + n], requests[k:k + n], setup.style)
        records.append({"index": index, "gold": item.gold, "pred": pred, "pred_norm": pred_norm,
                        "nll": nll[k:k + n], "greedy": greedy[k + item.gold], "choices": n})
        k += n
    return records, n_cut


def model_context(model) -> int | None:
    """The longest context the model was trained on (its block_size), None if it does not say."""
    config = getattr(getattr(model, "_orig_mod", model), "config", None)
    return getattr(config, "block_size", None)


def summarize(task: Task, records: list[dict], setup: TaskSetup, seconds: float, n_cut: int, full: int) -> dict:
    n = len(records)
    acc = sum(r["pred"] == r["gold"] for r in records) / n
    acc_norm = sum(r["pred_norm"] == r["gold"] for r in records) / n
    res = {"task": task.name, "style": setup.style, "shots": setup.shots, "n": n, "full_set": n == full, "acc": acc,
           "acc_norm": acc_norm, "seconds": seconds, "examples_per_s": n / max(seconds, 1e-9),
           "truncated_requests": n_cut}
    if task.name == "lambada":  # open vocabulary: accuracy is greedy last-word match, random is 0
        res["acc"] = res["acc_norm"] = sum(r["greedy"] for r in records) / n
        res["perplexity"] = math.exp(sum(r["nll"][0] for r in records) / n)  # harness: exp(mean word loss)
    res["metric"] = task.metric
    res["random"] = sum(1 / r["choices"] for r in records) / n if task.name != "lambada" else 0.0
    res["stderr"] = stderr(res[task.metric], n)
    res["centred"] = centred(res[task.metric], res["random"])
    return res


def evaluate_task(model, tokenizer, data: TaskData, setup: TaskSetup = TaskSetup(),
                  scoring: Scoring = Scoring()) -> dict:
    """Score one task (the first setup.limit examples); with scoring.world_size > 1 every rank must call this
    and all ranks return the combined result. Records per example are under "predictions"."""
    if setup.style not in STYLES:
        raise ValueError(f"unknown style {setup.style!r}; choose from {', '.join(STYLES)}")
    n = min(len(data.docs), setup.limit) if setup.limit else len(data.docs)
    mine = shard(n, scoring.rank, scoring.world_size)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        items = build_items(data, setup.style, setup.shots, mine)
        label = f"{data.task.name}[{setup.style}]" if scoring.progress and scoring.rank == 0 else None
        records, n_cut = score_items(model, tokenizer, items, mine, setup, scoring, label)
    finally:
        model.train(was_training)
    if scoring.world_size > 1 and runtime.is_distributed():
        parts = runtime.gather_object((records, n_cut))
        records = sorted((r for part, _ in parts for r in part), key=lambda r: r["index"])
        n_cut = sum(c for _, c in parts)
    res = summarize(data.task, records, setup, time.perf_counter() - t0, n_cut, len(data.docs))
    res["shots_from"] = shots_source(data) if setup.shots else None
    res["predictions"] = records
    return res


def evaluate_suite(model, tokenizer, datas: list[TaskData], setup: TaskSetup = TaskSetup(),
                   scoring: Scoring = Scoring()) -> dict:
    """Every task, then the score: the mean of the tasks' centred accuracies."""
    tasks = {d.task.name: evaluate_task(model, tokenizer, d, setup, scoring) for d in datas}
    return {"style": setup.style, "shots": setup.shots, "limit": setup.limit, "tasks": tasks,
            "score": sum(t["centred"] for t in tasks.values()) / len(tasks)}


def metrics_row(res: dict) -> dict:
    """Flat values for metrics.jsonl / wandb: <task>_acc, <task>_acc_norm, <task>_centred, tasks_score, and the
    style they are in (tasks_style)."""
    row = {"tasks_style": res["style"]}
    for name, t in res["tasks"].items():
        row.update({f"{name}_acc": t["acc"], f"{name}_acc_norm": t["acc_norm"], f"{name}_centred": t["centred"]})
    row["tasks_score"] = res["score"]
    return row


def format_table(res: dict) -> str:
    head = f"{'task':<15}{'n':>7}{'acc':>8}{'acc_norm':>10}{'stderr':>8}{'random':>8}{'centred':>9}  metric    {'s':>7}{'ex/s':>8}"
    lines = [f"{res['style']} style, {res['shots']}-shot", head]
    for t in res["tasks"].values():
        extra = f"  perplexity {t['perplexity']:.2f}" if "perplexity" in t else ""
        partial = "" if t["full_set"] else "  (partial)"
        lines.append(f"{t['task']:<15}{t['n']:>7}{t['acc']:>8.4f}{t['acc_norm']:>10.4f}{t['stderr']:>8.4f}"
                     f"{t['random']:>8.3f}{t['centred']:>9.4f}  {t['metric']:<8}{t['seconds']:>8.1f}"
                     f"{t['examples_per_s']:>8.1f}{extra}{partial}")
    lines.append(f"score (mean centred {res['style']}-style accuracy over {len(res['tasks'])} tasks): {res['score']:.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


BATCH_TOKENS_HELP = f"padded tokens per forward (default: {CPU_TOKEN_BUDGET} on CPU, {GPU_TOKEN_BUDGET} on GPU)"


def default_token_budget(device) -> int:
    return CPU_TOKEN_BUDGET if torch.device(device).type == "cpu" else GPU_TOKEN_BUDGET


def scoring_from_args(args: argparse.Namespace, info: runtime.DistInfo) -> Scoring:
    """The Scoring of this process (`info`) from the command line: --dtype, --batch-tokens and --quiet."""
    return Scoring(device=info.device, autocast_dtype=runtime.autocast_dtype(info.device, args.dtype),
                   token_budget=args.batch_tokens or default_token_budget(info.device), progress=not args.quiet,
                   rank=info.rank, world_size=info.world_size)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--tasks", default="all", help=f"a suite ({', '.join(SUITES)}), task names, or both; "
                   f"'-name' drops one (e.g. all,-lambada). Tasks: {', '.join(TASKS)}")
    p.add_argument("--limit", type=int, default=None, help="first N examples of each task (default: all; quick: 200)")
    p.add_argument("--shots", type=int, default=0, help="few-shot examples before each item")
    p.add_argument("--style", choices=STYLES, default="harness")
    p.add_argument("--data-dir", default=None, help=f"directory of the task jsonl files (default: ${EVALS_ENV})")
    p.add_argument("--batch-tokens", type=int, default=None, help=BATCH_TOKENS_HELP)
    p.add_argument("--out", help="write the results (with per-example predictions) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for key in ("limit", "batch_tokens"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.shots < 0:
        p.error("--shots must be >= 0")
    try:
        parse_tasks(args.tasks)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        check_out_file(args.out)
        info = runtime.setup_distributed(args.device)
        datas = load_tasks(args.tasks, args.data_dir, args.shots)  # before the model
        model, tokenizer = load_model(args.source, info.device, args.trust_checkpoint, tiktoken_file=args.tiktoken_file,
                                      tokenizer="required")
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"evaluate.py: error: {e}")
    if args.compile:
        compile_for_scoring(model)
    setup = TaskSetup(style=args.style, shots=args.shots, limit=args.limit or default_limit(args.tasks))
    try:
        res = evaluate_suite(model, tokenizer, datas, setup, scoring_from_args(args, info))
    except UnknownCharacterError as e:  # a char model: the tasks are not written in its corpus's characters
        sys.exit(f"evaluate.py: error: {e}; a char model scores only tasks written in its corpus's characters")
    if info.rank == 0:
        report(format_table(res), sum(t["truncated_requests"] for t in res["tasks"].values()), res, args.out)
    runtime.cleanup_distributed()


def check_out_file(out: str | None) -> None:
    """--out can be written: not a directory, its folder made now. Checked before any scoring, so that a long
    run's results are never lost at the end."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise IsADirectoryError(f"--out {out} is a directory; give a file name, e.g. --out {path / 'results.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        raise OSError(f"--out {out}: cannot create its folder {path.parent} ({why}); choose another path") from None
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"--out {out}: folder {path.parent} is not writable; choose another path")


def report(text: str, n_cut: int, res: dict, out: str | None, indent: str = "") -> None:
    """Print a result, a note on truncated contexts, and write the JSON file if asked (rank 0 of a CLI)."""
    print(text)
    if n_cut:
        print(f"{indent}note: {n_cut} requests had their context cut from the left to fit the model's context")
    if out:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(res, indent=1))
        print(f"{indent}wrote {out}")


if __name__ == "__main__":
    main()
