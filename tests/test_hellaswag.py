"""hellaswag.py: HellaSwag's rows, tie rule, batching, preprocessing, DDP, data file, bad data (the engine
under it is evaluate.py; see test_evaluate.py)."""
import json
import math

import pytest
import torch
from stubs import ByteTokenizer, CausalMixModel, OracleModel, UniformModel

import evaluate as ev
import hellaswag as hs
from test_sample import gpt2_run  # noqa: F401  (fixture: a tiny GPT-2-tokenizer checkpoint)


# --- fixtures: byte tokenizer, stub models, tiny data file -------------------------------------


EXAMPLES = [
    {"ind": 0, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                             "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"ind": 1, "activity_label": "Cooking", "ctx_a": "A woman stands in a kitchen.", "ctx_b": "she",
     "label": 0, "endings": ["cracks two eggs.", "sings.", "runs off.", "paints the long wall blue."]},
    {"ind": 2, "activity_label": "Tennis", "ctx_a": "Two players walk onto a court.", "ctx_b": "",
     "label": 1, "endings": ["They dance.", "They warm up with a rally.", "A dog sleeps.", "Rain falls."]},
    {"ind": 3, "activity_label": "Home [title] Paint", "ctx_a": "[header] How to paint [step] Buy paint.",
     "ctx_b": "then you", "label": 2, "endings": ["[substeps] wait.", "eat lunch now.", "open the can.",
                                                   "x"]},
    {"ind": 4, "activity_label": "Running", "ctx_a": "A man laces his shoes.", "ctx_b": "he",
     "label": 2, "endings": ["jogs", "sits", "runs down the road.", "flies away quickly"]},
]
for _ex in EXAMPLES:
    _ex["ctx"] = _ex["ctx_a"] + (" " + _ex["ctx_b"] if _ex["ctx_b"] else "")


def write_jsonl(path, examples):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def requests(ex, style, max_len=None):
    """The 4 scored requests of one example, in ending order."""
    return ev.make_requests([hs.TASK.build(ex, style)], ByteTokenizer(), style, max_len)[0]


def correct_sequences(examples, style):
    return [requests(ex, style)[ex["label"]].tokens for ex in examples]


# --- scoring rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", hs.STYLES)
def test_oracle_model_scores_100_percent(style):
    model = OracleModel(correct_sequences(EXAMPLES, style))
    res = hs.score(model, ByteTokenizer(), EXAMPLES, ev.TaskSetup(style), ev.Scoring(token_budget=100))
    assert res["acc"] == 1.0 and res["acc_norm"] == 1.0
    assert res["num_examples"] == len(EXAMPLES) and res["style"] == style
    assert res["reference_gpt2_124m"] == dict(hs.REFERENCE[style])


def test_uniform_model_follows_documented_tie_rule():
    """Uniform logits: acc -> fewest ending tokens (first if tied); completion acc_norm -> ending 0;
    harness acc_norm -> highest chars/token, i.e. with 1 byte per char the longest ending (first if tied)."""
    tok = ByteTokenizer()
    res = hs.score(UniformModel(), tok, EXAMPLES, ev.TaskSetup("completion"), ev.Scoring(token_budget=150))
    for ex, p in zip(EXAMPLES, res["predictions"]):
        n_tokens = [len(tok.encode(" " + e)) for e in ex["endings"]]
        assert p["pred"] == n_tokens.index(min(n_tokens))
        assert p["pred_norm"] == 0
    # hand-worked " " + ending byte counts: [38, 28, 27, 37], [17, 7, 10, 27], [12, 27, 14, 12] (tie),
    # [17, 15, 14, 2], [5, 5, 20, 19] (tie)
    assert [p["pred"] for p in res["predictions"]] == [2, 1, 0, 3, 0]
    assert res["predictions"][4]["losses"][0] == res["predictions"][4]["losses"][1]  # exact tie
    assert res["num_correct_norm"] == 1  # every pred_norm is 0; labels are [3, 0, 1, 2, 2]
    res = hs.score(UniformModel(), tok, EXAMPLES, ev.TaskSetup("harness"), ev.Scoring(token_budget=150))
    assert [p["pred"] for p in res["predictions"]] == [2, 1, 0, 3, 0]
    # tokens / chars per ending (harness continuation = " " + preprocessed ending); lowest ratio wins:
    # 28/27 vs 37/36 -> 0; 27/26 -> 3; 27/26 -> 1; " wait." 7/6, 15/14, 14/13, 2/1 -> 1; 20/19 -> 2
    assert [p["pred_norm"] for p in res["predictions"]] == [0, 3, 1, 1, 2]
    logv = math.log(256)
    assert res["predictions"][4]["losses"][0] == pytest.approx(5 * logv)  # " jogs" = 5 tokens


