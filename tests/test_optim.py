"""optim.py: AdamW's decay groups and its fused kernel, the lr schedules (the Muon recipe: test_train.py)."""
import math

import pytest
import torch

import config

import optim
from model import GPT, GPTConfig
from config import load_config


def build(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=100, n_layer=1, n_head=4, n_embd=32, bias=True))


def test_adamw_decays_matrices_only():
    m = build()
    cfg = load_config(None, ["--weight_decay=0.1", "--learning_rate=1e-3", "--beta2=0.95"])
    opt, = optim.build_optimizers(m, cfg, "cpu")
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == m.num_params(non_embedding=False)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_fused_adamw_on_cpu_matches_unfused():
    """CPU uses the fused AdamW kernel when torch has it (for Muon's AdamW groups too), with the for-loop's updates."""
    assert optim.fused_adamw_available("cpu")
    m, ref = build(), build()
    cfg = load_config(None, ["--weight_decay=0.1", "--learning_rate=1e-2", "--beta2=0.95", "--eps=1e-8"])
    opt, = optim.build_optimizers(m, cfg, "cpu")
    assert opt.defaults["fused"] is True
    muon_cfg = load_config(None, ["--optimizer=muon"])
    assert optim.build_optimizers(build(), muon_cfg, "cpu")[1].defaults["fused"] is True
    slow = torch.optim.AdamW(optim.decay_groups(ref, 0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):                  # the same random gradients for both (model losses would amplify
        for p, q in zip(m.parameters(), ref.parameters()):   # rounding through near-zero gradients)
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt.step()
        slow.step()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_cosine_schedule_values():
    cfg = config.load_config(None, ["--learning_rate=1.0", "--min_lr_ratio=0.1", "--warmup_iters=10",
                                   "--max_iters=110"])
    lr = lambda s: optim.get_lr(s, cfg)  # noqa: E731
    assert lr(0) == pytest.approx(0.1) and lr(4) == pytest.approx(0.5) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)                   # half way down the cosine
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    # GPT*: cosine to 10%, then held for the final 10% of the steps
    held = config.load_config(None, ["--learning_rate=6e-4", "--warmup_iters=0", "--max_iters=100",
                                     "--lr_hold_frac=0.1"])
    assert optim.get_lr(0, held) == pytest.approx(6e-4)
    assert optim.get_lr(45, held) == pytest.approx(6e-5 + 0.5 * (6e-4 - 6e-5))
    assert [optim.get_lr(s, held) for s in (90, 95, 99)] == pytest.approx([6e-5] * 3)
    assert optim.get_lr(89, held) > 6e-5
    # explicit min_lr wins over min_lr_ratio; warmup from 10% of the peak (llama-style homework)
    fixed = config.load_config(None, ["--learning_rate=1.2e-3", "--min_lr=1e-5", "--warmup_iters=715",
                                     "--warmup_start_ratio=0.1", "--max_iters=19073"])
    assert fixed.min_lr == 1e-5 and optim.get_lr(19073, fixed) == pytest.approx(1e-5)
    assert optim.get_lr(0, fixed) == pytest.approx(1.2e-3 * (0.1 + 0.9 / 715))
    assert optim.get_lr(714, fixed) == pytest.approx(1.2e-3)


def test_wsd_and_constant_schedules():
    base = ["--learning_rate=1.0", "--min_lr=0.0", "--warmup_iters=10", "--max_iters=100", "--cooldown_frac=0.2"]
    lin = config.load_config(None, base + ["--lr_schedule=wsd"])
    sq = config.load_config(None, base + ["--lr_schedule=wsd", "--cooldown_shape=1-sqrt"])
    assert optim.get_lr(5, lin) == pytest.approx(0.6)
    assert optim.get_lr(10, lin) == optim.get_lr(79, lin) == 1.0
    assert optim.get_lr(80, lin) == pytest.approx(1.0)
    assert optim.get_lr(90, lin) == pytest.approx(0.5)
    assert optim.get_lr(90, sq) == pytest.approx(1 - math.sqrt(0.5))
    assert optim.get_lr(100, lin) == pytest.approx(0.0) and optim.get_lr(100, sq) == pytest.approx(0.0)
    const = config.load_config(None, base + ["--lr_schedule=constant"])
    assert optim.get_lr(0, const) == pytest.approx(0.1) and optim.get_lr(50, const) == optim.get_lr(99, const) == 1.0


@pytest.mark.parametrize("nesterov, adjust", [(True, None), (False, "match_rms_adamw")])
def test_batched_muon_takes_torch_muons_steps(nesterov, adjust):
    """optim.Muon orthogonalizes the matrices of one shape (up to a transpose) as one batch; its steps are
    torch.optim.Muon's (bfloat16 Newton-Schulz both, so equal to bf16 rounding), momentum state included."""
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 16), (48, 16), (16, 64), (64, 16), (16, 64)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust, ns_steps=4)
    opts = optim.Muon(ours, **kw), torch.optim.Muon(ref, **kw)
    for _ in range(3):
        for p, q in zip(ours, ref):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        for opt in opts:
            opt.step()
    for p, q, p0 in zip(ours, ref, start):
        moved = (q.detach() - p0).norm()                         # the three steps torch took
        assert moved > 0 and (p.detach() - q.detach()).norm() / moved < 2e-2, (p.shape, moved)
        torch.testing.assert_close(opts[0].state[p]["momentum_buffer"], opts[1].state[q]["momentum_buffer"])
    assert optim.orthogonalize([torch.randn(8, 8)], (3.4445, -4.775, 2.0315), 5, 1e-7)[0].shape == (8, 8)


def test_orthogonalize_in_batches_equals_one_matrix_at_a_time():
    """Stacking matrices of one shape up to a transpose changes nothing: each result equals newton_schulz on that
    matrix alone (bit for bit up to bf16 batched-matmul rounding), in its own orientation."""
    torch.manual_seed(0)
    coef = (3.4445, -4.775, 2.0315)
    updates = [torch.randn(s) for s in [(24, 8), (8, 24), (8, 8), (24, 8), (8, 40)]]
    for u, got in zip(updates, optim.orthogonalize(updates, coef, 5, 1e-7)):
        assert got.shape == u.shape
        torch.testing.assert_close(got.float(), optim.newton_schulz(u, coef, 5, 1e-7).float(), atol=1e-2, rtol=0)
