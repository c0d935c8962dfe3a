"""bench.py: speed measurement, ablation table and loss-curve plots, on tiny models."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_token_dataset

import bench
import config
import runtime
import tokenization
import train

TINY = ["--block_size=16", "--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=4", "--total_batch_size=0",
        "--device=cpu", "--dtype=float32", "--warmup_iters=2", "--eval_iters=2", "--sample_tokens=0"]



@pytest.fixture(scope="module")
def shards(tmp_path_factory, shared_data) -> tuple[Path, int]:
    """50K characters of Tiny Shakespeare in a 320-piece sentencepiece vocabulary."""
    text = (shared_data / "tinyshakespeare.txt").read_text()[:50_000]
    tok = tokenization.train_sentencepiece([text], vocab_size=320, num_threads=1)
    ids = np.asarray(tok.encode(text), dtype=np.uint16)
    n_val = len(ids) // 10
    out = write_token_dataset(tmp_path_factory.mktemp("sp320"), tok, ids[:n_val], ids[n_val:])
    return out, tok.vocab_size


def test_speed_synthetic_and_real(shards):
    data_dir, vocab = shards
    cfg = config.load_config(None, TINY + [f"--vocab_size={vocab}", f"--data_dir={data_dir}"])
    for real in (False, True):
        r = bench.bench_speed(cfg, steps=2, warmup=1, real_data=real, sample_tokens=8)
        assert r.ms_per_step > 0 and r.tokens_per_s == pytest.approx(4 * 16 / (r.ms_per_step / 1000))
        assert 0 < r.mfu < 1 and r.peak_flops > 0 and r.peak_memory_mb > 0
        assert r.sample_tok_s_cache > 0 and r.sample_tok_s_no_cache > 0
        assert r.params == sum(p.numel() for p in train.build_model(cfg).parameters())
    assert "tokens/s" in bench.format_speed(r) and "KV cache" in bench.format_speed(r)


def test_mfu_uses_the_shared_peak_table():
    """One peak table, in runtime.py (train and bench use it); it knows the devices the seeds used."""
    names = [name for name, _ in runtime.PEAK_FLOPS]
    for gpu in ("A100", "H100", "H200", "L4", "T4", "4090"):
        assert gpu in names
    flops, source = runtime.peak_flops("cpu", "float32")
    assert "CPU" in source and "measured float32" in source
    assert 1e9 < flops < 1e13                             # one to two cores: tens to hundreds of GFLOP/s
    assert runtime.peak_flops("cpu", "float32")[0] == flops   # measured once per process
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    runtime.measured_cpu_flops.__wrapped__("float32", 1, n=64)  # a resumed run measures again: no global RNG
    assert torch.equal(torch.rand(3), want)


def test_cli_profile_and_json(tmp_path, capsys, shards):
    data_dir, vocab = shards
    out = tmp_path / "speed.json"
    bench.main(["configs/gpt2_124m_tiny.py", "--steps", "2", "--warmup", "1", "--profile", "--sample-tokens", "4", "--json", str(out),
                f"--vocab_size={vocab}", f"--data_dir={data_dir}"] + TINY[:-1])
    text = capsys.readouterr().out
    assert "ms/step" in text and "Self CPU" in text                   # the profiler table
    assert json.loads(out.read_text())["tokens_per_s"] > 0


def test_speed_variants_are_timed_side_by_side_in_alternating_rounds(monkeypatch, capsys, shards):
    """bench.py CONFIG --variant NAME=...: every model is built first, then timed in rounds that alternate between
    them (a drifting machine slows each alike); the table gives each one's median relative to the config."""
    data_dir, vocab = shards
    order = []
    real = bench.timed_steps

    def recording(runner, next_batch, steps):
        order.append((runner.cfg.model.n_layer, steps))
        return real(runner, next_batch, steps)

    monkeypatch.setattr(bench, "timed_steps", recording)
    rows = bench.main(["configs/gpt2_124m_tiny.py", "--data", "--steps", "2", "--warmup", "1", "--rounds", "3",
                       "--variant", "deep=--n_layer=3", f"--vocab_size={vocab}", f"--data_dir={data_dir}"] + TINY)
    assert [name for name, _ in rows] == ["config", "deep"] and all(ms > 0 for _, ms in rows)
    assert order == [(1, 1), (3, 1)] + [(1, 2), (3, 2)] * 3              # warm-ups, then alternating rounds
    text = capsys.readouterr().out
    assert "| config |" in text and "1.00x" in text and "| deep |" in text
    with pytest.raises(SystemExit, match="NAME=--key=value"):
        bench.main(["configs/gpt2_124m_tiny.py", "--variant", "no-overrides"] + TINY)
    order.clear()                                                    # a bad variant stops before any model is built
    with pytest.raises(SystemExit, match=r"^error: --variant odd: GPTConfig.n_embd=32 is not divisible by n_head=3"):
        bench.main(["configs/gpt2_124m_tiny.py", "--variant", "odd=--n_head=3"] + TINY)
    with pytest.raises(SystemExit, match=r"^error: --variant typo: unknown config key 'n_layers'"):
        bench.main(["configs/gpt2_124m_tiny.py", "--variant", "typo=--n_layers=3"] + TINY)
    with pytest.raises(SystemExit, match=r"^error: --variant times configs side by side, --profile one config"):
        bench.main(["configs/gpt2_124m_tiny.py", "--profile", "--variant", "deep=--n_layer=3"] + TINY)
    assert order == []