@pytest.mark.parametrize("style", hs.STYLES)
def test_batched_equals_unbatched_exactly(style):
    model = CausalMixModel()
    one = hs.score(model, ByteTokenizer(), EXAMPLES, ev.TaskSetup(style), ev.Scoring(token_budget=1))  # row by row
    many = hs.score(model, ByteTokenizer(), EXAMPLES, ev.TaskSetup(style), ev.Scoring(token_budget=10**6))
    odd = hs.score(model, ByteTokenizer(), EXAMPLES, ev.TaskSetup(style), ev.Scoring(token_budget=150))
    assert one["predictions"] == many["predictions"] == odd["predictions"]  # losses compared with ==
    assert one["acc"] == many["acc"] and one["acc_norm"] == many["acc_norm"]


def test_long_context_truncated_from_the_left():
    model, tok = CausalMixModel(), ByteTokenizer()
    ex = dict(EXAMPLES[0], ctx="word " * 200)
    res = hs.score(model, tok, [ex], ev.TaskSetup("completion", context=64))
    assert res["num_truncated_rows"] == 4
    row = requests(ex, "completion", max_len=64)[1]
    assert len(row.tokens) == 65 and row.tokens[-row.n_cont:] == tok.encode(" " + ex["endings"][1])


def test_real_gpt_batched_matches_unbatched():
    model_mod = pytest.importorskip("model")
    torch.manual_seed(0)
    cfg = model_mod.GPTConfig(block_size=64, vocab_size=256, pad_vocab_multiple=1, n_layer=1, n_head=2,
                              n_embd=32)
    model = model_mod.GPT(cfg)
    one = hs.score(model, ByteTokenizer(), EXAMPLES, scoring=ev.Scoring(token_budget=1))
    many = hs.score(model, ByteTokenizer(), EXAMPLES, scoring=ev.Scoring(token_budget=10**6))
    assert [p["pred"] for p in one["predictions"]] == [p["pred"] for p in many["predictions"]]
    assert [p["pred_norm"] for p in one["predictions"]] == [p["pred_norm"] for p in many["predictions"]]
    for a, b in zip(one["predictions"], many["predictions"]):
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    assert model.training  # scoring restores the mode it found


# --- preprocessing, hand-worked on lines of the real file ----------------------------------------


