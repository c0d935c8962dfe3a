"""parallel.py: FSDP2 == DDP, activation checkpointing, sharded (DCP) checkpoints, resharding, consolidation.

Multi-rank checks run 2 CPU processes over Gloo (torch.multiprocessing.spawn, one thread each); results
come back through files. Tiny model (2 layers, 32 wide, vocab 96), random tokens, a few steps.
"""
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import sample
import config
import parallel
from load import load_model
from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent
CFG = dict(block_size=16, vocab_size=96, pad_vocab_multiple=64, n_layer=2, n_head=2, n_embd=32)
B, T, ACCUM, LR = 2, 16, 2, 3e-3   # per-rank micro-batch, sequence length, micro-steps per step


# ----------------------------------------------------------------------------- helpers (run in workers too)

def global_batches(steps: int, world: int) -> torch.Tensor:
    """Fixed tokens (steps, ACCUM, world*B, T+1): every run sees the same global batches."""
    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, CFG["vocab_size"], (steps, ACCUM, world * B, T + 1), generator=g)


def make_model(ac: bool = False, dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG, dropout=dropout))
    if ac:
        parallel.apply_activation_checkpointing(model)
    return model


def make_optimizers(model: GPT, optimizer: str) -> list:
    """adamw, or muon on the hidden matrices + adamw on the rest (as train.py builds them)."""
    if optimizer == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)]
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")]
    ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [torch.optim.Muon(hidden, lr=0.02, weight_decay=0.1), torch.optim.AdamW(rest, lr=LR)]


def train_steps(model, wrapped, optimizers, data, steps: range, rank: int, world: int) -> list[float]:
    """Optimizer steps on this rank's rows of the global batches; grad accumulation, clipping at 0.5."""
    rows = data.size(2) // world
    norms = []
    for s in steps:
        for micro in range(ACCUM):
            chunk = data[s, micro, rank * rows:(rank + 1) * rows]
            last = micro == ACCUM - 1
            parallel.set_micro_step(wrapped, last)
            sync = wrapped.no_sync() if isinstance(wrapped, DDP) and not last else contextlib.nullcontext()
            with sync:
                loss = wrapped(chunk[:, :-1], chunk[:, 1:])
                (loss / ACCUM).backward()
        norms.append(parallel.clip_grad_norm(model.parameters(), 0.5))
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return norms


