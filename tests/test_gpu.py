"""GPU checks, skipped without CUDA: bf16 and fp16 + GradScaler training, flash attention, torch.compile,
the KV cache and the fused loss on CUDA, float8 training (torchao) and liger's fused loss where installed,
and NCCL DDP / FSDP2 (bf16 mixed precision, compiled too) on the GPUs there are. CI has no GPU; run these
on one with `python -m pytest -q tests/test_gpu.py`.
"""
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import bench
import runtime
import sample
import train
from checkpoint import load_checkpoint, resolve_checkpoint
from model import GPT, GPTConfig
from test_train import rows, tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VARIANTS = {
    "learned-mha": dict(pos_emb="learned"),
    "rope-gqa": dict(pos_emb="rope", n_kv_head=2),
    "alibi-parallel": dict(pos_emb="alibi", parallel_residual=True),
    "rope-mqa-swiglu-rmsnorm": dict(pos_emb="rope", n_kv_head=1, mlp="swiglu", norm="rmsnorm", bias=False),
}


@pytest.fixture(autouse=True)
def exact_fp32():
    """Reference computations in true fp32 (no TF32 matmuls)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def small_model(loss="full", **over) -> GPT:
    torch.manual_seed(0)
    cfg = dict(block_size=128, vocab_size=1000, n_layer=2, n_head=4, n_embd=128)
    return GPT(GPTConfig(**{**cfg, **over}), loss).cuda()


def with_loss(model: GPT, loss) -> GPT:
    """The same weights behind another loss (GPT's `loss` is chosen at construction)."""
    other = GPT(model.config, loss).cuda()
    other.load_state_dict(model.state_dict())
    return other


def batch(model: GPT, B: int = 4, T: int = 128, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (B, T + 1), device="cuda", generator=g)
    return x[:, :-1], x[:, 1:]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def loss_and_grad(model: GPT, x, y, dtype=None):
    """(loss, all gradients flattened) of one forward + backward, under autocast(dtype) if given."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        loss = model(x, y)
    loss.backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return loss.detach().float(), grads


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_loss_and_grads_close_to_fp32(name, dtype):
    model = small_model(**VARIANTS[name])
    x, y = batch(model)
    ref_loss, ref_grad = loss_and_grad(model, x, y)
    loss, grad = loss_and_grad(model, x, y, dtype)
    assert torch.isfinite(grad).all()
    assert rel(loss, ref_loss) < 5e-3
    assert rel(grad, ref_grad) < (5e-2 if dtype == torch.bfloat16 else 1e-2)


@pytest.mark.parametrize("name", VARIANTS)
def test_fused_attention_kernel_runs_and_matches_math(name):
    """Flash attention (causal, no mask) for learned/RoPE/none positions, memory-efficient attention for
    ALiBi's additive bias: only that backend is allowed, so a silent fallback would raise here."""
    model = small_model(**VARIANTS[name])
    x, y = batch(model)
    fast = SDPBackend.EFFICIENT_ATTENTION if VARIANTS[name]["pos_emb"] == "alibi" else SDPBackend.FLASH_ATTENTION
    with sdpa_kernel([SDPBackend.MATH]):
        ref_loss, ref_grad = loss_and_grad(model, x, y, torch.bfloat16)
    with sdpa_kernel([fast]):
        loss, grad = loss_and_grad(model, x, y, torch.bfloat16)
    assert rel(loss, ref_loss) < 5e-3
    assert rel(grad, ref_grad) < 5e-2


@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cache_decode_equals_full_forward_on_cuda(name):
    model = small_model(**VARIANTS[name]).eval()
    x, _ = batch(model, B=2, T=40)
    with torch.no_grad():
        full = model(x)                                   # (B, T, V): logits after every prefix
        cache = sample.new_cache(model, 2, 64)
        steps = [model.forward_cached(x[:, :8], cache)]      # prefill 8, then one token at a time
        steps += [model.forward_cached(x[:, t:t + 1], cache) for t in range(8, 40)]
    cached = torch.stack(steps, dim=1)
    torch.testing.assert_close(cached, full[:, 7:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_loss_equals_full_logits_on_cuda(dtype):
    model = small_model(vocab_size=5000, pad_vocab_multiple=64)   # 5000 real rows of 5056: padding masked
    x, y = batch(model)
    ref_loss, ref_grad = loss_and_grad(model, x, y, dtype)
    loss, grad = loss_and_grad(with_loss(model, "chunked"), x, y, dtype)
    tol = 1e-5 if dtype is None else 1e-2
    assert rel(loss, ref_loss) < tol and rel(grad, ref_grad) < 10 * tol


def test_compiled_model_matches_eager_on_cuda():
    model = small_model(**VARIANTS["rope-gqa"])
    x, y = batch(model)
    compiled = torch.compile(model)
    for dtype, tol in ((None, 1e-4), (torch.bfloat16, 2e-2)):
        ref_loss, ref_grad = loss_and_grad(model, x, y, dtype)
        loss, grad = loss_and_grad(compiled, x, y, dtype)
        assert rel(loss, ref_loss) < tol and rel(grad, ref_grad) < 5 * tol


# ----------------------------------------------------------------------------- train.py on CUDA

def gpu_args(**over) -> dict:
    args = dict(device="cuda", n_layer=2, n_embd=64, block_size=64, batch_size=16, max_iters=40,
                eval_interval=20, learning_rate=1e-2, warmup_iters=5)
    return {**args, **over}


@pytest.mark.parametrize("dtype,compile", [("bfloat16", True), ("float16", False), ("float32", False)])
def test_train_on_cuda_lowers_val_loss(char_data, tmp_path, dtype, compile):
    """bf16 + torch.compile, fp16 + GradScaler and fp32 runs of train.py on the GPU learn."""
    res = train.run(tiny(char_data, tmp_path, **gpu_args(dtype=dtype, compile=compile)))
    evals = rows(tmp_path, "eval")
    assert evals[0]["step"] == 0 and math.isfinite(res["val_loss"])
    assert res["val_loss"] < evals[0]["val_loss"] - 1.0     # char-level: from ~4.9 (uniform) well down
    ckpt = load_checkpoint(resolve_checkpoint(tmp_path))
    assert not [k for k in ckpt["model"] if "_orig_mod" in k]
    if dtype == "float16":                                   # the GradScaler's state is saved for resume
        assert ckpt["scaler"]["scale"] > 0
    else:
        assert not ckpt["scaler"]


def test_fused_loss_training_matches_full_logits_on_cuda(char_data, tmp_path):
    over = gpu_args(dtype="float32", max_iters=10, eval_interval=10)
    train.run(tiny(char_data, tmp_path / "full", fused_loss="off", **over))
    train.run(tiny(char_data, tmp_path / "fused", fused_loss="on", **over))
    for a, b in zip(rows(tmp_path / "full"), rows(tmp_path / "fused")):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3)   # TF32 matmuls in both runs


# ----------------------------------------------------------------------------- optional extras: fp8, liger

def needs_float8_gpu():
    pytest.importorskip("torchao")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 needs compute capability 8.9+ (Ada, Hopper)")


@pytest.mark.parametrize("fp8", ["linear", "all"])
def test_fp8_training_tracks_bf16_on_cuda(char_data, tmp_path, fp8):
    """torchao float8 Linear layers, compiled, against the same bf16 run: the same curve within a few percent;
    its checkpoint holds plain names and samples (batch-1 decode through the float8 layers) at each eval."""
    needs_float8_gpu()
    over = gpu_args(dtype="bfloat16", compile=True, n_embd=128, n_head=4, max_iters=60, eval_interval=30,
                    sample_tokens=16, fused_loss="off")
    train.run(tiny(char_data, tmp_path / "bf16", **over))
    train.run(tiny(char_data, tmp_path / "fp8", fp8=fp8, **over))
    ref, low = rows(tmp_path / "bf16", "eval"), rows(tmp_path / "fp8", "eval")
    assert low[-1]["val_loss"] < low[0]["val_loss"] - 1.0
    assert low[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], rel=0.03)
    ckpt = load_checkpoint(resolve_checkpoint(tmp_path / "fp8"))
    plain = GPT(GPTConfig(**ckpt["model_config"]))
    plain.load_state_dict(ckpt["model"])                      # strict: the same names as a bf16 run's


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_liger_fused_loss_equals_full_logits_on_cuda(dtype):
    pytest.importorskip("liger_kernel")
    model = small_model(vocab_size=5000, pad_vocab_multiple=64, logit_softcap=15.0)
    x, y = batch(model)
    y[0, :7] = -1                                             # ignored positions
    ref_loss, ref_grad = loss_and_grad(model, x, y, dtype)
    loss, grad = loss_and_grad(with_loss(model, runtime.liger_linear_cross_entropy), x, y, dtype)
    tol = 1e-4 if dtype is None else 1e-2
    assert rel(loss, ref_loss) < tol and rel(grad, ref_grad) < 10 * tol


def test_liger_training_matches_full_logits_on_cuda(char_data, tmp_path):
    pytest.importorskip("liger_kernel")
    over = gpu_args(dtype="float32", max_iters=10, eval_interval=10)
    train.run(tiny(char_data, tmp_path / "full", fused_loss="off", **over))
    train.run(tiny(char_data, tmp_path / "liger", fused_loss="liger", **over))
    for a, b in zip(rows(tmp_path / "full"), rows(tmp_path / "liger")):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3)
    res = train.run(tiny(char_data, tmp_path / "compiled", fused_loss="liger",
                           **gpu_args(dtype="bfloat16", compile=True, max_iters=20)))
    assert math.isfinite(res["val_loss"])


