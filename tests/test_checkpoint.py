"""checkpoint.py: names, newest, safe loading. A planted malicious pickle runs nowhere; the error says what to do."""
import dataclasses
import json
import os
import time

import pytest
import torch

import checkpoint
import config
import evaluate
import export_hf
import hellaswag
import load
import parallel
import perplexity
import sample
import train
from model import GPT, GPTConfig
from test_train import tiny_args


class Payload:
    """Unpickling this runs a shell command (it touches a marker file): what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path):
    """out/ckpt_0000009.pt: a checkpoint-shaped dict with a payload beside the real keys."""
    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": 1, "model_config": {}, "model": {}, "step": 9, "payload": Payload(marker)},
               run / "ckpt_0000009.pt")
    return run, marker


def test_plain_checkpoints_load_with_weights_only(char_data, tmp_path):
    train.run(config.load_config(None, tiny_args(char_data, tmp_path, max_iters=3, eval_interval=3)))
    for name in ("ckpt_0000003.pt", "best.pt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)   # torch's own strict loader: no pickled objects
        assert ckpt["step"] == 3
    assert isinstance(ckpt_rng := torch.load(tmp_path / "ckpt_0000003.pt", weights_only=True)["rng"], list)
    assert isinstance(ckpt_rng[0]["numpy"]["keys"], torch.Tensor)


def test_malicious_pickle_runs_nowhere(evil, char_data, shared_data, tmp_path):
    run, marker = evil
    with pytest.raises(checkpoint.UntrustedCheckpoint, match="posix.system.*--trust-checkpoint"):
        checkpoint.load_checkpoint(run)
    with pytest.raises(checkpoint.UntrustedCheckpoint):
        load.load_model(run / "ckpt_0000009.pt")
    with pytest.raises(SystemExit, match="--trust-checkpoint"):
        sample.main(["--ckpt", str(run), "--prompt", "x"])
    with pytest.raises(SystemExit, match="--trust-checkpoint"):
        hellaswag.main(["--ckpt", str(run), "--data", str(shared_data / "hellaswag_val.jsonl"), "--limit", "1"])
    with pytest.raises(SystemExit, match="--trust-checkpoint"):
        evaluate.main(["--ckpt", str(run), "--tasks", "copa", "--data-dir", str(shared_data / "evals")])
    with pytest.raises(SystemExit, match="--trust-checkpoint"):
        perplexity.main([str(run), "--data", str(char_data), "--quiet"])
    with pytest.raises(SystemExit, match="--trust-checkpoint"):
        export_hf.main(["--ckpt", str(run), "--out", str(tmp_path / "hf")])
    with pytest.raises(config.ConfigError, match="--trust_checkpoint=True"):
        train.run(config.load_config(None, tiny_args(char_data, tmp_path / "t", resume=run)))
    assert not marker.exists(), "unpickling ran the payload"


def test_trust_opt_in_is_full_unpickling(evil):
    """--trust-checkpoint really unpickles (that is why it is an explicit opt-in)."""
    run, marker = evil
    checkpoint.load_checkpoint(run, trust=True)
    assert marker.exists()


def test_corrupt_file_is_named_and_not_called_untrusted(tmp_path):
    bad = tmp_path / "ckpt_0000001.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match=f"cannot read checkpoint {bad}") as e:
        checkpoint.load_checkpoint(tmp_path)
    assert not isinstance(e.value, checkpoint.UntrustedCheckpoint)


def test_list_and_resolve_order_by_step(tmp_path):
    for step in (9, 10, 100):
        torch.save({"step": step}, checkpoint.checkpoint_path(tmp_path, step))
    (tmp_path / "ckpt_0000200").mkdir()                       # a sharded directory is not a file checkpoint
    (tmp_path / "ckpt_latest.pt").write_text("")              # not a step number
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == \
        ["ckpt_0000009.pt", "ckpt_0000010.pt", "ckpt_0000100.pt"]
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path, sharded=True)] == ["ckpt_0000200"]
    assert checkpoint.resolve_checkpoint(tmp_path).name == "ckpt_0000100.pt"
    checkpoint.prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt_0000100.pt"]
    assert checkpoint.strip_prefix({"_orig_mod.module.a": 1, "b": 2}) == {"a": 1, "b": 2}


# ----------------------------------------------------------------------------- model configs from files

TINY = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16)


def config_ckpt(run, **model_config):
    """A one-file checkpoint whose model_config is TINY with some fields replaced (weights irrelevant)."""
    run.mkdir(parents=True, exist_ok=True)
    full = {f.name: getattr(GPTConfig(**TINY), f.name) for f in dataclasses.fields(GPTConfig)} | model_config
    torch.save({"format": 1, "model_config": full, "model": {}, "tokenizer": None, "step": 1}, run / "ckpt_0000001.pt")
    return run


@pytest.mark.parametrize("field, value, match", [
    ("n_layer", "12", r"n_layer='12' must be of type int, not str"),
    ("n_layer", 1e6, r"n_layer=1000000.0 must be of type int, not float"),
    ("bias", 1, r"bias=1 must be of type bool, not int"),
    ("rope_theta", float("nan"), r"rope_theta=nan must be a finite number"),
    ("n_kv_head", 0.5, r"n_kv_head=0.5 must be of type int or None, not float"),
    ("n_layer", 1_000_000, r"n_layer=1000000 is over 1024"),
    ("n_embd", 1 << 20, r"asks for [\d,]+ parameters \([\d,.]+ GiB in float32; .*n_embd=1048576.*\), more than this "
                        r"machine's [\d,.]+ GiB of memory"),
    ("n_head", -2, r"GPTConfig.n_head=-2 must be a positive integer"),
])
def test_model_config_from_a_file_is_checked_before_anything_is_allocated(tmp_path, field, value, match):
    """A damaged or hostile model_config is one clear line at once: no TypeError, no minutes of building,
    no attempt at a huge allocation."""
    run = config_ckpt(tmp_path / "run", **{field: value})
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        checkpoint.model_config(torch.load(run / "ckpt_0000001.pt")["model_config"])
    with pytest.raises(SystemExit, match=f"sample.py: error: cannot read checkpoint .*{match}"):
        sample.main(["--ckpt", str(run), "--prompt", "x"])
    hf = tmp_path / "hf"                                    # an export's config.json holds the same fields
    hf.mkdir()
    full = torch.load(run / "ckpt_0000001.pt")["model_config"]
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "nanogpt_config": full}, allow_nan=True))
    with pytest.raises(ValueError, match=f"config.json nanogpt_config: .*{match}"):
        load.load_model(hf)
    assert time.perf_counter() - t0 < 10


def test_foreign_export_and_sharded_configs_take_the_same_checks(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 16, "vocab_size": 50,
                                                "n_layer": "2", "n_head": 2, "n_embd": 16}))
    with pytest.raises(ValueError, match=r"config.json: n_layer='2' must be of type int, not str"):
        load.load_model(hf)
    sharded = tmp_path / "run" / "ckpt_0000001"             # parallel.consolidate builds its model from meta.pt
    sharded.mkdir(parents=True)
    torch.save({"model_config": TINY | {"n_embd": "16"}, "step": 1}, sharded / parallel.META)
    (sharded / parallel.COMPLETE).write_text("step 1\n")
    with pytest.raises(ValueError, match=r"meta.pt model_config: n_embd='16' must be of type int, not str"):
        parallel.consolidate(sharded, tmp_path / "out.pt")


def test_parameter_estimate_equals_the_built_model():
    for toggles in (dict(), dict(bias=False, mlp="swiglu", n_kv_head=1, tie_embeddings=False),
                    dict(norm="rmsnorm", qk_norm=True, parallel_residual=True, pos_emb="rope"),
                    dict(n_layer=5, value_embeds=2, x0_mix=True, unet_skips=True, pad_vocab_multiple=64)):
        c = GPTConfig(**TINY | toggles)
        assert checkpoint.num_params(c) == GPT(c).num_params(non_embedding=False), toggles


class Harmless:
    """A class torch's weights_only loader refuses (its message is long)."""