def full_weights(model) -> dict:
    """Unsharded fp32 state dict on CPU (gathers DTensors; every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    if parallel.is_fsdp(model):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def setup(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world: int, *args) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


# ----------------------------------------------------------------------------- workers

def equivalence_worker(rank, world, port, out):
    """Same data, S steps: DDP, FSDP, FSDP + activation checkpointing, DDP + AC; AdamW and Muon."""
    setup(rank, world, port)
    data = global_batches(3, world)
    results = {}
    for name, fsdp, ac, optimizer in [("ddp", False, False, "adamw"), ("fsdp", True, False, "adamw"),
                                      ("fsdp_ac", True, True, "adamw"), ("ddp_ac", False, True, "adamw"),
                                      ("ddp_muon", False, False, "muon"), ("fsdp_muon", True, False, "muon")]:
        model = make_model(ac)
        wrapped = parallel.apply_fsdp(model, "cpu", "float32") if fsdp else DDP(model)
        opts = make_optimizers(model, optimizer)
        norms = train_steps(model, wrapped, opts, data, range(3), rank, world)
        results[name] = (full_weights(model), norms)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def checkpoint_worker(rank, world, port, run_dir, out):
    """FSDP + Muon: train 2 steps, save sharded, train 2 more (A); a fresh model loads and continues (B)."""
    setup(rank, world, port)
    data = global_batches(4, world)
    model = parallel.apply_fsdp(make_model(), "cpu", "float32")
    opts = make_optimizers(model, "muon")
    train_steps(model, model, opts, data, range(2), rank, world)
    at_save = full_weights(model)
    parallel.save_sharded(run_dir, 2, model, opts, {"model_config": CFG, "step": 2, "world_size": world}, 2)
    train_steps(model, model, opts, data, range(2, 4), rank, world)
    a = full_weights(model)
    model = parallel.apply_fsdp(make_model(), "cpu", "float32")
    opts = make_optimizers(model, "muon")
    meta = parallel.load_sharded(run_dir, model, opts)
    train_steps(model, model, opts, data, range(meta["step"], 4), rank, world)
    b = full_weights(model)
    if rank == 0:
        torch.save({"at_save": at_save, "a": a, "b": b}, out)
    dist.destroy_process_group()


def one_rank_resume_worker(rank, world, port, run_dir, out):
    """Resume the 2-rank checkpoint on 1 rank; the global batch (all rows) goes through one process."""
    setup(rank, world, port)
    data = global_batches(4, 2)
    model = parallel.apply_fsdp(make_model(), "cpu", "float32")
    opts = make_optimizers(model, "muon")
    meta = parallel.load_sharded(run_dir, model, opts)
    train_steps(model, model, opts, data, range(meta["step"], 4), rank, world)
    torch.save(full_weights(model), out)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    out = tmp_path_factory.mktemp("eq") / "results.pt"
    spawn(equivalence_worker, 2, str(out))
    return torch.load(out)


@pytest.mark.parametrize("variant", ["fsdp", "fsdp_ac", "ddp_ac"])
def test_fsdp_and_activation_checkpointing_match_ddp(equivalence, variant):
    ref_w, ref_norms = equivalence["ddp"]
    w, norms = equivalence[variant]
    assert sorted(w) == sorted(ref_w)
    for k in ref_w:
        # atol: AdamW normalizes the ~0 gradient of the key biases (softmax ignores them), so
        # reduction-order noise there becomes ~1e-6 updates
        torch.testing.assert_close(w[k], ref_w[k], rtol=1e-4, atol=1e-5, msg=f"{variant}: {k}")
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(ref_norms), rtol=1e-5, atol=1e-6)
    assert torch.equal(w["lm_head.weight"], w["transformer.wte.weight"])  # tied weights stay tied


def test_fsdp_muon_matches_ddp_muon(equivalence):
    """torch.optim.Muon on FSDP's DTensor shards orthogonalizes the full matrix (DTensor ops gather as
    needed). Its Newton-Schulz runs in bf16 (~1.6% error against fp64 on its own), so two runs agree
    to a few percent of the update, not to fp32 precision."""
    ref_w, _ = equivalence["ddp_muon"]
    w, _ = equivalence["fsdp_muon"]
    init = make_model().state_dict()
    for k in ref_w:
        moved = (ref_w[k] - init[k]).norm()
        assert moved > 0, k
        assert (w[k] - ref_w[k]).norm() / moved < 0.1, k


def test_activation_checkpointing_same_loss_and_grads_with_dropout():
    """Single process, dropout 0.1: checkpointed recomputation replays the same dropout masks."""
    x = global_batches(1, 1)[0, 0]
    results = []
    for ac in (False, True):
        model = make_model(ac, dropout=0.1).train()
        torch.manual_seed(7)
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss0, g0), (loss1, g1) = results
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-7, msg=n)
    model.eval()  # generation (no grad, KV cache) bypasses checkpointing
    assert sample.generate(model, x[:1, :4], 3, sample.GREEDY).shape == (1, 7)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sharded_run")
    out = run_dir.parent / f"{run_dir.name}_results.pt"
    spawn(checkpoint_worker, 2, str(run_dir), str(out))
    return run_dir, torch.load(out)


def test_fsdp_resume_is_bit_identical(sharded_run):
    run_dir, res = sharded_run
    assert [p.name for p in parallel.sharded_dirs(run_dir)] == ["ckpt_0000002"]
    assert not list(run_dir.glob(".tmp_*"))
    for k in res["a"]:
        assert torch.equal(res["a"][k], res["b"][k]), k


def test_resume_two_rank_checkpoint_on_one_rank(sharded_run, tmp_path):
    run_dir, res = sharded_run
    out = tmp_path / "one_rank.pt"
    spawn(one_rank_resume_worker, 1, str(run_dir), str(out))
    w = torch.load(out)
    for k in res["a"]:  # same math; Muon's bf16 Newton-Schulz makes it agree to a few % of the update
        moved = (res["a"][k] - res["at_save"][k]).norm()
        assert (w[k] - res["a"][k]).norm() / moved < 0.1, k


def test_load_sharded_into_plain_model_without_process_group(sharded_run):
    """python train.py (no torchrun) reads sharded checkpoints too: no process group, no FSDP."""
    run_dir, res = sharded_run
    model = make_model()
    opts = make_optimizers(model, "muon")
    meta = parallel.load_sharded(run_dir, model, opts)
    assert meta["step"] == 2 and meta["world_size"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, res["at_save"][k]), k
    assert all(len(opt.state) == sum(len(g["params"]) for g in opt.param_groups) for opt in opts)


def test_consolidated_checkpoint_gives_same_logits(sharded_run, tmp_path):
    run_dir, res = sharded_run
    out = tmp_path / "ckpt.pt"
    r = subprocess.run([sys.executable, str(REPO / "parallel.py"), "consolidate", str(run_dir), str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(out, weights_only=False)
    assert ckpt["step"] == 2 and ckpt["optimizer"] is None and ckpt["model_config"] == CFG
    model, _ = load_model(out, tokenizer="skip")
    ref = make_model()
    ref.load_state_dict(res["at_save"])
    x = global_batches(1, 1)[0, 0, :, :-1]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_consolidate_cli_errors_clearly(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "parallel.py"), "consolidate", str(tmp_path), "x.pt"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1 and "no complete sharded checkpoint" in r.stderr


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, sys.argv[2])
    import parallel
    from model import GPT, GPTConfig
    cfg = dict(block_size=16, vocab_size=96, pad_vocab_multiple=64, n_layer=2, n_head=2, n_embd=32)
    model = GPT(GPTConfig(**cfg)); opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2, 3):  # keep_last=2 leaves steps 2 and 3
        parallel.save_sharded(sys.argv[1], step, model, [opt], {"model_config": cfg, "step": step}, 2)
    real_save = parallel.dcp.save
    def save_then_die(*args, **kwargs):  # the shards are on disk, the marker/rename not yet
        real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    parallel.dcp.save = save_then_die
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    parallel.save_sharded(sys.argv[1], 4, model, [opt], {"model_config": cfg, "step": 4}, 2)
""")


