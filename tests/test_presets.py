"""The seed presets in configs/: published sizes, tiny siblings that share their toggles and train."""
import json
from pathlib import Path

import pytest
import torch

import config
import optim
import token_shards
import tokenization
import train
from model import GPT

REPO = Path(__file__).resolve().parent.parent
PRESETS = ["gpt2_124m", "gpt2_124m_lightning", "haber_gpt2_100m", "gpt_star_127m", "gpt_star_1b",
           "llama_style_124m", "llama_style_350m", "speedrun_124m"]
# toggles a tiny sibling must share with its full preset
TOGGLES = ["pos_emb", "mlp", "norm", "parallel_residual", "tie_embeddings", "bias", "qk_norm", "dropout",
           "pad_vocab_multiple", "lr_schedule", "lr_hold_frac", "warmup_start_ratio", "min_lr_ratio",
           "beta1", "beta2", "weight_decay", "grad_clip", "logit_softcap", "x0_mix", "unet_skips", "zero_init_proj",
           "window_pattern", "muon_lr", "embed_lr", "head_lr", "scalar_lr", "muon_weight_decay",
           "loader", "lr_schedule", "cooldown_frac"]



def preset(name: str, *overrides: str) -> config.TrainConfig:
    return config.load_config(REPO / "configs" / f"{name}.py", list(overrides))


def meta_model(cfg: config.TrainConfig) -> GPT:
    """The model on the meta device: full-size presets cost no memory or init time."""
    with torch.device("meta"):
        return GPT(cfg.model)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_names_its_data_command(name):
    for file in (f"{name}.py", f"{name}_tiny.py"):
        text = (REPO / "configs" / file).read_text()
        assert "python prepare_data.py" in text, f"{file} must say how to prepare its data"


def test_gpt2_124m_parameter_count():
    cfg = preset("gpt2_124m")
    model = meta_model(cfg)
    assert cfg.model.padded_vocab_size == 50304
    assert model.num_params(non_embedding=False) == 124_475_904            # padded embedding, tied
    unpadded = 124_475_904 - (50304 - 50257) * 768
    assert unpadded == 124_439_808                                           # GPT-2's published 124M


def test_gpt_star_127m_parameter_count():
    """All parameters, the tied 50304 x 1024 embedding counted once: 127.08M (the name's 127M)."""
    n = meta_model(preset("gpt_star_127m")).num_params(non_embedding=False)
    assert n == 127_078_400
    assert abs(n / 1e6 - 127) < 0.5


def test_other_sizes_are_near_their_names():
    sizes = {"haber_gpt2_100m": (90e6, 110e6), "gpt_star_1b": (0.95e9, 1.1e9),
             "llama_style_124m": (110e6, 130e6), "llama_style_350m": (320e6, 370e6)}
    for name, (lo, hi) in sizes.items():
        n = meta_model(preset(name)).num_params(non_embedding=False)
        assert lo <= n <= hi, (name, n)


def test_published_batch_and_schedule():
    for name, tokens in [("gpt2_124m", 524288), ("llama_style_124m", 524288), ("haber_gpt2_100m", 552960),
                         ("gpt_star_127m", 1024 * 512), ("gpt_star_1b", 1024 * 512)]:
        cfg = preset(name)
        assert cfg.data.total_batch_size == tokens, name
        config.grad_accum_steps(tokens, cfg.data.batch_size, cfg.model.block_size, 1)  # divides evenly
    star = preset("gpt_star_127m")
    assert (star.model.pos_emb, star.model.parallel_residual, star.model.n_layer, star.model.n_embd,
            star.model.n_head, star.model.block_size) == ("alibi", True, 6, 1024, 8, 512)
    assert star.schedule.lr_hold_frac == 0.1 and star.min_lr == pytest.approx(6e-5)
    assert optim.get_lr(star.schedule.max_iters - 1, star) == pytest.approx(6e-5)
    haber = preset("haber_gpt2_100m")
    assert (haber.model.vocab_size, haber.model.n_kv_head, haber.model.pos_emb, haber.model.n_layer) == \
        (8192, 4, "rope", 32)
    big = preset("gpt_star_1b")
    assert big.optim.optimizer == "adamw8bit" and big.data.seq_len_warmup_frac == 0.3
    assert optim.stage_at(0, 1000, 512, big.data.seq_len_warmup, 0.3) == 128
    assert optim.stage_at(299, 1000, 512, big.data.seq_len_warmup, 0.3) == 384
    assert optim.stage_at(300, 1000, 512, big.data.seq_len_warmup, 0.3) == 512
    llama = preset("llama_style_124m")
    assert (llama.model.mlp, llama.model.norm, llama.model.pos_emb, llama.model.n_head // llama.model.n_kv_head,
            llama.optim.learning_rate, llama.schedule.warmup_start_ratio) == ("swiglu", "rmsnorm", "rope", 2, 1.2e-3, 0.1)
    light = preset("gpt2_124m_lightning")
    assert light.optim.weight_decay == 0.3 and light.model.dropout == 0.0


