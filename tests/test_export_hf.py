"""export_hf.py: every toggle combination exports to transformers and loads back with equal logits."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import export_hf as E  # noqa: E402
import sample  # noqa: E402
from hf_remote_code.configuration_nanogpt import NanoGPTConfig  # noqa: E402
from hf_remote_code.modeling_nanogpt import NanoGPTForCausalLM  # noqa: E402
from hf_remote_code.tokenization_nanogpt import NanoGPTSentencePieceTokenizer  # noqa: E402
from load import load_model  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

ATOL = 1e-4


# (case id, GPTConfig toggles, transformers class it must load as)
CASES = [
    ("gpt2", dict(), "GPT2LMHeadModel"),
    ("gpt2_untied_nobias_relu2", dict(tie_embeddings=False, bias=False, mlp="relu2"), "GPT2LMHeadModel"),
    ("llama_gqa", dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2, rope_theta=500.0),
     "LlamaForCausalLM"),
    ("llama_mqa_bias_untied", dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1,
                                   tie_embeddings=False), "LlamaForCausalLM"),
    ("qwen3_qk_norm", dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, qk_norm=True, n_kv_head=2),
     "Qwen3ForCausalLM"),
    ("starcoder2_rope_gelu_ln_gqa", dict(pos_emb="rope", n_kv_head=2), "Starcoder2ForCausalLM"),
    ("phi_parallel_nobias", dict(pos_emb="rope", parallel_residual=True, bias=False), "PhiForCausalLM"),
    ("remote_alibi_parallel", dict(pos_emb="alibi", parallel_residual=True), "NanoGPTForCausalLM"),
    ("remote_learned_relu2_qk_norm", dict(mlp="relu2", qk_norm=True, bias=False), "NanoGPTForCausalLM"),
    ("remote_rope_rmsnorm_gelu", dict(pos_emb="rope", norm="rmsnorm", n_kv_head=1), "NanoGPTForCausalLM"),
    ("remote_nope_untied", dict(pos_emb="none", tie_embeddings=False, mlp="swiglu"), "NanoGPTForCausalLM"),
    ("remote_llama_softcap", dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, logit_softcap=0.5),
     "NanoGPTForCausalLM"),                              # a Llama block, but no native class caps the logits
    ("remote_gpt2_value_embeds_x0_unet", dict(value_embeds=1, x0_mix=True, unet_skips=True), "NanoGPTForCausalLM"),
    ("remote_llama_windows_docs", dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2,
                                       window_pattern="SL", window_short=5, window_long=20, doc_mask_token=3),
     "NanoGPTForCausalLM"),                              # windows/documents: no native class masks like ours
    ("remote_alibi_windows_docs_ve", dict(pos_emb="alibi", parallel_residual=True, window_pattern="S", window_short=7,
                                          doc_mask_token=5, value_embeds=1), "NanoGPTForCausalLM"),
]


def tiny_config(**kw) -> GPTConfig:
    base = dict(block_size=64, vocab_size=100, pad_vocab_multiple=64, n_layer=2, n_head=4, n_embd=32)
    return GPTConfig(**{**base, **kw})


def random_model(config: GPTConfig, seed: int = 0) -> GPT:
    """GPT with random weights, incl. non-trivial biases and norm gains (zeros/ones would hide mix-ups)."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
    return model


def load_hf(path, remote: bool):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=remote, dtype=torch.float32).eval()