def test_kill_during_sharded_save_leaves_previous_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(REPO)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (tmp_path / ".tmp_ckpt_0000004").is_dir()          # the half-done save is left as debris...
    assert [p.name for p in parallel.sharded_dirs(tmp_path)] == ["ckpt_0000002", "ckpt_0000003"]
    assert parallel.resolve_sharded(tmp_path).name == "ckpt_0000003"  # ...and ignored by readers
    model = make_model()
    assert parallel.load_sharded(tmp_path, model, [torch.optim.AdamW(model.parameters())])["step"] == 3
    assert load_model(parallel.consolidate(tmp_path, tmp_path / "c.pt"), tokenizer="skip")[0]
    opt = torch.optim.AdamW(model.parameters())
    parallel.save_sharded(tmp_path, 5, model, [opt], {"model_config": CFG, "step": 5}, 2)  # clears debris
    assert not list(tmp_path.glob(".tmp_*"))
    assert [p.name for p in parallel.sharded_dirs(tmp_path)] == ["ckpt_0000003", "ckpt_0000005"]


def test_config_rejects_impossible_parallel_combinations():
    def check(parallelism, ac, optimizer, dtype):
        config.load_config(None, [f"--parallelism={parallelism}", f"--activation_checkpointing={ac}",
                                  f"--optimizer={optimizer}", f"--dtype={dtype}"])
    check("fsdp", "block", "muon", "bfloat16")
    check("ddp", "none", "adamw8bit", "float16")
    with pytest.raises(config.ConfigError, match="adamw8bit"):
        check("fsdp", "none", "adamw8bit", "bfloat16")
    with pytest.raises(config.ConfigError, match="float16"):
        check("fsdp", "none", "adamw", "float16")
    with pytest.raises(config.ConfigError, match="parallelism"):
        check("zero3", "none", "adamw", "float32")
    with pytest.raises(config.ConfigError, match="activation_checkpointing"):
        check("ddp", "full", "adamw", "float32")


# ----------------------------------------------------------------------------- train.py wiring

def train_args(data_dir: Path, out_dir: Path, **over) -> list[str]:
    import tokenization
    args = dict(data_dir=data_dir, out_dir=out_dir, vocab_size=tokenization.load_tokenizer_for(data_dir).vocab_size,
                block_size=32, n_layer=2, n_head=2, n_embd=32, batch_size=2, total_batch_size=2 * 32 * 2 * 2,
                max_iters=4, warmup_iters=1, learning_rate=3e-3, eval_interval=2, eval_iters=1, log_interval=1,
                sample_tokens=4, device="cpu", keep_last=1, parallelism="fsdp", activation_checkpointing="block")
    args.update(over)
    return [f"--{k}={v}" for k, v in args.items()]