def test_checkpoint_errors_end_at_a_sentence(tmp_path):
    """torch's long messages are shortened to whole sentences, never cut mid-sentence ("...there is a high")."""
    torch.save({"step": 1}, tmp_path / "ckpt_0000001.pt")
    raw = bytearray((tmp_path / "ckpt_0000001.pt").read_bytes())
    raw[28:30] = b"\xff\xff"                                # the first zip entry's extra-field length: corrupt
    (tmp_path / "ckpt_0000001.pt").write_bytes(raw)
    with pytest.raises(checkpoint.CheckpointError, match=r"truncated or not a checkpoint \(PytorchStreamReader "
                                                         r"failed .*\. This is an internal miniz error\.\)$"):
        checkpoint.load_checkpoint(tmp_path)
    torch.save({"step": 1, "x": Harmless()}, tmp_path / "ckpt_0000002.pt")
    with pytest.raises(checkpoint.UntrustedCheckpoint, match=r"\(WeightsUnpickler error: Unsupported global: GLOBAL "
                                                             r"test_checkpoint.Harmless was not an allowed global by "
                                                             r"default\.\); unpickling such a file"):
        checkpoint.load_checkpoint(tmp_path)
    assert checkpoint.sentences("One. Two three. " + "x" * 200) == "One. Two three."
    assert checkpoint.sentences("y" * 200 + ". Next.") == "y" * 200 + "."


def test_training_checkpoint_is_the_one_layout_and_its_format_is_checked(tmp_path):
    model = GPT(GPTConfig(block_size=8, vocab_size=32, n_layer=1, n_head=2, n_embd=16))
    opt = torch.optim.AdamW(model.parameters())
    state = checkpoint.RunState(step=3, config={"lr": 1.0}, model_config=dataclasses.asdict(model.config),
                                tokenizer=None, world_size=1, scaler={}, loader=[{"epoch": 0}], rng=[{}],
                                val_loss=None, best_val_loss=float("inf"))
    path = tmp_path / "ckpt_0000003.pt"
    torch.save(checkpoint.training_checkpoint(state, model, [opt]), path)
    ckpt = checkpoint.load_checkpoint(tmp_path)  # weights_only=True: plain types and tensors only
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["step"] == 3 and len(ckpt["optimizer"]) == 1
    assert {f.name for f in dataclasses.fields(checkpoint.RunState)} | {"format", "model", "optimizer"} == set(ckpt)
    assert "model" not in checkpoint.training_checkpoint(state)  # the sharded format saves weights itself
    torch.save(ckpt | {"format": checkpoint.FORMAT + 1}, path)
    with pytest.raises(checkpoint.CheckpointError, match=r"format 2, newer than this repo reads \(1\); update"):
        checkpoint.load_checkpoint(path)
    legacy = {k: v for k, v in ckpt.items() if k != "format"}  # older files have none: layout 1
    torch.save(legacy, path)
    assert checkpoint.load_checkpoint(path)["step"] == 3