@pytest.mark.parametrize("case,toggles,hf_class", CASES, ids=[c[0] for c in CASES])
def test_export_logits_generate_and_import(tmp_path, case, toggles, hf_class):
    model = random_model(tiny_config(**toggles))
    family = E.export(model, tmp_path / "hf", tokenizer=False)
    assert E.HF_CLASS[family] == hf_class
    hf = load_hf(tmp_path / "hf", remote=family == E.REMOTE_FAMILY)
    assert type(hf).__name__ == hf_class
    assert hf.config.vocab_size == model.config.vocab_size  # padded rows are not exported

    idx = torch.randint(0, model.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx)
        theirs = hf(idx).logits
        assert theirs.shape == ours.shape
        assert (theirs - ours).abs().max().item() < ATOL

        prompt = idx[:1, :6]
        want = sample.generate(model, prompt, 20, sample.GREEDY)
        got = hf.generate(prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
        assert torch.equal(got, want)

        back, _ = load_model(tmp_path / "hf")
        assert back.config == model.config
        assert (back(idx) - ours).abs().max().item() < ATOL
        via_init_from, _ = load_model(str(tmp_path / "hf"), pad_vocab_multiple=model.config.pad_vocab_multiple)
        assert (via_init_from(idx) - ours).abs().max().item() < ATOL


def test_falcon_is_not_used_for_alibi():
    """GPT* (ALiBi + parallel residual + one norm) goes to remote code: Falcon scales ALiBi by 1/sqrt(head_dim)."""
    c = tiny_config(pos_emb="alibi", parallel_residual=True)
    assert E.family_of(c) == E.REMOTE_FAMILY
    assert "Falcon" in E.why_remote(c)


@pytest.mark.parametrize("toggle,reason", [
    (dict(value_embeds=1), "value embeddings (value_embeds=1)"), (dict(x0_mix=True), "x0 mixing"),
    (dict(unet_skips=True), "U-net skips"), (dict(window_pattern="LS"), "attention windows (window_pattern='LS')"),
    (dict(doc_mask_token=3), "document masking (doc_mask_token=3)")])
def test_speedrun_toggles_export_as_remote_code_and_say_why(toggle, reason):
    c = tiny_config(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, **toggle)  # else a Llama
    assert E.family_of(c) == E.REMOTE_FAMILY
    assert reason in E.why_remote(c) and "no native class" in E.why_remote(c)


def test_remote_export_of_documents_and_windows_matches_on_rows_with_documents(tmp_path):
    """The CASES draw random ids, which rarely hold the document token: here every row splits."""
    model = random_model(tiny_config(pos_emb="rope", window_pattern="LS", window_short=6, doc_mask_token=3))
    E.export(model, tmp_path / "hf", tokenizer=False)
    hf = load_hf(tmp_path / "hf", remote=True)
    idx = torch.randint(4, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(2))
    idx[0, [0, 9, 10, 30]], idx[1, [17]] = 3, 3
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)).abs().max().item() < ATOL
        prompt = idx[:, :12]
        want = sample.generate(model, prompt, 12, sample.GREEDY)
        assert torch.equal(hf.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                       pad_token_id=0), want)