def test_train_fsdp_two_ranks_then_resume_on_one(char_data, tmp_path):
    """torchrun 2 ranks, FSDP + activation checkpointing + 2 micro-steps: sharded checkpoints, the final one
    consolidated; then `python train.py --resume` (one process) continues from the sharded checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    r = subprocess.run(cmd + train_args(char_data, out), capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "sample:" in r.stdout
    assert [p.name for p in parallel.sharded_dirs(out)] == ["ckpt_0000004"]  # keep_last=1 dropped step 2
    model, _ = load_model(out, tokenizer="skip")  # the consolidated ckpt_0000004.pt
    assert model.config.n_layer == 2 and torch.load(out / "ckpt_0000004.pt", weights_only=False)["step"] == 4
    r = subprocess.run([sys.executable, "train.py"] + train_args(char_data, out, max_iters=6, total_batch_size=0)
                       + ["--resume"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed from" in r.stdout and "ckpt_0000004" in r.stdout
    assert [p.name for p in parallel.sharded_dirs(out)] == ["ckpt_0000006"]


def test_compiled_fsdp_matches_eager_fsdp_and_ddp(char_data):
    """compile=True with FSDP2 on 2 Gloo ranks (bench.py --memory's workers wrap the model as train.py does):
    the same steps on the same batches reach the same loss as eager FSDP and DDP."""
    import bench
    args = ["--device=cpu", "--dtype=float32", f"--data_dir={char_data}", "--vocab_size=128", "--block_size=16",
            "--n_layer=2", "--n_head=2", "--n_embd=32", "--batch_size=2", "--total_batch_size=0"]
    eager = bench.bench_memory(config.load_config(None, args), 2, "ddp:none,fsdp:none", steps=2, warmup=1)
    compiled = bench.bench_memory(config.load_config(None, args + ["--compile=True"]), 2, "fsdp:none", steps=2, warmup=1)
    losses = [r["loss"] for r in eager + compiled]
    assert losses == pytest.approx([losses[0]] * 3, rel=1e-4)


# ----------------------------------------------------------------------------- sharded checkpoints run no code

class RunsCode:
    """Unpickling this creates `marker`: the stand-in for a stranger's code in a crafted checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def crafted_sharded_run(run_dir: Path, marker: Path, where: str) -> Path:
    """A complete sharded checkpoint whose `.metadata` (where="metadata") or whose optimizer's learning rate
    (where="bytes", a non-tensor value DCP stores as a pickle) runs code when unpickled."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if where == "bytes":
        opt.param_groups[0]["lr"] = RunsCode(marker)
    with warnings_ignored():
        final = parallel.save_sharded(run_dir, 2, model, [opt], {"model_config": CFG, "step": 2}, 1)
    if where == "metadata":
        (final / ".metadata").write_bytes(pickle.dumps(RunsCode(marker)))
    return final


@contextlib.contextmanager
def warnings_ignored():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("where", ["metadata", "bytes"])
def test_crafted_sharded_checkpoint_is_refused_without_running_code(tmp_path, where):
    final = crafted_sharded_run(tmp_path, tmp_path / "ran", where)
    model = make_model()
    with pytest.raises(checkpoint.UntrustedCheckpoint, match="--trust-checkpoint"):
        parallel.load_sharded(tmp_path, model, [torch.optim.AdamW(model.parameters())])
    if where == "metadata":  # consolidate reads the model's tensors only, never the optimizer's values
        with pytest.raises(checkpoint.UntrustedCheckpoint, match="--trust-checkpoint"):
            parallel.consolidate(final, tmp_path / "c.pt")
    assert not (tmp_path / "ran").exists()


def test_consolidate_cli_refuses_crafted_metadata_and_trust_warns(tmp_path):
    crafted_sharded_run(tmp_path, tmp_path / "ran", "metadata")
    cmd = [sys.executable, str(REPO / "parallel.py"), "consolidate", str(tmp_path), str(tmp_path / "c.pt")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "beyond checkpoint metadata" in r.stderr and "--trust-checkpoint" in r.stderr
    assert not (tmp_path / "ran").exists()
    r = subprocess.run(cmd + ["--trust-checkpoint"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert (tmp_path / "ran").exists()  # the opt-in does what it says, and says it first
    assert "warning: --trust-checkpoint" in r.stderr and "runs any Python code" in r.stderr


def test_train_resume_refuses_crafted_sharded_checkpoint_at_start(char_data, tmp_path):
    out = tmp_path / "run"
    crafted_sharded_run(out, tmp_path / "ran", "metadata")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    for resume in (f"--resume={out / 'ckpt_0000002'}", "--resume"):
        r = subprocess.run([sys.executable, "train.py"] + train_args(char_data, out) + [resume],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "beyond checkpoint metadata" in r.stderr and "--trust_checkpoint=True" in r.stderr
        assert not (tmp_path / "ran").exists()
