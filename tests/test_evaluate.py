"""evaluate.py: task prompts, exact small cases (oracle 100% / 0%, centring, tie rule), few-shot prompts, the
batched engine against a slow reference, LAMBADA, bad input, the CLI, and agreement with lm-evaluation-harness."""
import json
import math
import os
from pathlib import Path

import pytest
import torch
from stubs import ByteTokenizer, CausalMixModel, OracleModel, UniformModel

import evaluate as ev
from model import GPT, GPTConfig
from test_sample import gpt2_run  # noqa: F401  (fixture: a tiny GPT-2-tokenizer checkpoint)

ROWS = {"hellaswag": 10042, "piqa": 1838, "arc_easy": 570, "arc_challenge": 299, "winogrande": 1267,
        "openbookqa": 500, "sciq": 1000, "boolq": 3270, "copa": 100, "commonsense_qa": 1221,
        "social_i_qa": 1954, "mmlu": 14042}
CHOICE_TASKS = [t for t in ev.TASKS if t != "lambada"]


@pytest.fixture
def evals(shared_data, monkeypatch):
    monkeypatch.setenv(ev.HELLASWAG_ENV, str(shared_data / "hellaswag_val.jsonl"))
    return shared_data / "evals"


def head(evals, name, n, shots=0):
    """The task and how many of its first examples to score (shots still drawn from the whole split)."""
    return ev.load_task(name, evals, shots), n


def gold_sequences(data, n, style, offset=0):
    """Token rows of the gold choice (offset=1: a wrong one) of the first n examples."""
    items = ev.build_items(data, style, 0, list(range(n)))
    seqs = []
    for item in items:
        reqs, _ = ev.make_requests([item], ByteTokenizer(), style, None)
        seqs.append(reqs[(item.gold + offset) % len(reqs)].tokens)
    return seqs


# ----------------------------------------------------------------------------- tasks and prompts


@pytest.mark.parametrize("name", CHOICE_TASKS)
def test_every_local_file_loads_and_every_row_builds_a_valid_item(evals, name):
    data = ev.load_task(name, evals)
    assert len(data.docs) == ROWS[name]
    item = data.task.build(data.docs[0], "harness")
    assert 0 <= item.gold < len(item.contexts) == len(item.continuations) == len(item.chars)


def test_prompts_match_hand_written_examples():
    piqa = ev.piqa_item({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "bite it", "label": 0}, "harness")
    assert piqa.contexts == ("Question: Open a jar\nAnswer:",) * 2 and piqa.continuations == (" twist the lid", " bite it")
    assert piqa.chars == (13, 7) and piqa.solved() == "Question: Open a jar\nAnswer: twist the lid"
    wino = ev.winogrande_item({"sentence": "The cup fell off the table because _ was tilted.", "option1": "the cup",
                               "option2": "the table", "answer": "2"}, "harness")
    assert wino.contexts == ("The cup fell off the table because the cup", "The cup fell off the table because the table")
    assert wino.continuations == (" was tilted.",) * 2 and wino.gold == 1
    copa = ev.copa_item({"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.",
                         "question": "cause", "label": 0}, "harness")
    assert copa.contexts[0] == "The man fell because" and copa.continuations == ("  he slipped.", "  he sang.")
    mmlu = ev.mmlu_item({"question": " What is 2+2? ", "subject": "elementary_mathematics",
                         "choices": ["3", "4", "5", "6"], "answer": 1}, "harness")
    assert mmlu.contexts[0] == "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    assert mmlu.continuations == (" A", " B", " C", " D") and mmlu.gold == 1
    assert ev.mmlu_header({"subject": "high_school_physics"}).startswith("The following are multiple choice "
                                                                        "questions (with answers) about high school physics.\n\n")
    boolq = ev.boolq_item({"passage": "Cats purr.", "question": "do cats purr", "answer": True}, "harness")
    assert boolq.contexts[0] == "Cats purr.\nQuestion: do cats purr?\nAnswer:" and boolq.gold == 1
    lam = ev.lambada_item({"text": "he opened the door"}, "harness")
    assert (lam.contexts, lam.continuations, lam.gold) == (("he opened the",), (" door",), 0)
    arc = ev.arc_item({"question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]},
                       "answerKey": "3"}, "harness")
    assert arc.gold == 2 and len(arc.contexts) == 3