def test_cli_needs_a_config():
    with pytest.raises(SystemExit):
        bench.main([])


def write_metrics(run_dir: Path, rows: list[dict], config: dict | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps(config))


def test_curves_count_tokens(tmp_path):
    """Tokens per step from each logged row (tok_s x ms), so staged sequence lengths count right."""
    rows = [{"type": "eval", "step": 0, "val_loss": 10.0},
            {"type": "train", "step": 10, "loss": 9.0, "tok_s": 1000.0, "ms": 128.0},    # 128 tokens/step
            {"type": "train", "step": 20, "loss": 8.0, "tok_s": 2000.0, "ms": 128.0},    # 256 tokens/step
            {"type": "eval", "step": 20, "val_loss": 8.5},
            {"type": "train", "step": 20, "loss": 7.9, "tok_s": 2000.0, "ms": 128.0},    # resumed: later row wins
            {"type": "eval", "step": 30, "val_loss": 8.0}]
    write_metrics(tmp_path / "r", rows)
    c = bench.curves(tmp_path / "r")
    np.testing.assert_allclose(c["train_tokens"], [1280, 1280 + 2560])
    np.testing.assert_allclose(c["train_loss"], [9.0, 7.9])
    np.testing.assert_allclose(c["val_tokens"], [0, 3840, 3840 + 10 * 192])     # extrapolated at the mean rate
    np.testing.assert_allclose(c["val_loss"], [10.0, 8.5, 8.0])
    write_metrics(tmp_path / "old", [{"type": "train", "step": 5, "loss": 3.0}], {"batch_size": 2, "block_size": 8,
                                                                                   "total_batch_size": 0})
    np.testing.assert_allclose(bench.curves(tmp_path / "old")["train_tokens"], [80])