def test_import_plain_transformers_gpt2_and_llama(tmp_path):
    """load_model also reads GPT-2 / Llama directories that export_hf.py did not write."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4)),
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              max_position_embeddings=64, tie_word_embeddings=False)),
    }
    idx = torch.randint(0, 100, (2, 20))
    for name, hf in models.items():
        hf.eval().save_pretrained(tmp_path / name)
        ours, _ = load_model(tmp_path / name)
        with torch.no_grad():
            assert (ours(idx) - hf(idx).logits).abs().max().item() < ATOL, name


# ----------------------------------------------------------------------------- tokenizers

@pytest.fixture(scope="module")
def shakespeare(shared_data) -> str:
    return (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def gpt2_export(tmp_path_factory, gpt2_tiktoken_file):
    """A tiny model with the GPT-2 tokenizer, exported once for the tokenizer and lm_eval tests."""
    tokenization = pytest.importorskip("tokenization")
    tok = tokenization.gpt2_tokenizer(str(gpt2_tiktoken_file))
    model = random_model(tiny_config(vocab_size=tok.vocab_size, block_size=256))
    out = tmp_path_factory.mktemp("gpt2_export") / "hf"
    E.export(model, out, tokenizer=tok, tiktoken_file=str(gpt2_tiktoken_file))
    return model, tok, out


def test_gpt2_tokenizer_round_trip(gpt2_export, shakespeare, shared_data):
    from transformers import AutoTokenizer
    model, tok, out = gpt2_export
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    para = shakespeare[:3000]
    assert hf_tok(para)["input_ids"] == tok.encode(para)
    assert hf_tok.decode(tok.encode(para)) == para
    assert hf_tok.eos_token_id == 50256 and load_hf(out, False).config.eos_token_id == 50256
    # the files rebuilt from tiktoken ranks are byte-identical to OpenAI's encoder.json / vocab.bpe
    assert (out / "vocab.json").read_bytes() == (shared_data / "encoder.json").read_bytes()
    assert (out / "merges.txt").read_bytes() == (shared_data / "vocab.bpe").read_bytes()


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_tokenizer_round_trip(tmp_path, shakespeare, model_type):
    from transformers import AutoTokenizer
    tokenization = pytest.importorskip("tokenization")
    tok = tokenization.train_sentencepiece([shakespeare[:100_000]], vocab_size=400, model_type=model_type)
    model = random_model(tiny_config(vocab_size=tok.vocab_size, pos_emb="rope", norm="rmsnorm", mlp="swiglu"))
    E.export(model, tmp_path / "hf", tokenizer=tok)
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    tokenizers = [hf_tok]
    if model_type == "unigram":  # the export's copy of hf_remote_code/tokenization_nanogpt.py, and the repo's
        assert (tmp_path / "hf" / "tokenization_nanogpt.py").read_bytes() == E.REMOTE_TOKENIZER_FILE.read_bytes()
        tokenizers.append(NanoGPTSentencePieceTokenizer(str(tmp_path / "hf" / "tokenizer.model")))
    for para in (shakespeare[:3000], shakespeare[600_000:603_000]):
        for t in tokenizers:
            assert t(para)["input_ids"] == tok.encode(para)
            assert t.decode(tok.encode(para)) == para
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (tok.bos_id, tok.eos_id)
    assert config["max_position_embeddings"] == model.config.block_size


def test_char_tokenizer_round_trip_without_remote_code(tmp_path, shakespeare, capsys):
    """nanoGPT's char tokenizer exports as a plain tokenizer.json: AutoTokenizer (no trust_remote_code) gives our
    ids and decodes back exactly, and load.py reads the export's tokenizer back as the same char tokenizer."""
    from transformers import AutoTokenizer
    import tokenization
    tok = tokenization.char_tokenizer([shakespeare])
    write_checkpoint(tmp_path / "c.pt", random_model(tiny_config(vocab_size=tok.vocab_size)), tok.spec())
    E.main(["--ckpt", str(tmp_path / "c.pt"), "--out", str(tmp_path / "hf")])
    out = capsys.readouterr().out
    assert f"AutoTokenizer.from_pretrained({str(tmp_path / 'hf')!r})\n" in out and "trust_remote_code" not in out
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for para in (shakespeare[:3000], "  a ,b\n\n  c .  \n\nI' the  end ?!"):
        assert hf_tok(para)["input_ids"] == tok.encode(para)
        assert hf_tok.decode(tok.encode(para)) == para
    assert len(hf_tok) == tok.vocab_size == 65 and hf_tok.decode([0, 1, 13]) == "\n A"
    with pytest.raises(Exception, match="UNK"):             # no id for a character the corpus lacked, as ours
        hf_tok("7")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["vocab_size"]) == (None, None, 65)
    _, again = load_model(tmp_path / "hf")
    assert again.kind == "char" and again.chars == tok.chars and again.sha256 == tok.sha256


# ----------------------------------------------------------------------------- checkpoints and bad input

def write_checkpoint(path, model: GPT, tokenizer_spec=None, drop_fields=()):
    cfg = {k: v for k, v in vars(model.config).items() if k not in drop_fields}
    torch.save({"format": 1, "model_config": cfg, "model": model.state_dict(), "tokenizer": tokenizer_spec,
                "step": 1}, path)


