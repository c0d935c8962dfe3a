"""load.py: one loader. The same model reached through a checkpoint file, its run directory, its export directory
and a hub name gives the same logits and the same tokenizer ids; what each source lacks is said clearly."""
import pytest
import torch

import export_hf
from load import load_model
from test_export_hf import random_model, tiny_config
from test_sample import save_ckpt, sp_tokenizer  # noqa: F401  (fixture: a 512-piece sentencepiece BPE)

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("toggles", [dict(), dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False)],
                         ids=["GPT2LMHeadModel", "LlamaForCausalLM"])
def test_checkpoint_run_dir_export_and_hub_give_the_same_model(toggles, sp_tokenizer, shared_data, tmp_path,
                                                                monkeypatch):
    """(GPT-2 BPE tokenizer files are read back in test_sample.py's --init-from test; writing them takes seconds.)"""
    tok = sp_tokenizer
    model = random_model(tiny_config(vocab_size=tok.vocab_size, **toggles))
    run = tmp_path / "run"
    save_ckpt(run, random_model(model.config, seed=1), tok.spec(), step=3)    # older: the run dir must skip it
    ckpt = save_ckpt(run, model, tok.spec(), step=5)
    export_hf.export(ckpt, tmp_path / "hf")                                   # a path: exported via load_model
    hub = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda name: hub)

    idx = torch.randint(0, tok.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:2000] + " caf\u00e9 \u2603\n\n\t 12"
    with torch.no_grad():
        want = model(idx)
        for source in (ckpt, run, tmp_path / "hf", "someone/tiny-model"):
            loaded, loaded_tok = load_model(source)
            assert loaded.config == model.config and not loaded.training, source
            torch.testing.assert_close(loaded(idx), want, rtol=0, atol=1e-6, msg=str(source))
            if source != "someone/tiny-model":                             # a hub name records no tokenizer
                assert loaded_tok.kind == tok.kind and loaded_tok.encode(text) == tok.encode(text), source


def test_tokenizer_modes(tmp_path):
    """"recorded": the source's own or None; "required": GPT-2's only where the model fits it; "skip": none."""
    model = random_model(tiny_config(vocab_size=100))
    save_ckpt(tmp_path, model, None)
    assert load_model(tmp_path)[1] is None and load_model(tmp_path, tokenizer="skip")[1] is None
    with pytest.raises(RuntimeError, match="no tokenizer spec and vocab_size 100 is not GPT-2's"):
        load_model(tmp_path, tokenizer="required")
    with pytest.raises(ValueError, match="tokenizer='gpt2'"):
        load_model(tmp_path, tokenizer="gpt2")


def test_what_is_not_there_is_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist; pass a checkpoint file, a training out_dir, "
                                                "an export_hf.py directory or a hub name"):
        load_model(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):            # a path, not a hub name
        load_model("out/run")
    with pytest.raises(FileNotFoundError, match="no ckpt_"):                   # no checkpoint, no config.json
        load_model("out")