# ----------------------------------------------------------------------------- NCCL: DDP and FSDP2

def test_nccl_ddp_fsdp_and_compile_agree(char_data):
    """bench.py --memory's workers wrap the model exactly as train.py does: DDP, FSDP2 with bf16 parameters
    and fp32 reduction, activation checkpointing, and compiled FSDP, over NCCL on all GPUs here.
    The same steps on the same batches must end at the same loss."""
    world = torch.cuda.device_count()
    cfg = tiny(char_data, "unused", **gpu_args(dtype="bfloat16", n_layer=4, n_embd=128, batch_size=8))
    rows_ = bench.bench_memory(cfg, world, "ddp:none,fsdp:none,fsdp:block", steps=3, warmup=1)
    compiled = tiny(char_data, "unused", **gpu_args(dtype="bfloat16", n_layer=4, n_embd=128, batch_size=8,
                                                     compile=True))
    rows_ += bench.bench_memory(compiled, world, "fsdp:none", steps=3, warmup=1)
    losses = [r["loss"] for r in rows_]
    assert all(math.isfinite(v) for v in losses)
    assert max(losses) - min(losses) < 0.02 * losses[0], losses
    ddp, fsdp = rows_[0], rows_[1]
    assert fsdp["state_mib"] == pytest.approx(ddp["state_mib"] / world, rel=0.05)