def test_harness_encoding_moves_context_spaces_and_continues_the_joint_tokens():
    tok = ByteTokenizer()
    assert ev.encode_pair(tok, "Answer: ", "yes", "harness") == (tok.encode("Answer:"), tok.encode(" yes"))
    assert ev.encode_pair(tok, "Answer: ", "yes", "completion") == (tok.encode("Answer: "), tok.encode("yes"))


# ----------------------------------------------------------------------------- exact small cases


@pytest.mark.parametrize("name", ["piqa", "arc_challenge", "winogrande", "boolq", "copa", "mmlu", "commonsense_qa",
                                  "social_i_qa", "openbookqa", "sciq", "hellaswag"])
@pytest.mark.parametrize("style", ev.STYLES)
def test_model_built_to_prefer_the_answer_scores_100_and_a_wrong_one_0(evals, name, style):
    data, n = head(evals, name, 6)
    setup = ev.TaskSetup(style, limit=n)
    right = ev.evaluate_task(OracleModel(gold_sequences(data, n, style)), ByteTokenizer(), data, setup)
    assert right["acc"] == right["acc_norm"] == 1.0
    assert right["centred"] == 1.0
    wrong = ev.evaluate_task(OracleModel(gold_sequences(data, n, style, 1)), ByteTokenizer(), data, setup)
    assert wrong["acc"] == wrong["acc_norm"] == 0.0
    assert wrong["centred"] == pytest.approx(-wrong["random"] / (1 - wrong["random"]))


def test_centring_is_zero_at_the_random_baseline(evals):
    """Winogrande's two choices share one continuation: a uniform model ties and picks the first, so its
    accuracy is the share of first-option answers; centred on 1/2."""
    data, n = head(evals, "winogrande", 40)
    res = ev.evaluate_task(UniformModel(), ByteTokenizer(), data, ev.TaskSetup(limit=n))
    first = sum(d["answer"] == "1" for d in data.docs[:n]) / n
    assert res["acc"] == first and res["random"] == 0.5
    assert res["centred"] == pytest.approx((first - 0.5) / 0.5)
    assert ev.centred(0.25, 0.25) == 0.0 and ev.centred(1.0, 0.2) == 1.0
    arc, n = head(evals, "arc_easy", 570)
    records = [{"pred": 0, "pred_norm": 0, "gold": 0, "choices": c, "nll": [0.0] * c, "greedy": True}
               for c in (3, 4, 5, 4)]
    assert ev.summarize(arc.task, records, ev.TaskSetup("harness"), 1.0, 0, 570)["random"] == pytest.approx((1/3 + 1/2 + 1/5) / 4)


def test_suite_score_is_the_mean_of_centred_accuracies(evals):
    datas = [head(evals, name, 8)[0] for name in ("piqa", "copa")]
    res = ev.evaluate_suite(CausalMixModel(), ByteTokenizer(), datas, ev.TaskSetup(limit=8))
    assert res["score"] == pytest.approx((res["tasks"]["piqa"]["centred"] + res["tasks"]["copa"]["centred"]) / 2)
    row = ev.metrics_row(res)
    assert row["tasks_score"] == res["score"] and row["piqa_acc"] == res["tasks"]["piqa"]["acc"]
    assert row["tasks_style"] == "harness"
    assert "harness style, 0-shot" in ev.format_table(res) and "(partial)" in ev.format_table(res)


