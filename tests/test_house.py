"""The house's rules: import contracts (import-linter), no imports hidden in functions, each mechanism once,
and a checkpoint written before the runtime / config / checkpoint split still loads, samples and resumes."""
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoint
import config
import sample
import train
from load import load_model

REPO = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in REPO.glob("*.py"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def lint(root: Path) -> subprocess.CompletedProcess:
    """import-linter's own command, run in root (a checkout: its modules, scripts/, .importlinter)."""
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- import contracts

def test_import_contracts_hold_and_name_every_module():
    layers = re.search(r"^layers\s*=\s*\n((?:\s+.+\n?)+)", (REPO / ".importlinter").read_text(), re.M).group(1)
    assert sorted(layers.replace("|", " ").split()) == MODULES, "every top-level module is on a layer"
    r = lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("model.py", "\n\ndef _load():\n    import sample  # noqa\n", "import no script"),   # even inside a function
    ("runtime.py", "\nimport sample  # noqa\n", "import no script"),
    ("hellaswag.py", "\nimport train  # noqa\n", "except bench.py"),
    ("token_shards.py", "\nimport checkpoint  # noqa\n", "no cycles"),                    # checkpoint -> token_shards
    ("sample.py", "\nimport perplexity  # noqa\n", "no cycles"),                          # perplexity -> sample
])
def test_a_broken_import_breaks_its_contract(tmp_path, module, line, broken):
    for name in MODULES:
        shutil.copy(REPO / f"{name}.py", tmp_path)
    shutil.copy(REPO / ".importlinter", tmp_path)
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "import_contracts.py", tmp_path / "scripts")
    with open(tmp_path / module, "a") as f:
        f.write(line)
    r = lint(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    report = r.stdout.split("Broken contracts")[1]
    assert broken in report and Path(module).stem in report


def test_no_repo_module_is_imported_inside_a_function():
    """Imports inside functions are for optional dependencies only (transformers, wandb, ...), never a way
    around an import cycle between our own modules."""
    hidden = []
    for name in MODULES:
        tree = ast.parse((REPO / f"{name}.py").read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                hidden += [f"{name}.py:{node.lineno} imports {n}" for n in names if n.split(".")[0] in MODULES]
    assert not hidden, hidden


# ----------------------------------------------------------------------------- each mechanism once

ONE_HOME = {  # what (a pattern in the code) -> the only files allowed to contain it
    "prefix stripping": (r"_orig_mod\.", {"checkpoint.py"}),
    "ckpt_N naming": (r'f"ckpt_\{|ckpt_\(\\d', {"checkpoint.py"}),
    "temp file then rename": (r"os\.replace\(", {"token_shards.py", "parallel.py", "export_hf.py"}),  # parallel: the
    # multi-rank save; export_hf: an export is written and verified beside --out, then moved in without touching others
    "autocast": (r"torch\.autocast\((?!dev, enabled=False)", {"runtime.py"}),  # model.py: the fused loss turns it off
    "all-gather": (r"all_gather_object|all_reduce\(", {"runtime.py"}),
    "process group": (r"init_process_group|destroy_process_group|dist\.barrier|dist\.get_rank", {"runtime.py"}),
    "dtype rule": (r"is_bf16_supported", {"runtime.py"}),
    "device sync": (r"cuda\.synchronize|mps\.synchronize", {"runtime.py"}),
    "GPT-2 ranks": (r"load_tiktoken_bpe|_mergeable_ranks", {"tokenization.py"}),
    "tokenizer spec kinds": (r'"r50k_base"|"spm"', {"tokenization.py"}),
    "peak FLOPs": (r"989e12", {"runtime.py"}),
    "a GPT from a file": (r"model_parts\(|from_hf_state_dict\(", {"checkpoint.py", "hf_mapping.py", "load.py"}),
}


@pytest.mark.parametrize("what", ONE_HOME)
def test_each_mechanism_lives_in_one_place(what):
    pattern, allowed = ONE_HOME[what]
    code = {name: "\n".join(line for line in (REPO / f"{name}.py").read_text().splitlines()
                            if not line.lstrip().startswith("#")) for name in MODULES}
    found = {f"{name}.py" for name, text in code.items() if re.search(pattern, text)}
    assert found and found <= allowed, f"{what}: found in {sorted(found)}, belongs in {sorted(allowed)}"


def test_train_py_is_the_loop_only():
    lines = len((REPO / "train.py").read_text().splitlines())
    assert lines <= 700, f"train.py has {lines} lines; config, runtime and checkpoint code live elsewhere"


def test_model_py_is_the_model_alone():
    """One file a newcomer reads in a sitting: no optimizer (optim.py), no Hugging Face code (export_hf.py). 800 lines
    until 2026-12-06, when RMSNorm's and relu^2's written-out gradients (CPU step cost, issue 22) came in: the
    export runs model.py alone, so they cannot live elsewhere."""
    source = (REPO / "model.py").read_text()
    assert len(source.splitlines()) <= 850, "model.py is over 850 lines"
    assert not re.search(r"torch\.optim|transformers|AdamW", source)


MAX_CLASS_LINES, MAX_FUNCTION_LINES = 200, 60


def test_no_class_over_200_lines_and_no_function_over_60():
    long = [f"{m}.{name} ({node.end_lineno - node.lineno + 1} lines)" for m in MODULES
            for name, node in definitions((REPO / f"{m}.py").read_text())
            if node.end_lineno - node.lineno + 1 > (MAX_CLASS_LINES if isinstance(node, ast.ClassDef)
                                                     else MAX_FUNCTION_LINES)]
    assert not long, long


def python_in_strings(source: str) -> list[str]:
    """String constants that hold Python code (a def, class or import statement at a line start)."""
    return [node.value.splitlines()[0][:60] for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.search(r"^\s*(def |class |import \w|from [\w.]+ import )", node.value, re.M)]


def test_no_python_source_in_string_constants():
    """Code the repo ships (the export's remote code) lives in real files, linted and imported by the tests."""
    assert python_in_strings('X = """\nimport torch\nclass A:\n    pass\n"""') == [""]
    found = {m: python_in_strings((REPO / f"{m}.py").read_text()) for m in MODULES}
    assert not any(found.values()), {m: f for m, f in found.items() if f}


# ----------------------------------------------------------------------------- names and signatures

MAX_PARAMETERS = 8  # self / cls not counted


def definitions(source: str, prefix: str = ""):
    """(qualified name, node) of every function and class in a module's source, methods and nested ones too."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield prefix + child.name, child
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(ast.parse(source), prefix)


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args] + [x.arg for x in a.kwonlyargs] + [
        x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return len(names) - (names[:1] in (["self"], ["cls"]))


def long_signatures(source: str) -> list[str]:
    return [f"{name} ({parameter_count(node)} parameters)" for name, node in definitions(source)
            if not isinstance(node, ast.ClassDef) and parameter_count(node) > MAX_PARAMETERS]


def named_like_a_module(source: str, module: str) -> set[str]:
    return {name for name, node in definitions(source, f"{module}.") if node.name.lower() in MODULES}


def test_the_name_and_signature_checks_catch_what_they_are_for():
    source = ("class Sample:\n    def evaluate(self, a, b, c, d, e, f, g, h): ...\n"
              "def long(a, b, c, d, e, f, g, *h, i, **j): ...\ndef ok(a, b, c, d, e, f, g, h): ...\n")
    assert long_signatures(source) == ["long (10 parameters)"]
    assert named_like_a_module(source, "x") == {"x.Sample", "x.Sample.evaluate"}


@pytest.mark.parametrize("name", MODULES)
def test_no_function_takes_more_than_eight_parameters(name):
    """Long positional chains hide which value is which: settings are grouped in small dataclasses (TaskSetup,
    Scoring, Sweep, Decoding, SampleConfig), built once and passed by name."""
    assert not long_signatures((REPO / f"{name}.py").read_text()), f"{name}.py: group the settings into a dataclass"


def test_no_function_or_class_is_named_like_a_module():
    """`evaluate` was a module, two functions and a method: a name says which one it is."""
    found = set().union(*(named_like_a_module((REPO / f"{m}.py").read_text(), m) for m in MODULES))
    assert not found, sorted(found)


# ----------------------------------------------------------------------------- old checkpoints

@pytest.fixture(scope="module")
def legacy():
    """A step-3 checkpoint of a 1-layer char model (dropout 0.1) written by main @ 96bfce9, before the split,
    and what that code did next: the losses of resuming to step 6, the logits and a greedy sample."""
    return FIXTURES / "legacy_ckpt_0000003.pt", json.loads((FIXTURES / "legacy_expected.json").read_text())


def legacy_args(data_dir, out_dir, **over) -> list[str]:
    """The settings the legacy run was trained with."""
    args = dict(data_dir=data_dir, out_dir=out_dir, vocab_size=65, block_size=32, n_layer=1, n_head=2, n_embd=32,
                batch_size=4, total_batch_size=0, max_iters=6, warmup_iters=2, learning_rate=3e-3, eval_interval=3,
                eval_iters=2, log_interval=1, sample_tokens=0, device="cpu", keep_last=5, dropout=0.1)
    return [f"--{k}={v}" for k, v in {**args, **over}.items()]


def test_legacy_checkpoint_needs_the_trust_opt_in(legacy, char_data, tmp_path):
    """It pickles NumPy's RNG state, so it only loads with full unpickling: asked for explicitly."""
    path, _ = legacy
    with pytest.raises(checkpoint.UntrustedCheckpoint, match="numpy.*--trust-checkpoint"):
        checkpoint.load_checkpoint(path)
    with pytest.raises(config.ConfigError, match="--trust_checkpoint=True"):
        train.run(config.load_config(None, legacy_args(char_data, tmp_path, resume=path)))


def test_legacy_checkpoint_loads_and_samples_as_before(legacy):
    path, want = legacy
    model, tok = load_model(path, trust=True, tokenizer="required")
    x = torch.tensor([tok.encode(want["prompt"])])
    with torch.no_grad():
        logits = model(x)[0, -1]
    torch.testing.assert_close(logits, torch.tensor(want["last_logits"]), rtol=0, atol=1e-6)
    out = sample.generate_samples(model, tok, sample.Prompt(tok.encode(want["prompt"])),
                                  sample.SampleConfig(max_new_tokens=20, decoding=sample.GREEDY))
    assert out[0].text == want["greedy_20"]
    assert load_model(path, trust=True, tokenizer="skip")[0].config == model.config


def test_legacy_checkpoint_resumes_to_the_same_losses(legacy, char_data, tmp_path):
    """The char data of conftest is the data the checkpoint was trained on (same text, same tokenizer)."""
    path, want = legacy
    shutil.copy(path, tmp_path / "ckpt_0000003.pt")
    res = train.run(config.load_config(None, legacy_args(char_data, tmp_path, trust_checkpoint=True) + ["--resume"]))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = {str(r["step"]): r["loss"] for r in rows if r["type"] == "train"}
    assert losses == pytest.approx(want["resume_losses"], rel=0, abs=1e-6)
    assert res["val_loss"] == pytest.approx(want["resume_val_loss"], rel=0, abs=1e-6)