def test_speedrun_preset_is_the_modded_nanogpt_recipe():
    cfg = preset("speedrun_124m")
    m, o = cfg.model, cfg.optim
    assert (m.n_layer, m.n_embd, m.n_head, m.head_dim, m.block_size) == (12, 768, 6, 128, 2048)
    assert (m.value_embeds, m.x0_mix, m.unet_skips, m.logit_softcap, m.doc_mask_token) == (3, True, True, 15.0, 50256)
    assert m.value_embed_tables == [0, 1, 2] + [None] * 6 + [0, 1, 2]
    assert m.layer_windows == [512, 512, 512, None] * 3
    assert (o.optimizer, o.muon_lr, o.embed_lr, o.head_lr, o.scalar_lr, o.beta1) == ("muon", 0.05, 0.6, 0.008, 0.04, 0.8)
    assert cfg.data.loader == "bos_aligned" and cfg.schedule.lr_schedule == "wsd"
    assert preset("speedrun_124m_tiny").optim.optimizer == "muon"  # (gpt_star_1b_tiny swaps adamw8bit, CUDA-only)
    assert cfg.schedule.max_iters * cfg.data.total_batch_size < 0.1 * 19073 * 524288   # < 10% of gpt2_124m's tokens
    assert optim.get_lr(0, cfg) == o.learning_rate and optim.get_lr(cfg.schedule.max_iters, cfg) == pytest.approx(
        0.1 * o.learning_rate)
    n = meta_model(cfg).num_params(non_embedding=True)
    # blocks + the untied head: 124M as GPT-2 small counts it (its tied embedding is its head); the input and
    # value-embedding tables are lookups
    assert 123e6 < n < 125e6, n


@pytest.mark.parametrize("name", PRESETS)
def test_tiny_sibling_shares_toggles(name):
    full, tiny = preset(name).flat(), preset(f"{name}_tiny").flat()
    for key in TOGGLES:
        assert tiny[key] == full[key], f"{name}_tiny changes {key}"
    full_group = full["n_head"] // (full["n_kv_head"] or full["n_head"])
    tiny_group = tiny["n_head"] // (tiny["n_kv_head"] or tiny["n_head"])
    assert tiny_group == full_group, "GQA group size differs"
    assert bool(tiny["seq_len_warmup"]) == bool(full["seq_len_warmup"])
    assert tiny["n_embd"] <= 64 and tiny["n_layer"] <= 3 and tiny["total_batch_size"] == 0


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory, shared_data) -> tuple[Path, int]:
    """Tiny Shakespeare (first 200K characters) in a 512-piece sentencepiece vocabulary, one document per
    blank-line paragraph (BOS ... EOS, as prepare_data.py --boundary bos_eos writes): small and fast."""
    text = (shared_data / "tinyshakespeare.txt").read_text()[:200_000]
    tok = tokenization.train_sentencepiece([text], vocab_size=512, num_threads=1)
    ids = [i for para in text.split("\n\n") for i in [tok.bos_id, *tok.encode(para), tok.eos_id]]
    ids = torch.as_tensor(ids).numpy().astype("uint16")
    n_val = len(ids) // 10
    out = tmp_path_factory.mktemp("tiny_sp512")
    token_shards.write_shard(out / "tiny_val_000000.bin", ids[:n_val])
    token_shards.write_shard(out / "tiny_train_000001.bin", ids[n_val:])
    meta = {"format": 1, "prefix": "tiny", "tokenizer": tok.spec(), "boundary": "bos_eos",
            "shards": [{"file": "tiny_val_000000.bin", "split": "val", "tokens": int(n_val)},
                       {"file": "tiny_train_000001.bin", "split": "train", "tokens": int(len(ids) - n_val)}]}
    (out / "meta.json").write_text(json.dumps(meta))
    return out, tok.vocab_size, tok.bos_id


@pytest.mark.parametrize("name", PRESETS)
def test_tiny_sibling_trains(name, tiny_shards, tmp_path):
    """Every tiny sibling trains 30 steps on CPU and its validation loss falls."""
    data_dir, vocab, bos = tiny_shards
    docs = [f"--doc_mask_token={bos}"] if preset(name).model.doc_mask_token is not None else []  # this vocabulary's
    cfg = preset(f"{name}_tiny", f"--data_dir={data_dir}", f"--vocab_size={vocab}", f"--out_dir={tmp_path}",
                 "--max_iters=30", "--eval_interval=30", "--eval_iters=2", "--log_interval=10", "--device=cpu", *docs)
    result = train.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if r["type"] == "eval"]
    assert result["step"] == 30
    assert len(vals) == 2 and vals[-1] < vals[0] - 0.3, vals
    assert any(tmp_path.glob("ckpt_*.pt"))


def test_every_config_loads():
    for path in sorted((REPO / "configs").glob("*.py")):
        cfg = config.load_config(path, [])
        meta_model(cfg)                                                   # the model builds