def test_plot_cli(tmp_path):
    pytest.importorskip("matplotlib")
    for i in range(2):
        write_metrics(tmp_path / f"run{i}", [
            {"type": "train", "step": s, "loss": 5 - s / 10 - i, "tok_s": 100.0, "ms": 10.0} for s in (1, 5, 9)]
            + [{"type": "eval", "step": 9, "val_loss": 4.5 - i}])
    out = tmp_path / "curves.png"
    bench.main(["--plot", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        bench.curves(tmp_path / "missing")


def test_ablation_variants_cover_the_seed_claims():
    names = " ".join(name for name, _ in bench.ablation_variants(4))
    for toggle in ("rope", "alibi", "swiglu", "relu2", "rmsnorm", "parallel residual", "gqa 2", "gqa 4",
                   "value embeddings", "x0 mix", "u-net skips", "sliding windows", "document mask", "muon", "speedrun",
                   "label smoothing"):
        assert toggle in names
    for _, overrides in bench.ablation_variants(4):
        config.load_config(None, bench.BASELINE_KEYS + overrides)                # every variant is valid


def test_ablate_writes_table_and_plot(tmp_path, shards, capsys):
    data_dir, vocab = shards
    cfg_file = tmp_path / "tiny.py"
    cfg_file.write_text(f"data_dir = {str(data_dir)!r}\nvocab_size = {vocab}\n" +
                        "".join(f"{o[2:].split('=')[0]} = {o.split('=')[1]!r}\n" for o in TINY))
    rows = bench.main(["--ablate", str(cfg_file), "--tokens", "1280", "--variants", "baseline,rope,gqa",
                       "--out-dir", str(tmp_path / "abl"), "--learning_rate=3e-3"])
    assert [r.name.split(" ")[0] for r in rows] == ["baseline", "rope", "gqa"]
    assert all(math.isfinite(r.val_loss) and r.tokens_per_s > 0 for r in rows)
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| rope |" in table and "+0.0%" in table                         # baseline row vs itself
    assert len(json.loads((tmp_path / "abl" / "ablation.json").read_text())) == 3
    if (tmp_path / "abl" / "ablation.png").exists():
        assert (tmp_path / "abl" / "ablation.png").stat().st_size > 1000
    assert "val loss" in capsys.readouterr().out


def test_ablate_two_seeds_at_a_fixed_wall_time(tmp_path, shards):
    """--seeds: one run per seed, the table shows each seed's loss and their mean; --seconds: each variant
    gets the steps its own timed speed allows (a slower variant never gets more steps than it can run)."""
    data_dir, vocab = shards
    cfg_file = tmp_path / "tiny.py"
    cfg_file.write_text(f"data_dir = {str(data_dir)!r}\nvocab_size = {vocab}\n" +
                        "".join(f"{o[2:].split('=')[0]} = {o.split('=')[1]!r}\n" for o in TINY))
    rows = bench.main(["--ablate", str(cfg_file), "--seconds", "0.3", "--seeds", "1,2", "--variants", "baseline,x0",
                       "--out-dir", str(tmp_path / "abl"), "--learning_rate=3e-3"])
    assert [(r.name.split(" ")[0], r.seed) for r in rows] == [("baseline", 1), ("baseline", 2), ("x0", 1), ("x0", 2)]
    assert all(r.steps >= 1 and math.isfinite(r.val_loss) for r in rows)
    assert rows[0].val_loss != rows[1].val_loss                               # the seed reaches the run
    table = (tmp_path / "abl" / "ablation.md").read_text()
    mean = (rows[0].val_loss + rows[1].val_loss) / 2
    assert f"| {mean:.4f} | {rows[0].val_loss:.4f}, {rows[1].val_loss:.4f} |" in table
    assert "0.3 s of training steps" in table and "seeds 1, 2" in table
    assert bench.steps_for_budget(config.load_config(str(cfg_file), []), 2560, None) == 40  # 4 x 16 tokens a step


def test_memory_mode_ddp_vs_fsdp_two_ranks(tmp_path, capsys, shards):
    """--memory on 2 Gloo ranks: every variant trains the same steps to the same loss, and FSDP holds half
    the parameters + optimizer state per rank that DDP does (activation checkpointing changes neither)."""
    data_dir, vocab = shards
    out = tmp_path / "memory.json"
    rows = bench.main(["configs/gpt2_124m_tiny.py", "--memory", "--world-size", "2", "--steps", "2",
                       "--warmup", "1", "--variants", "ddp:none,fsdp:none,fsdp:block", "--json", str(out),
                       f"--vocab_size={vocab}", f"--data_dir={data_dir}", ] + TINY)
    assert [(r["parallelism"], r["activation_checkpointing"]) for r in rows] == [
        ("ddp", "none"), ("fsdp", "none"), ("fsdp", "block")]
    ddp, fsdp, fsdp_ac = rows
    assert fsdp["state_mib"] == pytest.approx(ddp["state_mib"] / 2, rel=0.02)
    assert fsdp_ac["state_mib"] == fsdp["state_mib"]
    assert fsdp["loss"] == pytest.approx(ddp["loss"], rel=1e-4) and fsdp_ac["loss"] == pytest.approx(ddp["loss"], rel=1e-4)
    assert all(r["peak_mib"] > 0 and r["ms_per_step"] > 0 and r["world_size"] == 2 for r in rows)
    text = capsys.readouterr().out
    assert "| fsdp | block |" in text and "process RSS" in text
    assert json.loads(out.read_text()) == rows


def test_memory_mode_rejects_impossible_variants(shards):
    data_dir, vocab = shards
    with pytest.raises(SystemExit, match="fsdp"):
        bench.main(["configs/gpt2_124m_tiny.py", "--memory", "--variants", "fsdp:none", "--optimizer=adamw8bit",
                    f"--vocab_size={vocab}", f"--data_dir={data_dir}"] + TINY)


def test_ablate_without_data_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="data_dir .* does not exist; run `python prepare_data.py"):
        bench.main(["--ablate", "--tokens", "1000", "--out-dir", str(tmp_path / "abl"),
                    f"--data_dir={tmp_path / 'missing'}"])


def test_ablate_a_new_toggle_with_no_change_to_bench(tmp_path, shards):
    """docs/adding_a_toggle.md: layer_scale is off in the baseline (every non-size GPTConfig field is reset) and
    --variant trains it, with no edit to bench.py."""
    data_dir, vocab = shards
    cfg_file = tmp_path / "tiny.py"
    cfg_file.write_text(f"data_dir = {str(data_dir)!r}\nvocab_size = {vocab}\nlayer_scale = 0.3\n" +
                        "".join(f"{o[2:].split('=')[0]} = {o.split('=')[1]!r}\n" for o in TINY))
    assert "--layer_scale=0.0" in bench.BASELINE_KEYS
    rows = bench.main(["--ablate", str(cfg_file), "--tokens", "640", "--variants", "baseline",
                       "--variant", "layer scale 0.1=--layer_scale=0.1", "--out-dir", str(tmp_path / "abl")])
    assert [r.name for r in rows] == ["baseline (learned, gelu, layernorm)", "layer scale 0.1"]
    base, scaled = (torch.load(Path(r.run_dir) / "best.pt", weights_only=True)["model_config"] for r in rows)
    assert base["layer_scale"] == 0.0 and scaled["layer_scale"] == 0.1 and rows[1].params > rows[0].params
    with pytest.raises(SystemExit, match="--variant 'oops': write NAME=--key=value"):
        bench.main(["--ablate", str(cfg_file), "--variant", "oops", "--out-dir", str(tmp_path / "abl2")])