def test_cli_from_checkpoint_and_bad_inputs(tmp_path, capsys):
    model = random_model(tiny_config(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False))
    ckpt = tmp_path / "ckpt_0000001.pt"
    write_checkpoint(ckpt, model)
    out = tmp_path / "hf"
    E.main(["--ckpt", str(tmp_path), "--out", str(out)])  # a run directory -> its newest ckpt_*.pt
    assert "LlamaForCausalLM" in capsys.readouterr().out
    assert (out / "model.safetensors").exists()

    with pytest.raises(SystemExit, match="exists.*--overwrite"):
        E.main(["--ckpt", str(ckpt), "--out", str(out)])
    E.main(["--ckpt", str(ckpt), "--out", str(out), "--overwrite"])

    old = tmp_path / "old.pt"  # written before qk_norm / n_kv_head existed
    write_checkpoint(old, model, drop_fields=("qk_norm", "n_kv_head"))
    with pytest.raises(SystemExit, match=r"lacks fields \['n_kv_head', 'qk_norm'\].*--fill-defaults"):
        E.main(["--ckpt", str(old), "--out", str(tmp_path / "old_hf")])
    E.main(["--ckpt", str(old), "--out", str(tmp_path / "old_hf"), "--fill-defaults"])
    with torch.no_grad():
        idx = torch.randint(0, 100, (1, 16))
        assert (load_model(tmp_path / "old_hf")[0](idx) - model(idx)).abs().max() < ATOL

    with pytest.raises(SystemExit, match="does not exist"):
        E.main(["--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")])


# ----------------------------------------------------------------------------- verification

def big_logit_model(**toggles) -> GPT:
    """A random model whose |logits| are in the thousands (the final norm's gain scaled up)."""
    model = random_model(tiny_config(**toggles))
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(10_000)
    return model


def test_verify_tolerance_scales_with_logits_and_model_is_left_alone(tmp_path):
    """float32 rounding of large logits (~1e-7 relative) passes; a bf16 model is compared in float32
    and is still bf16 afterwards."""
    model = big_logit_model()
    with torch.no_grad():
        assert model(torch.arange(32)[None]).abs().max() > 1000
    E.export(model, tmp_path / "big", tokenizer=False, verify=True)
    bf16 = random_model(tiny_config()).to(torch.bfloat16)
    E.export(bf16, tmp_path / "bf16", tokenizer=False, verify=True)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_verify_rejects_a_wrong_mapping(tmp_path, monkeypatch):
    """Swapped or transposed weights still fail verification at large logits; nothing is left behind."""
    model = big_logit_model()
    to_hf = E.to_hf_state_dict

    def swap_layers(m, family):
        sd = to_hf(m, family)
        a, b = "transformer.h.0.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.weight"
        sd[a], sd[b] = sd[b], sd[a]
        return sd

    def transpose(m, family):
        sd = to_hf(m, family)
        name = "transformer.h.0.attn.c_proj.weight"  # square, so the shape does not give it away
        sd[name] = sd[name].t().contiguous()
        return sd

    for broken in (swap_layers, transpose):
        monkeypatch.setattr(E, "to_hf_state_dict", broken)
        with pytest.raises(RuntimeError, match="verification failed"):
            E.export(model, tmp_path / broken.__name__, tokenizer=False, verify=True)
        assert not (tmp_path / broken.__name__).exists()


def test_missing_tokenizer_files(tmp_path, monkeypatch):
    model = random_model(tiny_config())
    monkeypatch.setenv("TIKTOKEN_GPT2_FILE", str(tmp_path / "nope.tiktoken"))
    with pytest.raises(FileNotFoundError, match="nope.tiktoken.*--tiktoken-file"):
        E.export(model, tmp_path / "a", tokenizer={"kind": "gpt2", "vocab_size": 50257})
    with pytest.raises(FileNotFoundError, match="sentencepiece"):
        E.export(model, tmp_path / "b", tokenizer={"kind": "sentencepiece", "model_file": str(tmp_path / "t.model")})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "a")


# ----------------------------------------------------------------------------- lm-evaluation-harness
# (the task-level cross-check of evaluate.py against lm_eval is in test_evaluate.py)