def test_ties_go_to_the_first_choice():
    assert ev.first_best([2.0, 1.0, 1.0, 3.0]) == 1
    assert ev.first_best([1.0, 1.0, 1.0]) == 0
    item = ev.choice("x", ["aa", "b"], 0)
    reqs = [ev.Request([1, 2, 3], 2), ev.Request([1, 2], 1)]
    assert ev.decide(item, [2.0, 1.0], reqs, "harness") == (1, 0)     # per char: 1.0 vs 1.0 -> first
    assert ev.decide(item, [2.0, 1.0], reqs, "completion") == (1, 0)  # per token: 1.0 vs 1.0 -> first


# ----------------------------------------------------------------------------- few-shot prompts


def test_fewshot_prompts_are_deterministic_and_never_contain_the_scored_item(evals):
    data = ev.load_task("piqa", evals, shots=3)
    assert data.shot_docs is None  # no train split on disk: shots come from the scored split
    for i in range(40):
        prefix = ev.shot_prefix(data, i, 3, "harness")
        assert prefix.count(ev.FEWSHOT_SEPARATOR) == 3
        assert ev.piqa_item(data.docs[i], "harness").solved() not in prefix
        assert prefix == ev.shot_prefix(data, i, 3, "harness")
    item = ev.build_items(data, "harness", 3, [5])[0]
    assert item.contexts[0].endswith(ev.piqa_item(data.docs[5], "harness").contexts[0])
    assert len({ev.shot_prefix(data, i, 3, "harness") for i in range(10)}) == 10


def test_fewshot_from_a_separate_shot_split(tmp_path, evals):
    """With a shot split on disk, shots come from it (the scored item cannot appear: it is another split)."""
    lines = (evals / "copa_validation.jsonl").read_text().splitlines()
    (tmp_path / "copa_validation.jsonl").write_text("\n".join(lines[:20]) + "\n")
    (tmp_path / "copa_train.jsonl").write_text("\n".join(lines[50:60]) + "\n")
    data = ev.load_task("copa", tmp_path, shots=2)
    assert len(data.shot_docs) == 10
    solved = {ev.copa_item(json.loads(x), "harness").solved() for x in lines[50:60]}
    for i in range(20):
        parts = ev.shot_prefix(data, i, 2, "harness").split(ev.FEWSHOT_SEPARATOR)[:-1]
        assert len(parts) == 2 and set(parts) <= solved


def test_mmlu_five_shot_uses_the_first_dev_examples_of_the_subject(evals):
    data = ev.load_task("mmlu", evals, shots=5)
    doc = data.docs[0]
    dev = [d for d in data.shot_docs if d["subject"] == doc["subject"]]
    prefix = ev.shot_prefix(data, 0, 5, "harness")
    want = ev.mmlu_header(doc) + "".join(ev.mmlu_item(d, "harness").solved() + "\n\n" for d in dev[:5])
    assert prefix == want and prefix.count("The following are") == 1
    assert ev.shot_prefix(data, 0, 0, "harness") == ev.mmlu_header(doc)  # 0-shot keeps the subject line