def real_lines(shared_data, numbers):
    lines = (shared_data / "hellaswag_val.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(lines[n - 1]) for n in numbers]


def test_preprocessing_matches_hand_worked_real_examples(shared_data):
    roof, lady, fashion = real_lines(shared_data, [1, 2, 3244])
    # completion style: ctx as is, endings with a leading space
    assert roof["ctx"] == "A man is sitting on a roof. he"
    # harness style: "activity_label: ctx_a Ctx_b", WikiHow brackets removed, double spaces collapsed
    def harness_query(ex):
        return hs.TASK.build(ex, "harness").contexts[0]

    def harness_choices(ex):
        return [c[1:] for c in hs.TASK.build(ex, "harness").continuations]  # without the delimiter space

    assert harness_query(roof) == "Roof shingle removal: A man is sitting on a roof. He"
    assert harness_query(lady) == ("Clean and jerk: A lady walks to a barbell. She bends down and grabs "
                                      "the pole. The lady")
    assert harness_choices(lady)[3] == "stands and lifts the weight over her head."
    assert harness_query(fashion) == (
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school diploma or "
        "ged. This job requires a high school diploma or equivalent, so make sure to apply yourself and "
        "finish school. If your high school offers these classes, take art, design, and sewing to "
        "familiarize yourself with foundational concepts in fashion.")
    choices = harness_choices(fashion)
    # strip happens before bracket removal, so a leading "[substeps]" leaves a leading space,
    # and " [title]" after a full stop becomes ".."
    assert choices[0] == (" Many high schools have classes offered for their students who do not have a "
                          "high school diploma, so be sure to register to take these classes and find a job "
                          "in your field.. Search for entry-level positions in fashion industries.")
    assert choices[3] == (" Earn a bachelor's degree in a fashion-related field. Degrees for the fashion "
                          "industry include art, fashion merchandising, and marketing.")


def test_harness_rows_use_joint_tokenization(shared_data):
    tok = ByteTokenizer()
    (roof,) = real_lines(shared_data, [1])
    rows = requests(roof, "harness")
    q = "Roof shingle removal: A man is sitting on a roof. He"
    assert rows[3].tokens == tok.encode(q + " starts pulling up roofing on a roof.")
    assert rows[3].n_cont == len(" starts pulling up roofing on a roof.")
    assert hs.TASK.build(roof, "harness").chars[3] == len("starts pulling up roofing on a roof.")  # no space
    crow = requests(roof, "completion")[3]
    assert crow.tokens == tok.encode("A man is sitting on a roof. he starts pulling up roofing on a roof.")
    assert crow.n_cont == len(" starts pulling up roofing on a roof.")


def test_real_file_loads_completely(shared_data):
    examples = hs.load_examples(shared_data / "hellaswag_val.jsonl")
    assert len(examples) == hs.NUM_VAL_EXAMPLES
    assert examples[0]["label"] == 3 and examples[-1]["endings"][0]


# --- DDP ------------------------------------------------------------------------------------


def test_ranks_together_equal_one_process():
    model, tok = CausalMixModel(), ByteTokenizer()
    full = hs.score(model, tok, EXAMPLES, scoring=ev.Scoring(token_budget=150))
    parts = [hs.score(model, tok, EXAMPLES, scoring=ev.Scoring(token_budget=150, rank=r, world_size=3))
             for r in range(3)]
    merged = sorted((p for part in parts for p in part["predictions"]), key=lambda p: p["index"])
    assert merged == full["predictions"]
    assert sum(p["num_correct_norm"] for p in parts) == full["num_correct_norm"]


def _ddp_worker(rank, world_size, port, out_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    res = hs.score(CausalMixModel(), ByteTokenizer(), EXAMPLES,
                   scoring=ev.Scoring(token_budget=150, rank=rank, world_size=world_size))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def test_ddp_all_reduce_with_gloo(tmp_path):
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers skip re-importing torch (spawn costs seconds per process on 2 busy cores)
    mp.start_processes(_ddp_worker, args=(2, port, tmp_path), nprocs=2, join=True, start_method="fork")
    full = hs.score(CausalMixModel(), ByteTokenizer(), EXAMPLES, scoring=ev.Scoring(token_budget=150))
    for r in range(2):
        res = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert res["num_examples"] == len(EXAMPLES)
        assert res["num_correct"] == full["num_correct"] and res["acc_norm"] == full["acc_norm"]
        assert [p["index"] for p in res["predictions"]] == list(range(len(EXAMPLES)))


# --- data file handling and bad input -------------------------------------------------------------


def test_data_file_from_env_and_limit(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "hs.jsonl", EXAMPLES)
    monkeypatch.setenv(hs.DATA_ENV, str(path))
    assert len(hs.load_examples()) == len(EXAMPLES)
    assert [e["ind"] for e in hs.load_examples(limit=2)] == [0, 1]


@pytest.mark.parametrize("bad, why", [("{not json", "invalid JSON"),
                                      (json.dumps({"ctx": "x"}), "missing"),
                                      (json.dumps(dict(EXAMPLES[0], label=7)), "answer index 7"),
                                      (json.dumps(dict(EXAMPLES[0], endings=["a", "b"])), "answer index 3"),
                                      (json.dumps(dict(EXAMPLES[0], endings=[1, 2, 3, 4])), "Error: .int.")])
def test_malformed_line_reports_line_number(tmp_path, bad, why):
    lines = [json.dumps(EXAMPLES[0]), json.dumps(EXAMPLES[1]), bad, json.dumps(EXAMPLES[2])]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: malformed.*{why}"):
        hs.load_examples(path)


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_data_file_is_an_error(tmp_path, content):
    """An empty (or blank-lines-only) file would score 0/0: a one-line error instead."""
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"no examples in .*empty\.jsonl"):
        hs.load_examples(path)
    with pytest.raises(SystemExit, match=r"^hellaswag\.py: error: no examples in .*empty\.jsonl") as e:
        hs.main(["--ckpt", str(tmp_path / "unused.pt"), "--data", str(path), "--device", "cpu"])
    assert "\n" not in e.value.code


def test_missing_data_names_the_data_flag_and_hellaswag_file(tmp_path, monkeypatch):
    def offline(split):
        raise ConnectionError("no network")
    monkeypatch.setattr(ev, "download", offline)
    monkeypatch.delenv(hs.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"set HELLASWAG_FILE=path/to/hellaswag_val\.jsonl \(or pass --data FILE\)"):
        hs.load_examples()


def test_out_checked_before_scoring_and_its_folder_made(gpt2_run, shared_data, tmp_path, monkeypatch):  # noqa: F811
    with pytest.raises(SystemExit, match=r"^hellaswag\.py: error: --out \S+ is a directory; give a file name"):
        hs.main(["--ckpt", str(tmp_path / "unused.pt"), "--data", str(tmp_path / "unused.jsonl"), "--out", str(tmp_path)])
    out = tmp_path / "new" / "r.json"
    hs.main(["--ckpt", str(gpt2_run), "--data", str(shared_data / "hellaswag_val.jsonl"), "--limit", "2",
             "--out", str(out), "--quiet", "--device", "cpu"])
    assert json.loads(out.read_text())["num_examples"] == 2


def test_missing_data_file_and_bad_style(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        hs.load_examples(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown style"):
        hs.score(UniformModel(), ByteTokenizer(), EXAMPLES, ev.TaskSetup("mmlu"))


def test_result_text_names_style_and_reference():
    res = hs.score(UniformModel(), ByteTokenizer(), EXAMPLES, ev.TaskSetup("harness"))
    text = hs.format_result(res)
    assert "harness style" in text and "0.2892" in text and "0.3114" in text and "PARTIAL" in text