def test_lm_eval_hflm_remote_code(tmp_path, shakespeare):
    """HFLM also runs a trust_remote_code export with the exact sentencepiece tokenizer (right-padded
    batches, no attention mask)."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from lm_eval.models.huggingface import HFLM
    tokenization = pytest.importorskip("tokenization")
    tok = tokenization.train_sentencepiece([shakespeare[:50_000]], vocab_size=400)
    model = random_model(tiny_config(vocab_size=tok.vocab_size, pos_emb="alibi", parallel_residual=True))
    E.export(model, tmp_path / "hf", tokenizer=tok)
    lm = HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=2, dtype="float32",
              trust_remote_code=True)
    reqs = [("the cat", " sat on the mat"), ("a dog ran", " in"), ("the", " park. the cat sat")]
    from lm_eval.api.instance import Instance
    theirs = [ll for ll, _ in lm.loglikelihood(
        [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in reqs], disable_tqdm=True)]
    for (ctx, cont), ll in zip(reqs, theirs):
        whole, c = tok.encode(ctx + cont), tok.encode(ctx)
        idx = torch.tensor([whole[:-1]])
        with torch.no_grad():
            logp = model(idx).log_softmax(-1)[0]
        want = sum(logp[i - 1, whole[i]].item() for i in range(len(c), len(whole)))
        assert abs(ll - want) < ATOL * 10


# ----------------------------------------------------------------------------- remote code (hf_remote_code/)

def test_remote_code_from_the_repo_gives_our_logits_and_loss():
    """hf_remote_code/ imported as code: the wrapper runs the repo's own GPT, returns its logits, shifts
    labels=input_ids into the next-token loss, and refuses padding masks."""
    model = random_model(tiny_config(pos_emb="alibi", parallel_residual=True))
    hf = NanoGPTForCausalLM(NanoGPTConfig(gpt_config=dataclasses.asdict(model.config))).eval()
    hf.gpt.load_state_dict(model.state_dict())
    assert type(hf.gpt) is GPT  # model.py itself, not a copy
    idx = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = hf(idx, labels=idx)
        assert torch.equal(out.logits, model(idx))
        torch.testing.assert_close(out.loss, model(idx[:, :-1], targets=idx[:, 1:]), rtol=1e-5, atol=1e-6)
        padded = torch.ones_like(idx)
        padded[1, :3] = 0
        with pytest.raises(ValueError, match="padding masks"):
            hf(idx, attention_mask=padded)


def test_remote_export_ships_the_repo_files_and_needs_nothing_else(tmp_path):
    """The export's code is hf_remote_code/ and model.py byte for byte. As transformers reads it: the relative
    imports (which it copies with the file) are the shipped files, and the packages it needs are torch and
    transformers only (the repo fallback for model.py sits in a try block, which it skips)."""
    from transformers.dynamic_module_utils import get_imports, get_relative_import_files
    E.export(random_model(tiny_config(pos_emb="alibi")), tmp_path / "hf", tokenizer=False)
    shipped = sorted((tmp_path / "hf").glob("*.py"))
    assert [p.name for p in shipped] == sorted(p.name for p in E.REMOTE_MODEL_FILES)
    for file in E.REMOTE_MODEL_FILES:
        assert (tmp_path / "hf" / file.name).read_bytes() == file.read_bytes(), file.name
    needed = get_relative_import_files(str(tmp_path / "hf" / "modeling_nanogpt.py"))
    assert sorted(Path(f).name for f in needed) == ["configuration_nanogpt.py", "model.py"]
    packages = {name for file in shipped for name in get_imports(str(file))}
    assert packages - set(sys.stdlib_module_names) == {"torch", "transformers"}


def test_loading_an_export_runs_none_of_its_code(tmp_path):
    """Exports written before hf_remote_code/ hold another modeling_nanogpt.py (model.py pasted into it):
    load_model reads config.json and the weights only, so whatever the .py files say, they load."""
    model = random_model(tiny_config(pos_emb="alibi", value_embeds=1))
    E.export(model, tmp_path / "hf", tokenizer=False)
    for file in (tmp_path / "hf").glob("*.py"):
        file.write_text("raise RuntimeError('executed')\n")
    (tmp_path / "hf" / "model.py").unlink()  # the older exports had none
    idx = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "hf")[0](idx), model(idx))


def test_overwrite_replaces_only_the_exports_own_files(tmp_path):
    model = random_model(tiny_config())
    ckpt = tmp_path / "ckpt.pt"
    write_checkpoint(ckpt, model)
    out = tmp_path / "hf"
    E.main(["--ckpt", str(ckpt), "--out", str(out), "--no-verify"])
    (out / "notes.txt").write_text("mine")
    (out / "modeling_nanogpt.py").write_text("# left by an earlier remote-code export")
    E.main(["--ckpt", str(ckpt), "--out", str(out), "--overwrite", "--no-verify"])
    assert (out / "notes.txt").read_text() == "mine"  # a file it did not write is never deleted
    assert not (out / "modeling_nanogpt.py").exists()  # the earlier export's stale file is gone
    assert (out / "model.safetensors").exists() and not list(tmp_path.glob(".hf.export*"))


def test_overwrite_refuses_a_run_directory_and_foreign_files(tmp_path, capsys):
    model = random_model(tiny_config())
    run = tmp_path / "run"
    run.mkdir()
    write_checkpoint(run / "ckpt_0000001.pt", model)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(SystemExit, match="holds a training run.*another directory"):
        E.main(["--ckpt", str(run), "--out", str(run), "--overwrite"])
    assert sorted(p.name for p in run.iterdir()) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(SystemExit, match="did not write"):
        E.main(["--ckpt", str(run), "--out", str(foreign), "--overwrite"])
    assert (foreign / "config.json").read_text() == '{"model_type": "bert"}'


def test_cli_says_when_autotokenizer_needs_trust_remote_code(tmp_path, shakespeare, capsys):
    """A remote-code tokenizer (sentencepiece unigram) or model makes AutoTokenizer ask [y/N] interactively
    without trust_remote_code=True: the printed load lines say so."""
    import tokenization
    tok = tokenization.train_sentencepiece([shakespeare[:100_000]], vocab_size=400, model_type="unigram", num_threads=1)
    for name, toggles, model_trust in (("native", dict(), False), ("remote", dict(pos_emb="alibi"), True)):
        write_checkpoint(tmp_path / f"{name}.pt", random_model(tiny_config(vocab_size=tok.vocab_size, **toggles)),
                         tok.spec())
        E.main(["--ckpt", str(tmp_path / f"{name}.pt"), "--out", str(tmp_path / name), "--no-verify"])
        out = capsys.readouterr().out
        assert f"AutoTokenizer.from_pretrained({str(tmp_path / name)!r}, trust_remote_code=True)" in out
        assert ("trust_remote_code=True" in out.split("AutoModelForCausalLM")[1].splitlines()[0]) == model_trust
        assert "tokenization_nanogpt.py" in out and "interactive [y/N] prompt" in out
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`AutoTokenizer` included: without it transformers stops at an interactive `[y/N]`" in readme


def test_hub_gpt2_imports_through_the_export_mapping(monkeypatch):
    """--init_from=gpt2 (a hub name) goes through the same GPT-2 mapping as an exported directory."""
    import transformers
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2,
                                                              n_head=4)).eval()
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda name: hf)
    x = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for pad in (1, 64):
            got = load_model("gpt2", pad_vocab_multiple=pad)[0](x)
            torch.testing.assert_close(got, hf(x).logits, atol=1e-5, rtol=0)


def test_a_new_toggle_exports_as_remote_code_with_no_export_change(tmp_path):
    """docs/adding_a_toggle.md: layer_scale was added without touching export_hf.py; it exports as remote code
    (model.py itself) and transformers gives our logits."""
    model = random_model(tiny_config(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, layer_scale=0.5))
    with torch.no_grad():
        for blk in model.transformer.h:
            blk.attn_scale.gamma.uniform_(0.1, 2.0)   # trained gains, not the init
    assert E.family_of(model.config) == E.REMOTE_FAMILY and "layer_scale=0.5" in E.why_remote(model.config)
    assert E.export(model, tmp_path / "hf", tokenizer=False, verify=True) == E.REMOTE_FAMILY
    back = load_model(tmp_path / "hf")[0]
    idx = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(idx), model(idx), atol=ATOL, rtol=0)