# ----------------------------------------------------------------------------- the engine


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(block_size=64, vocab_size=256, pad_vocab_multiple=64, n_layer=2, n_head=2, n_embd=32)
    model = GPT(GPTConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():  # sharper than the 0.02 init, so choices differ clearly
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def random_requests(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ctx = torch.randint(0, 256, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).tolist()
        cont = torch.randint(0, 256, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist()
        out.append(ev.Request(ctx + cont, len(cont)))
    out.append(ev.Request(list(out[0].tokens), out[0].n_cont))           # identical input
    out.append(ev.Request(out[1].tokens[:-2], 1))                          # a prefix of another input
    out.append(ev.Request(out[2].tokens[:-1] + [7], out[2].n_cont))       # same input, another target
    return out


def reference_scores(model, requests):
    """One full forward per request, log-softmax in float64: the obviously correct computation."""
    nll, greedy = [], []
    with torch.no_grad():
        for r in requests:
            logits = model(torch.tensor([r.tokens[:-1]]))[0].double()
            logp = logits.log_softmax(-1)
            pos = range(len(r.tokens) - 1 - r.n_cont, len(r.tokens) - 1)
            nll.append(-sum(logp[p, r.tokens[p + 1]].item() for p in pos))
            greedy.append(all(logits[p].argmax().item() == r.tokens[p + 1] for p in pos))
    return nll, greedy


@pytest.mark.parametrize("budget", [1, 100, 10**6])
def test_batched_scores_equal_one_forward_per_request(budget):
    model, reqs = tiny_gpt(), random_requests()
    want_nll, want_greedy = reference_scores(model, reqs)
    nll, greedy = ev.score_requests(model, reqs, ev.Scoring(token_budget=budget))
    assert nll == pytest.approx(want_nll, rel=1e-5, abs=1e-4) and greedy == want_greedy


def test_output_layer_at_scored_positions_equals_every_positions_logits():
    """The GPT path (hidden states, then the output layer at scored positions only) against the generic path
    (model(idx) -> every position's logits), on rope + softcap + untied weights too."""
    for kw in (dict(), dict(pos_emb="rope", logit_softcap=5.0, tie_embeddings=False)):
        model, reqs = tiny_gpt(**kw), random_requests(seed=1)
        generic = torch.nn.Sequential()  # no hidden_states: takes the generic path
        generic.forward = model.forward
        fast = ev.score_requests(model, reqs)
        slow = ev.score_requests(generic, reqs)
        assert fast[0] == pytest.approx(slow[0], rel=1e-6, abs=1e-5) and fast[1] == slow[1]


def test_shared_rows_fold_identical_and_prefix_inputs():
    reqs = [ev.Request([1, 2, 3, 4], 1), ev.Request([1, 2, 3, 5], 1), ev.Request([1, 2, 9], 2),
            ev.Request([1, 2, 3], 1), ev.Request([1, 3, 3], 1)]
    rows, row_of = ev.share_rows(reqs)
    assert sorted(rows) == [(1, 2, 3), (1, 3)]       # (1, 2) is a prefix of (1, 2, 3): no row of its own
    assert [rows[j] for j in row_of] == [(1, 2, 3), (1, 2, 3), (1, 2, 3), (1, 2, 3), (1, 3)]
    assert ev.batch_ranges([10, 8, 8, 3], 20) == [(0, 2), (2, 4)] and ev.batch_ranges([10], 1) == [(0, 1)]


def test_contexts_are_cut_from_the_left_to_the_context():
    item = ev.choice("word " * 100, ["end", "stop"], 0)
    reqs, cut = ev.make_requests([item], ByteTokenizer(), "completion", 32)
    assert cut == 2 and all(len(r.tokens) == 33 for r in reqs)
    assert reqs[0].tokens[-reqs[0].n_cont:] == ByteTokenizer().encode(" end")


def test_ranks_together_equal_one_process(evals):
    data, n = head(evals, "piqa", 11)
    full = ev.evaluate_task(CausalMixModel(), ByteTokenizer(), data, ev.TaskSetup(limit=n))
    parts = [ev.evaluate_task(CausalMixModel(), ByteTokenizer(), data, ev.TaskSetup(limit=n),
                              ev.Scoring(rank=r, world_size=3)) for r in range(3)]
    merged = sorted((p for part in parts for p in part["predictions"]), key=lambda p: p["index"])
    assert merged == full["predictions"]
    assert [len(ev.shard(10042, r, 7)) for r in range(7)] == [1435] * 4 + [1434] * 3  # 10042 = 7 * 1434 + 4


# ----------------------------------------------------------------------------- LAMBADA


def test_lambada_last_word_accuracy_and_perplexity(tmp_path):
    texts = ["the cat sat on the mat", "a dog ran far away", "we ate bread", "rain fell all night long"]
    (tmp_path / "lambada_openai_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    data = ev.load_task("lambada", tmp_path)
    tok = ByteTokenizer()
    uniform = ev.evaluate_task(UniformModel(), tok, data)
    words = [len(" " + t.split(" ")[-1]) for t in texts]  # bytes = tokens of each last word
    assert uniform["acc"] == 0.0 and uniform["random"] == 0.0 and uniform["centred"] == 0.0
    assert uniform["perplexity"] == pytest.approx(math.exp(sum(words) / len(words) * math.log(256)))
    knows_two = OracleModel([tok.encode(t) for t in texts[:2]])
    res = ev.evaluate_task(knows_two, tok, data)
    assert res["acc"] == res["centred"] == 0.5
    nll = [p["nll"][0] for p in res["predictions"]]
    assert res["perplexity"] == pytest.approx(math.exp(sum(nll) / 4))


# ----------------------------------------------------------------------------- bad input


def test_task_names_suites_and_exclusions():
    assert ev.parse_tasks("all") == list(ev.TASKS) and len(ev.TASKS) == 13
    assert ev.parse_tasks("all,-lambada") == CHOICE_TASKS
    assert ev.parse_tasks("piqa,quick,piqa") == ["piqa", "hellaswag", "arc_easy", "winogrande", "copa", "boolq"]
    assert ev.default_limit("quick") == 200 and ev.default_limit("quick,mmlu") is None
    with pytest.raises(ValueError, match="unknown task 'pica'; known tasks: hellaswag, piqa, .*suites: all, quick"):
        ev.parse_tasks("all,pica")
    with pytest.raises(ValueError, match="selects no task"):
        ev.parse_tasks("piqa,-piqa")


def test_the_old_suite_name_core_says_it_is_now_all_and_not_nanochats_core(capsys):
    """Our suite was called `core`, which users read as nanochat's CORE (the DCLM paper's 22 tasks): a one-line
    error names the new name instead of scoring a number that would be compared with CORE's."""
    for spec in ("core", "core,-lambada", "piqa,-core"):
        with pytest.raises(ValueError, match=r"^the suite 'core' is now 'all': it is not nanochat's CORE .*22 tasks"):
            ev.parse_tasks(spec)
    with pytest.raises(SystemExit):
        ev.parse_args(["--ckpt", "x", "--tasks", "core"])
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "is now 'all'" in x]  # one line, after the usage
    assert line.endswith("does not compare with CORE's")


def test_unknown_task_on_the_command_line_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        ev.parse_args(["--ckpt", "x", "--tasks", "hellaswag,pica"])
    assert "unknown task 'pica'; known tasks: hellaswag, piqa" in capsys.readouterr().err


@pytest.mark.parametrize("bad,why", [("{nope", "invalid JSON"), (json.dumps({"goal": "g"}), "missing sol1, sol2, label"),
                                     (json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 2}), "answer index 2")])
def test_malformed_line_names_file_and_line(tmp_path, evals, bad, why):
    lines = (evals / "piqa_validation.jsonl").read_text().splitlines()[:3]
    (tmp_path / "piqa_validation.jsonl").write_text("\n".join(lines[:2] + [bad] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=rf"piqa_validation\.jsonl:3: malformed piqa line \({why}"):
        ev.load_task("piqa", tmp_path)


def test_missing_file_says_where_to_get_it(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("no network")
    monkeypatch.setattr(ev, "hub_rows", offline)
    monkeypatch.delenv(ev.EVALS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"piqa: piqa_validation\.jsonl is not in --data-dir.*baber/piqa "
                                                r"failed \(ConnectionError.*--tasks all,-piqa"):
        ev.load_task("piqa", tmp_path)
    with pytest.raises(SystemExit, match=r"^evaluate\.py: error: piqa: piqa_validation\.jsonl is not in"):
        ev.main(["--ckpt", str(tmp_path / "unused"), "--tasks", "piqa", "--data-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="5-shot needs its dev split mmlu_dev.jsonl"):
        (tmp_path / "mmlu_test.jsonl").write_text(json.dumps({"question": "q", "subject": "s", "choices": list("abcd"),
                                                              "answer": 0}) + "\n")
        ev.load_task("mmlu", tmp_path, shots=5)


def test_missing_data_dir_stops_at_once_without_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "hub_rows", lambda *a: pytest.fail("must not go to the hub"))
    monkeypatch.setattr(ev, "download", lambda *a: pytest.fail("must not download"))
    monkeypatch.delenv(ev.EVALS_ENV, raising=False)
    with pytest.raises(SystemExit, match=r"^evaluate\.py: error: --data-dir=\S*nope: directory not found; give the "
                                         r"directory that holds the tasks' jsonl files"):
        ev.main(["--ckpt", str(tmp_path / "unused"), "--tasks", "quick", "--data-dir", str(tmp_path / "nope")])
    monkeypatch.setenv(ev.EVALS_ENV, str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"\$EVALS_DIR=\S*gone: directory not found"):
        ev.load_tasks("piqa")


def test_missing_hellaswag_file_names_hellaswag_file(evals, tmp_path, monkeypatch):
    """HellaSwag's file is not among the other tasks' files (../shared/data/evals): the error says how to point at it."""
    def offline(split):
        raise ConnectionError("no network")
    monkeypatch.setattr(ev, "download", offline)
    monkeypatch.delenv(ev.HELLASWAG_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))          # no cached download either
    with pytest.raises(FileNotFoundError, match=r"hellaswag_val\.jsonl is not in --data-dir / \$EVALS_DIR \(.*evals\) "
                                                r"nor \$HELLASWAG_FILE.*set HELLASWAG_FILE=path/to/hellaswag_val\.jsonl"):
        ev.load_task("hellaswag", evals)


# ----------------------------------------------------------------------------- command line


def test_unwritable_out_stops_before_anything_is_scored(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "load_model", lambda *a, **k: pytest.fail("must not load the model"))
    (tmp_path / "a_file").write_text("")
    argv = ["--ckpt", str(tmp_path / "unused"), "--tasks", "piqa", "--out"]
    with pytest.raises(SystemExit, match=r"^evaluate\.py: error: --out \S+ is a directory; give a file name, e\.g\. "
                                         r"--out \S+results\.json$"):
        ev.main(argv + [str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^evaluate\.py: error: --out \S+: cannot create its folder \S+a_file \(a file "
                                         r"is in the way\); choose another path$"):
        ev.main(argv + [str(tmp_path / "a_file" / "r.json")])


def test_out_in_a_missing_folder_is_made_and_written(gpt2_run, evals, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "results" / "today" / "r.json"
    ev.main(["--ckpt", str(gpt2_run), "--tasks", "copa", "--limit", "2", "--data-dir", str(evals), "--out", str(out),
             "--quiet", "--device", "cpu"])
    assert json.loads(out.read_text())["tasks"]["copa"]["n"] == 2


def test_cli_prints_the_table_and_writes_json(gpt2_run, evals, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "r.json"
    ev.main(["--ckpt", str(gpt2_run), "--tasks", "piqa,copa,mmlu", "--limit", "5", "--data-dir", str(evals),
             "--shots", "1", "--out", str(out), "--quiet", "--device", "cpu"])
    text = capsys.readouterr().out
    assert "harness style, 1-shot" in text and "score (mean centred harness-style accuracy over 3 tasks)" in text
    res = json.loads(out.read_text())
    assert list(res["tasks"]) == ["piqa", "copa", "mmlu"] and all(t["n"] == 5 for t in res["tasks"].values())
    assert res["tasks"]["piqa"]["style"] == "harness" and len(res["tasks"]["mmlu"]["predictions"]) == 5
    assert res["tasks"]["piqa"]["shots_from"] == "validation split without the scored item, drawn per item"
    assert res["tasks"]["mmlu"]["shots_from"] == "dev split, the first examples of the item's subject"


def test_checkpoint_whose_tokenizer_cannot_load_says_why(gpt2_run, evals, tmp_path):  # noqa: F811
    with pytest.raises(SystemExit, match=r"evaluate\.py: error: GPT-2 BPE ranks file .*nope\.tiktoken not found"):
        ev.main(["--ckpt", str(gpt2_run), "--tasks", "copa", "--data-dir", str(evals),
                 "--tiktoken-file", str(tmp_path / "nope.tiktoken"), "--device", "cpu"])


# ----------------------------------------------------------------------------- lm-evaluation-harness


LM_EVAL_TASKS = {"hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag_val.jsonl"),
                 "piqa": ("piqa/piqa.yaml", "evals/piqa_validation.jsonl"),
                 "arc_easy": ("arc/arc_easy.yaml", "evals/arc_easy_validation.jsonl"),
                 "winogrande": ("winogrande/default.yaml", "evals/winogrande_xl_validation.jsonl")}


def test_harness_style_decisions_equal_lm_evaluation_harness(shared_data, gpt2_tiktoken_file, tmp_path):
    """lm-eval's own task configs (included from the installed package, pointed at local copies of the data)
    on the export_hf.py export of a model; our harness-style scoring of the same model makes the same
    correct/incorrect decision, acc and acc_norm, on every example."""
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from lm_eval.tasks import TaskManager

    import tokenization
    import export_hf
    tok = tokenization.gpt2_tokenizer(str(gpt2_tiktoken_file))
    model = tiny_gpt(vocab_size=tok.vocab_size, block_size=256, n_head=4)
    export_hf.export(model, tmp_path / "hf", tokenizer=tok, tiktoken_file=str(gpt2_tiktoken_file))
    n, installed = 40, Path(lm_eval.__file__).parent / "tasks"
    for name, (yaml, file) in LM_EVAL_TASKS.items():
        lines = (shared_data / file).read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp_path / f"local_{name}.yaml").write_text(
            f"include: {installed / yaml}\ntask: local_{name}\ntag: []\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {tmp_path / (name + '.jsonl')}\n"
            f"training_split: null\nvalidation_split: validation\ntest_split: null\n")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'hf'},dtype=float32",
                                  tasks=[f"local_{t}" for t in LM_EVAL_TASKS], device="cpu", batch_size=8,
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
                                  log_samples=True)
    for name in LM_EVAL_TASKS:
        docs = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        ours = ev.evaluate_task(model, tok, ev.TaskData(ev.TASKS[name], docs, None), ev.TaskSetup("harness"))
        theirs = sorted(out["samples"][f"local_{name}"], key=lambda s: s["doc_id"])
        assert len(theirs) == len(ours["predictions"]) == n
        for p, s in zip(ours["predictions"], theirs):
            assert float(p["pred"] == p["gold"]) == s["acc"], (name, p["index"])
            if "acc_norm" in s:
                assert float(p["pred_norm"] == p["gold"]) == s["acc_norm"], (name, p["index"])
            lls = [float(r[0]) for r in s["filtered_resps"]]
            assert [-x for x in p["nll"]] == pytest.approx(lls, abs=1e-3)
        summary = out["results"][f"local_{name}"]
        assert ours["acc"] == pytest.approx(summary["acc,none"])
        assert ours["stderr"] == pytest.approx(summary[f"{ours['metric']}_stderr,none"])


def test_char_model_on_a_task_outside_its_characters_is_one_line(evals, tmp_path):
    """A char tokenizer has ids only for its corpus's characters: a task written in others stops in one line."""
    import tokenization
    from test_sample import save_ckpt, tiny_gpt
    tok = tokenization.char_tokenizer(["abc de\n"])
    save_ckpt(tmp_path / "run", tiny_gpt(tok.vocab_size), tok.spec())
    with pytest.raises(SystemExit, match=r"evaluate\.py: error: character '\w' \(U\+00\w\w, at offset \d+\) is not one "
                                         r"of the char tokenizer's 7 characters .*; a char model scores only tasks"):
        ev.main(["--ckpt", str(tmp_path / "run"), "--tasks", "copa", "--limit", "2", "--data-dir", str(evals),
                 "--quiet", "--device", "cpu"])
