"""checkpoint.py: names, newest, safe loading. A planted malicious pickle runs nowhere; the error says what to do."""
import os

import pytest
import torch

import checkpoint
import config
import evaluate
import export_hf
import hellaswag
import perplexity
import sample
import train
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
    train.train(config.load_config(None, tiny_args(char_data, tmp_path, max_iters=3, eval_interval=3)))
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
        checkpoint.load_model(run / "ckpt_0000009.pt")
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
        train.train(config.load_config(None, tiny_args(char_data, tmp_path / "t", resume=run)))
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
