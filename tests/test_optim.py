"""optim.py: AdamW's decay groups and its fused kernel (the Muon recipe's groups and schedules: test_train.py)."""
import torch

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