def test_shakespeare_reference_is_nanogpts_cpu_recipe():
    """configs/shakespeare_nanogpt.py = nanoGPT's README CPU command on data/shakespeare (GPT-2 BPE)."""
    c = preset("shakespeare_nanogpt").flat()
    want = dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False,
                pos_emb="learned", mlp="gelu", norm="layernorm", tie_embeddings=True, learning_rate=1e-3,
                min_lr=1e-4, beta2=0.99, warmup_iters=100, max_iters=2000, lr_decay_iters=2000, weight_decay=0.1,
                grad_clip=1.0, eval_iters=20, compile=False, dtype="float32", total_batch_size=0)
    assert {k: c[k] for k in want} == want
    assert preset("shakespeare_nanogpt").model.padded_vocab_size == 50304
    recipe = preset("shakespeare")
    assert recipe.data.batch_size * recipe.model.block_size == 12 * 64          # same tokens per step
    assert recipe.data.data_dir == "data/shakespeare"


def test_shakespeare_char_nanogpt_is_nanogpts_baby_gpt():
    """configs/shakespeare_char_nanogpt.py = nanoGPT's README "macbook" command on data/shakespeare_char."""
    c = preset("shakespeare_char_nanogpt").flat()
    want = dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False,
                pos_emb="learned", mlp="gelu", norm="layernorm", tie_embeddings=True, learning_rate=1e-3,
                min_lr=1e-4, beta1=0.9, beta2=0.99, warmup_iters=100, max_iters=2000, lr_decay_iters=2000,
                weight_decay=0.1, grad_clip=1.0, eval_interval=250, eval_iters=20, compile=False, dtype="float32",
                total_batch_size=0, pad_vocab_multiple=1, data_dir="data/shakespeare_char", optimizer="adamw")
    assert {k: c[k] for k in want} == want
    shared = ("n_layer", "data_dir", "dtype", "compile", "device")
    recipe = preset("shakespeare_char").flat()
    assert {k: recipe[k] for k in shared} == {k: c[k] for k in shared}      # same depth, data, precision, device
    # the validation estimate of equal size: eval_iters x batch x context tokens, as nanoGPT's
    assert recipe["eval_iters"] * recipe["batch_size"] * recipe["block_size"] == 20 * 12 * 64


@pytest.fixture(scope="module")
def char_shards(tmp_path_factory, shared_data) -> Path:
    """prepare_data.py shakespeare_char on the first 200K characters of Tiny Shakespeare."""
    import prepare_data
    text = tmp_path_factory.mktemp("char_text") / "input.txt"
    text.write_text((shared_data / "tinyshakespeare.txt").read_text()[:200_000])
    out = tmp_path_factory.mktemp("char_shards") / "data"
    prepare_data.main(["shakespeare_char", "--input", str(text), "--out", str(out)])
    return out


@pytest.mark.parametrize("name", ["shakespeare_char_nanogpt", "shakespeare_char"])
def test_shakespeare_char_configs_train(name, char_shards, tmp_path):
    """Both char configs, as published but 60 steps: vocab_size comes from the data, the validation loss falls."""
    cfg = preset(name, f"--data_dir={char_shards}", f"--out_dir={tmp_path}", "--max_iters=60", "--eval_interval=30",
                 "--eval_iters=2", "--warmup_iters=5", "--log_interval=30")
    assert cfg.model.vocab_size == tokenization.load_tokenizer_for(char_shards).vocab_size < 70
    train.run(cfg)
    vals = [r["val_loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if r["type"] == "eval"]
    assert len(vals) == 3 and vals[-1] < vals[0] - 0.8, vals


def test_side_by_side_table_reads_time_to_target_and_loss_at_nanogpts_wall():
    """scripts/shakespeare_char_side_by_side.py: the loss at nanoGPT's wall time is our last evaluation within it
    (elapsed_s plus the process's start-up), and a run that never gets inside it shows '-'."""
    from scripts import shakespeare_char_side_by_side as sbs
    nanogpt = {"name": "nanoGPT", "val": 1.8857, "wall": 100.0, "to_target": 100.0}
    ours = {"name": "ours", "val": 1.50, "wall": 110.0, "to_target": 30.0,
            "curve": [(0, 1.0, 4.2), (500, 50.0, 1.80), (900, 94.0, 1.55), (1000, 105.0, 1.50)]}   # start-up 5 s
    assert sbs.loss_within(ours, 100.0) == 1.55                  # 94 + 5 s is within 100 s, 105 + 5 s is not
    assert sbs.loss_within(nanogpt, 100.0) == 1.8857
    assert sbs.loss_within({"name": "late", "val": 2.0, "wall": 300.0, "curve": [(0, 150.0, 4.2)]}, 100.0) is None
    text = sbs.table([nanogpt, ours], 1.8857)
    assert "| ours | 1.5000 | 110 | 30 | 1.5500 |" in text and "val loss at 100 s" in text
