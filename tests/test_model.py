"""model.py: every toggle against reference math, KV-cache decoding, GPT-2 import, checkpoints."""
import dataclasses
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import sample
import model as model_mod
import runtime
from checkpoint import load_checkpoint, resolve_checkpoint
from load import load_model
from model import GPT, FlexMask, GPTConfig, apply_rope, alibi_slopes

VOCAB = 100


def tiny(**kw) -> GPTConfig:
    base = dict(block_size=32, vocab_size=VOCAB, n_layer=1, n_head=4, n_embd=32, dropout=0.0)
    base.update(kw)
    return GPTConfig(**base)


def build(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**kw)).eval()


def tokens(B=2, T=12, seed=1, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


# ----------------------------------------------------------------------------- every combination

ATTN = {"mha": None, "gqa": 2, "mqa": 1}
COMBOS = list(itertools.product(model_mod.POS_EMBS, model_mod.MLPS, model_mod.NORMS, [False, True], ATTN))


@pytest.mark.parametrize("pos_emb,mlp,norm,parallel,attn", COMBOS)
def test_every_combination_trains_and_is_causal(pos_emb, mlp, norm, parallel, attn):
    m = build(pos_emb=pos_emb, mlp=mlp, norm=norm, parallel_residual=parallel, n_kv_head=ATTN[attn],
              n_layer=2 if parallel else 1)
    x, y = tokens(T=12), tokens(T=12, seed=2)
    logits, loss = m(x), m(x, y)
    assert logits.shape == (2, 12, VOCAB)
    assert abs(loss.item() - math.log(VOCAB)) < 0.1
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if "wte" not in name:  # padded rows of the tied embedding get no gradient by design
            assert p.grad.abs().sum() > 0, name
    t = 6
    x2 = x.clone()
    x2[:, t] = (x2[:, t] + 1) % VOCAB
    with torch.no_grad():
        a, b = m(x), m(x2)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4


@pytest.mark.parametrize("kw", [dict(qk_norm=True, pos_emb="rope"), dict(bias=False, norm="layernorm"),
                                dict(tie_embeddings=False), dict(dropout=0.1, pos_emb="alibi", n_kv_head=2)])
def test_other_toggles_train(kw):
    m = build(**kw).train()
    loss = m(tokens(), tokens(seed=2))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    names = dict(m.named_parameters())
    if kw.get("qk_norm"):
        assert names["transformer.h.0.attn.q_norm.weight"].shape == (8,)
    if kw.get("bias") is False:
        assert not any(n.endswith("bias") for n in names)
    if kw.get("tie_embeddings") is False:
        assert m.lm_head.weight is not m.transformer.wte.weight


def test_parameter_names_and_shapes():
    m = build(n_kv_head=2, mlp="swiglu", pos_emb="learned")
    sd = m.state_dict()
    assert sd["transformer.wte.weight"].shape == (128, 32)          # 100 padded up to 64's multiple
    assert sd["transformer.wpe.weight"].shape == (32, 32)
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == ((4 + 2 * 2) * 8, 32)
    assert sd["transformer.h.0.mlp.c_gate.weight"].shape == (128, 32)  # 2/3*4*32 -> 128 (mult of 64)
    assert m.lm_head.weight is m.transformer.wte.weight
    assert "transformer.h.0.ln_2.weight" not in build(parallel_residual=True).state_dict()


def test_gpt2_init_scales_residual_projections():
    m = build(n_layer=4, n_embd=256, n_head=8)
    assert abs(m.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 1e-3
    for name in ("attn.c_proj.weight", "mlp.c_proj.weight"):
        w = m.transformer.h[1].get_submodule(name.rsplit(".", 1)[0]).weight
        assert abs(w.std().item() - 0.02 / math.sqrt(8)) < 5e-4
    assert (m.transformer.h[0].attn.c_attn.bias == 0).all()


# ----------------------------------------------------------------------------- positions

def rope_reference(x, theta):
    """Paper's RoPE in complex form: z_i = x_i + j x_{i+D/2}, rotated by m * theta^(-2i/D); x is (B, T, heads, D)."""
    T, D = x.shape[1], x.shape[-1]
    z = torch.complex(x[..., :D // 2].double(), x[..., D // 2:].double())
    freqs = torch.tensor([theta ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
    angles = (torch.arange(T, dtype=torch.float64)[:, None] * freqs[None, :])[:, None]       # (T, 1, D/2)
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((z.real, z.imag), dim=-1).float()


def test_rope_matches_complex_reference():
    rot = model_mod.RotaryEmbedding(16, 500.0, length=8)
    x = torch.randn(2, 20, 3, 16)
    cos, sin = rot(0, 20, torch.float32)          # also exercises growth past the initial length
    torch.testing.assert_close(apply_rope(x, cos, sin), rope_reference(x, 500.0), atol=1e-5, rtol=1e-5)
    cos2, sin2 = rot(13, 4, torch.float32)         # an offset slice equals the same rows
    torch.testing.assert_close(cos2, cos[13:17])
    torch.testing.assert_close(sin2, sin[13:17])


def test_rope_dot_product_depends_only_on_offset():
    rot = model_mod.RotaryEmbedding(16, 10000.0, length=64)
    cos, sin = rot(0, 64, torch.float32)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        qm = apply_rope(q.expand(64, 1, 16), cos, sin)[m, 0]
        kn = apply_rope(k.expand(64, 1, 16), cos, sin)[n, 0]
        return (qm @ kn).item()

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(7, 7) == pytest.approx(score(60, 60), abs=1e-4)
    assert abs(score(5, 2) - score(6, 2)) > 1e-3


def test_alibi_slopes_match_paper():
    # ALiBi paper: n a power of two -> 2^(-8/n * k), k = 1..n. Otherwise the closest power of two m
    # below n, then every other slope of the 2m-head sequence, first n - m of them.
    eight = [2 ** -k for k in range(1, 9)]
    torch.testing.assert_close(alibi_slopes(8), torch.tensor(eight))
    twelve = eight + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(twelve))
    six = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(six))


def test_alibi_bias_is_linear_distance_penalty():
    alibi = model_mod.ALiBi(4)
    bias = alibi(0, 6, torch.float32)
    s = alibi_slopes(4)
    for h, i, j in [(0, 5, 2), (3, 4, 0), (1, 3, 3)]:
        assert bias[h, i, j].item() == pytest.approx(-s[h].item() * (i - j))
    assert torch.isinf(bias[2, 1, 4]) and bias[2, 1, 4] < 0
    torch.testing.assert_close(alibi(3, 2, torch.float32), alibi(0, 9, torch.float32)[:, 3:5, :5])


def test_learned_positions_error_past_block_size_others_extrapolate():
    with pytest.raises(ValueError, match="block_size"):
        build(pos_emb="learned", block_size=8)(tokens(T=9))
    for pos in ("rope", "alibi", "none"):
        logits = build(pos_emb=pos, block_size=8)(tokens(T=20))
        assert logits.shape == (2, 20, VOCAB) and torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- attention

def reference_attention(attn, x, pos_emb):
    """Explicit softmax attention with K/V heads repeated by hand, from the module's weights."""
    B, T, C = x.shape
    H, Hkv, hd = attn.n_head, attn.n_kv_head, attn.head_dim
    q, k, v = attn.c_attn(x).split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
    q, k, v = q.view(B, T, H, hd), k.view(B, T, Hkv, hd), v.view(B, T, Hkv, hd)
    if attn.qk_norm:
        q = q / (q.pow(2).mean(-1, keepdim=True) + attn.q_norm.eps).sqrt() * attn.q_norm.weight
        k = k / (k.pow(2).mean(-1, keepdim=True) + attn.k_norm.eps).sqrt() * attn.k_norm.weight
    if pos_emb == "rope":
        q, k = rope_reference(q, 10000.0), rope_reference(k, 10000.0)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    v = v.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    i = torch.arange(T)
    if pos_emb == "alibi":
        scores = scores - alibi_slopes(H)[:, None, None] * (i[:, None] - i[None, :]).float()
    scores = scores.masked_fill(i[None, :] > i[:, None], float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


@pytest.mark.parametrize("pos_emb", ["rope", "alibi", "none"])
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_equals_explicit_repeat_reference(pos_emb, n_kv_head, qk_norm):
    """GQA/MQA, each position scheme and QK-norm (q's and k's own gains, here made unequal) against explicit
    softmax attention with the K/V heads repeated by hand."""
    m = build(pos_emb=pos_emb, n_kv_head=n_kv_head, qk_norm=qk_norm)
    if qk_norm:
        with torch.no_grad():
            m.transformer.h[0].attn.q_norm.weight.uniform_(0.5, 1.5)
            m.transformer.h[0].attn.k_norm.weight.uniform_(-1.5, -0.5)
    x = torch.randn(2, 10, 32)
    rope, bias = m._positions(x, 0, 10)
    with torch.no_grad():
        got = m.transformer.h[0].attn(x, rope, model_mod.SDPAMask(bias))
        want = reference_attention(m.transformer.h[0].attn, x, pos_emb)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gqa_with_all_kv_heads_is_mha():
    a, b = build(n_kv_head=None, pos_emb="rope"), build(n_kv_head=4, pos_emb="rope")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    x = tokens()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("pos_emb", ["rope", "alibi"])
def test_gqa_model_equals_mha_model_with_repeated_kv_weights(pos_emb):
    gqa = build(pos_emb=pos_emb, n_kv_head=2, n_layer=2)
    mha = build(pos_emb=pos_emb, n_kv_head=None, n_layer=2)
    sd = gqa.state_dict()
    hd, g = 8, 2
    for i in range(2):
        for suffix in ("weight", "bias"):
            w = sd[f"transformer.h.{i}.attn.c_attn.{suffix}"]
            q, k, v = w.split([32, 16, 16], dim=0)
            rep = lambda t: t.view(2, hd, *t.shape[1:]).repeat_interleave(g, dim=0).reshape(32, *t.shape[1:])
            sd[f"transformer.h.{i}.attn.c_attn.{suffix}"] = torch.cat([q, rep(k), rep(v)], dim=0)
    mha.load_state_dict(sd)
    x = tokens()
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- norms, MLPs, blocks

def test_rmsnorm_formula():
    norm = model_mod.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    x = torch.randn(3, 5, 16)
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), want)


@pytest.mark.parametrize("weight_shape", [(16,), (3, 16)], ids=["per_channel", "per_head"])
def test_rms_norm_written_out_gradient_equals_autograd_of_the_formula(weight_shape):
    """model.rms_norm's hand-written backward (float32 on a CPU) against autograd through the plain formula, in
    float64; a weight per head and channel (QK-norm's) gets the gradient summed over what it broadcasts along."""
    x = torch.randn(4, 5, 3, 16)
    w = torch.randn(weight_shape)
    g = torch.randn(4, 5, 3, 16)
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = model_mod.rms_norm(xs, ws, 1e-5)
    assert y.grad_fn.name().startswith("RMSNormFunction")
    y.backward(g)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    (xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5) * wd).backward(g.double())
    torch.testing.assert_close(y.double(), (xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5) * wd).detach(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xs.grad.double(), xd.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ws.grad.double(), wd.grad, atol=1e-5, rtol=1e-4)


def test_relu2_gradient_is_two_relu_times_the_incoming_one():
    """model.ReLU2's written-out backward equals autograd through relu(x).square() (zeros included)."""
    x = torch.randn(64, dtype=torch.float64)
    x[:4] = 0.0
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(64, dtype=torch.float64)
    model_mod.ReLU2.apply(a).backward(g)
    F.relu(b).square().backward(g)
    torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(model_mod.ReLU2.apply(x), F.relu(x).square())


def test_mlp_formulas():
    x = torch.randn(2, 5, 32)
    sw = build(mlp="swiglu").transformer.h[0].mlp
    torch.testing.assert_close(sw(x), sw.c_proj(F.silu(sw.c_gate(x)) * sw.c_fc(x)))
    r2 = build(mlp="relu2").transformer.h[0].mlp
    torch.testing.assert_close(r2(x), r2.c_proj(torch.clamp(r2.c_fc(x), min=0) ** 2))
    ge = build(mlp="gelu").transformer.h[0].mlp
    h = ge.c_fc(x)
    tanh_gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    torch.testing.assert_close(ge(x), ge.c_proj(tanh_gelu))


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_block_formulas(norm):
    x, causal = torch.randn(2, 6, 32), model_mod.SDPAMask(None)
    blk = build(parallel_residual=True, norm=norm, pos_emb="none").transformer.h[0]
    with torch.no_grad():
        blk.ln_1.weight.copy_(torch.rand(32) + 0.5)
        h = blk.ln_1(x)
        torch.testing.assert_close(blk(x, None, causal), x + blk.attn(h, None, causal) + blk.mlp(h))
    blk = build(parallel_residual=False, norm=norm, pos_emb="none").transformer.h[0]
    with torch.no_grad():
        x1 = x + blk.attn(blk.ln_1(x), None, causal)
        torch.testing.assert_close(blk(x, None, causal), x1 + blk.mlp(blk.ln_2(x1)))


# ----------------------------------------------------------------------------- KV cache and sampling

DOC = 7   # the document-start token of the doc_mask_token tests
# the speed-run toggles at once, windows short enough to bind and documents short enough to split a row
SPEEDRUN = dict(value_embeds=1, x0_mix=True, unet_skips=True, window_pattern="SL", window_short=3, window_long=6,
                doc_mask_token=DOC)


def scramble_scalars(m: GPT, seed: int = 0) -> GPT:
    """Random values for the toggles' learned scalars (their init would hide a wrong formula)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("lambdas", "skip_weights")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return m


@pytest.mark.parametrize("pos_emb", model_mod.POS_EMBS)
@pytest.mark.parametrize("n_kv_head", [None, 2])
@pytest.mark.parametrize("toggles", [{}, SPEEDRUN], ids=["plain", "speedrun"])
def test_kv_cache_logits_equal_full_forward_every_step(pos_emb, n_kv_head, toggles):
    m = scramble_scalars(build(pos_emb=pos_emb, n_kv_head=n_kv_head, n_layer=2, block_size=12, **toggles))
    idx = tokens(T=5)
    idx[1, 2] = DOC
    cache = sample.new_cache(m, 2, 5 + 14)
    start, starts = 0, []
    for step in range(14):  # runs past block_size: slides for learned (half a window at once), extrapolates otherwise
        start = sample.context_start(m, start, idx.size(1))
        starts.append(start)
        got = sample.next_token_logits(m, idx, cache, start)
        with torch.no_grad():
            want = m(idx[:, start:])[:, -1]
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        nxt = got.argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt if step % 5 != 2 else torch.full_like(nxt, DOC)], dim=1)  # documents start
    assert idx.size(1) == 19
    # learned: lengths 5..12 fit; at 13 the oldest half (6) goes, and 13..18 fit again after it
    assert starts == ([0] * 8 + [7] * 6 if pos_emb == "learned" else [0] * 14)


def test_learned_positions_past_block_size_keep_half_a_window_at_least():
    m = build(pos_emb="learned", block_size=8)
    start, contexts = 0, []
    for length in range(1, 60):
        start = sample.context_start(m, start, length)
        contexts.append(length - start)
    assert max(contexts) == 8 and min(contexts[8:]) == 4 and contexts[:8] == list(range(1, 9))


@pytest.mark.parametrize("pos_emb", model_mod.POS_EMBS)
@pytest.mark.parametrize("toggles", [{}, dict(SPEEDRUN, n_layer=2)], ids=["plain", "speedrun"])
def test_kv_cache_chunked_feed_and_generate_match(pos_emb, toggles):
    m = scramble_scalars(build(pos_emb=pos_emb, n_kv_head=1, block_size=16, **toggles))
    idx = tokens(T=9)
    idx[:, [3, 6]] = DOC                             # a document starts in the prefix and one in the chunk
    cache = sample.new_cache(m, 2, 16)
    with torch.no_grad():
        m.forward_cached(idx[:, :5], cache)
        got = m.forward_cached(idx[:, 5:], cache)   # 4 queries after a cached prefix of 5
        torch.testing.assert_close(got, m(idx)[:, -1], atol=2e-5, rtol=1e-5)
    a = sample.generate(m, tokens(T=4), 10, sample.Decoding(temperature=0, use_cache=True))
    b = sample.generate(m, tokens(T=4), 10, sample.Decoding(temperature=0, use_cache=False))
    assert torch.equal(a, b) and a.shape == (2, 14)


def test_generation_and_scoring_avoid_per_shape_cudnn_attention():
    """Decoding changes the attention shape every token; cuDNN attention (preferred by PyTorch on Hopper)
    builds a plan per shape, which made generation 12x slower on an H100. next_token_logits turns it off,
    and only for its own duration."""
    m = build(n_layer=1)
    seen = []
    m.transformer.h[0].attn.register_forward_hook(
        lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    sample.generate(m, tokens(T=3), 3, sample.Decoding(temperature=0, use_cache=True))
    sample.generate(m, tokens(T=3), 2, sample.Decoding(temperature=0, use_cache=False))
    assert seen == [False] * 5
    assert torch.backends.cuda.cudnn_sdp_enabled()          # restored afterwards
    import evaluate
    evaluate.score_requests(m, [evaluate.Request(tokens=[1, 2, 3, 4], n_cont=2)])
    assert seen[-1] is False


def test_padded_ids_never_predicted_nor_targets():
    m = build(tie_embeddings=False)                 # 100 real ids, 128 rows
    assert m.config.padded_vocab_size == 128
    with torch.no_grad():
        m.lm_head.weight[:VOCAB].zero_()
        m.lm_head.weight[VOCAB:].normal_(0, 100.0)  # would win every sample if it were visible
    x = tokens()
    logits, loss = m(x), m(x, tokens(seed=3))
    assert logits.shape[-1] == VOCAB
    assert loss.item() == pytest.approx(math.log(VOCAB), abs=1e-5)  # uniform over the real ids only
    out = sample.generate(m, x, 30, sample.Decoding(temperature=1.0), generator=torch.Generator().manual_seed(0))
    assert out.max() < VOCAB


@pytest.mark.parametrize("kw", [dict(), dict(logit_softcap=2.0, pos_emb="rope", tie_embeddings=False)])
def test_hidden_states_then_output_logits_equal_forward(kw):
    m = build(**kw).eval()
    x = tokens()
    with torch.no_grad():
        want = m(x)
        h = m.hidden_states(x)
        assert h.shape == (*x.shape, m.config.n_embd)
        torch.testing.assert_close(m.output_logits(h), want, rtol=0, atol=0)
        torch.testing.assert_close(m.output_logits(h[:, [3, 7]]), want[:, [3, 7]], rtol=0, atol=1e-6)


def test_sampling_options():
    m = build()
    x = tokens()
    greedy = sample.generate(m, x, 6, sample.GREEDY)
    assert torch.equal(sample.generate(m, x, 6, sample.Decoding(top_k=1)), greedy)
    assert torch.equal(sample.generate(m, x, 6, sample.Decoding(top_p=1e-6)), greedy)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    top = sample.Decoding(top_k=10, top_p=0.9)
    assert torch.equal(sample.generate(m, x, 6, top, generator=g1), sample.generate(m, x, 6, top, generator=g2))
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).log_softmax(-1)
    for seed in range(20):  # top_k=2 keeps ids 2, 3; top_p=0.5 keeps only id 3 (p=0.64)
        assert sample.pick_token(logits, top_k=2, generator=torch.Generator().manual_seed(seed)).item() in (2, 3)
        assert sample.pick_token(logits, top_p=0.5, generator=torch.Generator().manual_seed(seed)).item() == 3
    stop = greedy[0, x.size(1) + 2].item()
    out = sample.generate(m, x[:1], 6, sample.GREEDY, stop_token=stop)
    assert out.size(1) <= x.size(1) + 3 and out[0, -1].item() == stop
    streamed = list(sample.generate_stream(m, x, 3, sample.GREEDY))
    assert [t.shape for t in streamed] == [(2, 1)] * 3


# ----------------------------------------------------------------------------- accounting and optimiser

def test_gpt2_124m_parameter_count():
    cfg = GPTConfig(vocab_size=50257, pad_vocab_multiple=1)
    with torch.device("meta"):
        m = GPT(cfg)
    assert m.num_params(non_embedding=False) == 124_439_808
    assert m.num_params() == 124_439_808 - 1024 * 768


def test_flops_per_token_counts_toggles():
    cfg = tiny(n_layer=2, n_embd=64, n_head=8, pad_vocab_multiple=1)
    C, L, T, hd = 64, 2, 16, 8
    attn_term = 12 * L * 8 * hd * T
    mha = 6 * (L * (C * 3 * C + C * C + 2 * C * 4 * C) + C * VOCAB) + attn_term
    assert runtime.flops_per_token(GPT(cfg).config, T) == mha
    gqa = GPT(dataclasses.replace(cfg, n_kv_head=2))
    assert runtime.flops_per_token(gqa.config, T) == mha - 6 * L * C * 2 * (8 - 2) * hd
    sw = GPT(dataclasses.replace(cfg, mlp="swiglu"))  # hidden 2/3*256 -> 192, three matrices
    assert runtime.flops_per_token(sw.config, T) == mha - 6 * L * 2 * C * 4 * C + 6 * L * 3 * C * 192
    assert runtime.mfu(runtime.flops_per_token(cfg, T), 1000.0, peak=1e12) == pytest.approx(mha * 1000.0 / 1e12)


# ----------------------------------------------------------------------------- fused output layer + loss

def ce_problem(dtype, N=45, C=16, V=70, V_padded=80, seed=0):
    """x (N, C), weight (V_padded, C), targets over the first V ids with some ignored (-1) rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(V_padded, C, generator=g, dtype=dtype).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    t[::7] = -1
    return x, w, t, V


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk,group_chunks", [(8, 1), (8, 2), (16, 100), (1000, 1)])  # ragged chunks/groups
@pytest.mark.parametrize("softcap", [0.0, 3.0])  # 3.0: the logits (std ~4) are well into tanh's bend
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_linear_cross_entropy_equals_reference(dtype, tol, chunk, group_chunks, softcap, smoothing, monkeypatch):
    x, w, t, V = ce_problem(dtype)
    monkeypatch.setattr(model_mod.LinearCrossEntropy, "GROUP_ELEMENTS", V * chunk * group_chunks)
    logits = x @ w[:V].t()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    ref = F.cross_entropy(logits, t, ignore_index=-1, label_smoothing=smoothing)
    ref_gx, ref_gw = torch.autograd.grad(ref * 1.7, (x, w))
    got = model_mod.linear_cross_entropy(x, w, t, V, chunk=chunk, softcap=softcap, label_smoothing=smoothing)
    gx, gw = torch.autograd.grad(got * 1.7, (x, w))
    assert got.dtype == dtype
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx, ref_gx, rtol=tol, atol=tol)
    torch.testing.assert_close(gw, ref_gw, rtol=tol, atol=tol)
    assert gw[V:].abs().max() == 0                              # padded rows get no gradient
    assert gx[::7].abs().max() == 0                             # ignored rows get no gradient


def test_linear_cross_entropy_batched_shapes_and_all_ignored():
    x, w, t, V = ce_problem(torch.float64, N=24)
    ref = F.cross_entropy(x @ w[:V].t(), t, ignore_index=-1)
    got = model_mod.linear_cross_entropy(x.view(4, 6, -1), w, t.view(4, 6), V, chunk=5)
    torch.testing.assert_close(got, ref)
    none = model_mod.linear_cross_entropy(x, w, torch.full_like(t, -1), V)
    none.backward()
    assert none.item() == 0.0 and x.grad.abs().max() == 0 and w.grad.abs().max() == 0


def test_linear_cross_entropy_gradients_accumulate():
    """Two backward passes (gradient accumulation) add up like the reference's."""
    x, w, t, V = ce_problem(torch.float64)
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    for half, scale in ((slice(0, 20), 1.0), (slice(20, None), 0.5)):   # unscaled and scaled backward
        (F.cross_entropy(x[half] @ w[:V].t(), t[half], ignore_index=-1) * scale).backward()
        (model_mod.linear_cross_entropy(x2[half], w2, t[half], V, chunk=8) * scale).backward()
    torch.testing.assert_close(x2.grad, x.grad)
    torch.testing.assert_close(w2.grad, w.grad)
    x3 = x.detach().clone().requires_grad_()
    loss = model_mod.linear_cross_entropy(x3, w.detach(), t, V, chunk=8)
    loss.backward(retain_graph=True)
    loss.backward()                                             # the same graph twice: twice the gradient
    ref = torch.autograd.grad(F.cross_entropy(x3 @ w[:V].t().detach(), t, ignore_index=-1), x3)[0]
    torch.testing.assert_close(x3.grad, 2 * ref)


def test_linear_cross_entropy_without_grad():
    x, w, t, V = ce_problem(torch.float32)
    ref = F.cross_entropy(x @ w[:V].t(), t, ignore_index=-1)
    with torch.no_grad():
        got = model_mod.linear_cross_entropy(x, w, t, V, chunk=8)
    assert not got.requires_grad
    torch.testing.assert_close(got, ref)


def grads(m: GPT) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("tie", [True, False])
def test_fused_loss_model_equals_unfused(tie):
    """GPT(loss="chunked") against GPT(loss="full"): same loss and same gradient for every parameter (tied wte
    included)."""
    m = build(tie_embeddings=tie, n_layer=2).train()
    full = GPT(m.config, loss="full").train()
    full.load_state_dict(m.state_dict())
    x, y = tokens(T=16), tokens(T=16, seed=2)
    y[0, :3] = -1
    loss = full(x, y)
    loss.backward()
    want = grads(full)
    fused = m(x, y)
    fused.backward()
    torch.testing.assert_close(fused, loss, rtol=1e-6, atol=1e-6)
    got = grads(m)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(m(x, y), loss, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="GPT\\(loss='fused'\\) is unknown; choose one of chunked, full"):
        GPT(m.config, loss="fused")


def test_fused_loss_under_bf16_autocast():
    """Inside torch.autocast(bf16) the matmuls run in bf16: loss and gradients close to fp32."""
    m = build(n_layer=2, n_embd=64).train()
    x, y = tokens(B=4, T=32), tokens(B=4, T=32, seed=2)
    loss = m(x, y)
    loss.backward()
    want = grads(m)
    m.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = m(x, y)
    assert fused.dtype == torch.float32
    fused.backward()
    assert abs(fused.item() - loss.item()) < 0.02
    for name, g in grads(m).items():
        assert g.dtype == torch.float32
        rel = ((g - want[name]).norm() / want[name].norm().clamp(min=1e-12)).item()
        assert rel < 0.05, (name, rel)


# ----------------------------------------------------------------------------- config errors

@pytest.mark.parametrize("kw,match", [
    (dict(n_head=4, n_kv_head=3), r"n_kv_head=3.*divide n_head"),
    (dict(n_embd=30, n_head=4), r"n_embd=30.*n_head=4"),
    (dict(n_embd=36, n_head=4, pos_emb="rope"), r"even head size.*9"),
    (dict(pos_emb="sinusoidal"), r"pos_emb='sinusoidal'.*learned, rope, alibi, none"),
    (dict(mlp="geglu"), r"mlp='geglu'.*gelu, swiglu, relu2"),
    (dict(norm="batchnorm"), r"norm='batchnorm'.*layernorm, rmsnorm"),
    (dict(n_layer=3, value_embeds=2), r"value_embeds=2 needs .*n_layer=3"),
    (dict(window_pattern="LXS"), r"window_pattern='LXS' may hold only L .* and S"),
    (dict(window_pattern="S", window_short=0), r"window_short=0 .* positive"),
    (dict(doc_mask_token=VOCAB), r"doc_mask_token=100 .* below vocab_size=100"),
])
def test_bad_configs_fail_with_field_and_fix(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


# ----------------------------------------------------------------------------- loading

def test_from_checkpoint_round_trip(tmp_path):
    m = build(pos_emb="rope", n_kv_head=2, mlp="swiglu", norm="rmsnorm")
    old = build(seed=9)
    for step, mod in ((9, old), (10, m)):   # numeric, not lexicographic, order picks step 10
        sd = {"_orig_mod." + k: v for k, v in mod.state_dict().items()}
        torch.save({"format": 1, "model_config": dataclasses.asdict(mod.config), "model": sd,
                    "tokenizer": {"kind": "gpt2"}, "step": step}, tmp_path / f"ckpt_{step}.pt")
    assert resolve_checkpoint(tmp_path).name == "ckpt_10.pt"
    assert load_checkpoint(tmp_path)["step"] == 10
    loaded, _ = load_model(tmp_path, tokenizer="skip")
    assert loaded.config == m.config and not loaded.training
    x = tokens()
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    assert load_model(tmp_path / "ckpt_9.pt", tokenizer="skip")[0].config == old.config


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")


def test_top_k_draws_follow_the_renormalised_top_k_distribution():
    """Sampling among the k best only (no softmax over the vocabulary) is the same distribution as masking
    the rest to -inf: 40,000 draws of a 20-token vocabulary, k=5 (and top-p on top of it)."""
    logits = torch.randn(1, 20, generator=torch.Generator().manual_seed(3)) * 2
    batch = logits.expand(40_000, -1)
    for top_p, kept in ((None, 5), (0.6, None)):
        draws = sample.pick_token(batch, temperature=0.7, top_k=5, top_p=top_p, generator=torch.Generator().manual_seed(0))
        ref = (logits[0] / 0.7).masked_fill(logits[0] < logits[0].topk(5).values[-1], float("-inf")).softmax(-1)
        if top_p is not None:   # reference top-p over the top-5: the smallest set of sorted ids reaching p
            order = ref.argsort(descending=True)
            keep = (ref[order].cumsum(0) - ref[order]) < top_p
            ref = torch.zeros_like(ref).scatter(0, order[keep], ref[order][keep])
            ref = ref / ref.sum()
        freq = torch.bincount(draws.view(-1), minlength=20).float() / draws.numel()
        torch.testing.assert_close(freq, ref, atol=0.01, rtol=0)
        assert kept is None or int((freq > 0).sum()) == kept


def test_logit_softcap_bounds_the_logits_in_every_path():
    """cap * tanh(logits / cap): full forward, fused loss, KV-cache decoding agree; off (0) changes nothing."""
    plain, capped = build(pos_emb="rope"), build(pos_emb="rope", logit_softcap=2.0)
    capped.load_state_dict(plain.state_dict())
    for p in capped.lm_head.parameters():
        p.data.mul_(50)                                        # raw logits far beyond the cap
    x = tokens(T=10)
    with torch.no_grad():
        logits = capped(x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), x.reshape(-1))
        h = capped.transformer.wte(x)
        rope, bias = capped._positions(h, 0, 10)
        raw = capped.lm_head(capped.transformer.ln_f(capped.transformer.h[0](h, rope, model_mod.SDPAMask(bias))))
        torch.testing.assert_close(logits, 2.0 * torch.tanh(raw[..., :VOCAB] / 2.0), atol=1e-5, rtol=1e-5)
        assert logits.abs().max() <= 2.0 and raw.abs().max() > 20
        fused = capped(x, x)
        torch.testing.assert_close(fused, loss, atol=1e-5, rtol=1e-5)
        cache = sample.new_cache(capped, 2, 10)
        torch.testing.assert_close(sample.next_token_logits(capped, x, cache), logits[:, -1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="logit_softcap"):
        GPTConfig(logit_softcap=-1.0)


def test_zero_init_proj_starts_every_block_as_the_identity_and_still_learns():
    m = build(n_layer=2, zero_init_proj=True, pos_emb="rope").train()
    projections = [p for n, p in m.named_parameters() if n.endswith("c_proj.weight")]
    assert len(projections) == 4 and all(p.abs().max() == 0 for p in projections)
    x = tokens(T=10)
    with torch.no_grad():   # blocks add nothing: logits come straight from the embedding through ln_f
        want = m.lm_head(m.transformer.ln_f(m.transformer.wte(x)))[..., :VOCAB]
        torch.testing.assert_close(m(x), want)
    loss = m(x, x)
    loss.backward()
    assert all(p.grad.abs().max() > 0 for p in projections)       # the projections get gradient at once
    assert build(n_layer=2).transformer.h[0].attn.c_proj.weight.abs().max() > 0   # off by default


# ----------------------------------------------------------------------------- speed-run toggles (issue 15)

def reference_doc_ids(idx):
    """Document of every position, by counting DOC tokens up to and including it (a document starts there)."""
    return [[sum(1 for s in range(t + 1) if row[s] == DOC) for t in range(len(row))] for row in idx.tolist()]


def reference_layer_attention(attn, h, c, window, docs, ve):
    """One layer's attention, one query at a time over exactly the keys it may see: causal, inside the window
    (itself and the window - 1 before it), in its own document; the value embedding mixed into v first."""
    B, T, C = h.shape
    H, Hkv, hd = c.n_head, c.kv_heads, c.head_dim
    q, k, v = attn.c_attn(h).split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
    if ve is not None:
        v = attn.value_mix.lambdas[0] * v + attn.value_mix.lambdas[1] * ve
    q, k = q.view(B, T, H, hd), k.view(B, T, Hkv, hd)
    if c.pos_emb == "rope":
        q, k = rope_reference(q, c.rope_theta), rope_reference(k, c.rope_theta)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    v = v.view(B, T, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    slopes = alibi_slopes(H) if c.pos_emb == "alibi" else torch.zeros(H)
    out = torch.zeros(B, H, T, hd)
    for b in range(B):
        for t in range(T):
            keys = [s for s in range(t + 1) if (window is None or t - s < window)
                    and (docs is None or docs[b][s] == docs[b][t])]
            scores = (k[b, :, keys] @ q[b, :, t, :, None]).squeeze(-1) / math.sqrt(hd)     # (H, len(keys))
            scores = scores - slopes[:, None] * (t - torch.tensor(keys, dtype=torch.float32))[None, :]
            out[b, :, t] = (scores.softmax(-1)[:, None, :] @ v[b, :, keys]).squeeze(1)
    return attn.c_proj(out.transpose(1, 2).reshape(B, T, C))


def reference_logits(m, idx):
    """The whole model written out from its config: embeddings, U-net skips, x0 mixing, value embeddings,
    windowed/document-masked attention, sequential blocks; no code shared with model.py's masks or loop."""
    c, L = m.config, m.config.n_layer
    B, T = idx.shape
    x = m.transformer.wte(idx)
    if c.pos_emb == "learned":
        x = x + m.transformer.wpe(torch.arange(T))
    x0, outputs = x, []
    tables = [table(idx) for table in m.value_embeds.tables]
    pattern = c.window_pattern
    docs = reference_doc_ids(idx) if c.doc_mask_token is not None else None
    k = c.value_embeds
    for i, blk in enumerate(m.transformer.h):
        j = L - 1 - i
        if c.unet_skips and j < L // 2:
            x = x + m.unet.skip_weights[j] * outputs[j]
        if c.x0_mix:
            x = m.x0_mix.resid_lambdas[i] * x + m.x0_mix.x0_lambdas[i] * x0
        window = {"L": c.window_long, "S": c.window_short}[pattern[i % len(pattern)]] if pattern else None
        ve = tables[i] if i < k else tables[i - (L - k)] if i >= L - k else None
        x = x + reference_layer_attention(blk.attn, blk.ln_1(x), c, window, docs, ve)
        x = x + blk.mlp(blk.ln_2(x))
        outputs.append(x)
    return m.lm_head(m.transformer.ln_f(x))[..., :c.vocab_size]


def doc_tokens(B=2, T=20):
    x = tokens(B=B, T=T)
    x[0, [0, 6, 7, 15]] = DOC          # row 0: documents of 6, 1, 8 and 5 tokens
    x[1, [4, 12]] = DOC                # row 1: 4 tokens before the first document start
    return x


REFERENCE_CASES = {
    "value_embeds": dict(value_embeds=1, n_layer=3, n_kv_head=2, pos_emb="rope"),   # tables at layers 0 and 2
    "value_embeds_2": dict(value_embeds=2, n_layer=4, pos_emb="learned"),
    "x0_unet_even": dict(x0_mix=True, unet_skips=True, n_layer=4),
    "x0_unet_odd": dict(x0_mix=True, unet_skips=True, n_layer=5, pos_emb="none"),     # middle block unpaired
    "windows_rope_gqa": dict(window_pattern="SLS", window_short=3, window_long=8, n_layer=3, pos_emb="rope",
                             n_kv_head=2),
    "windows_alibi": dict(window_pattern="SL", window_short=4, n_layer=2, pos_emb="alibi"),
    "docs_learned": dict(doc_mask_token=DOC, n_layer=2),
    "docs_windows_alibi_mqa": dict(doc_mask_token=DOC, window_pattern="LS", window_short=5, window_long=9,
                                   n_layer=2, pos_emb="alibi", n_kv_head=1),
    "everything": dict(SPEEDRUN, n_layer=4, pos_emb="rope"),
}


@pytest.mark.parametrize("kw", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
def test_speedrun_toggles_equal_the_explicit_reference(kw):
    m = scramble_scalars(build(**kw))
    x = doc_tokens()
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_logits(m, x), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(SPEEDRUN, n_layer=4, pos_emb="alibi"), dict(SPEEDRUN, n_layer=2, n_kv_head=2)])
def test_flex_attention_masks_equal_the_sdpa_masks(kw, monkeypatch):
    """The CUDA-compiled path's FlexMask (block mask, ALiBi score_mod, GQA), run eagerly on the CPU."""
    if model_mod.flex_attention is None:
        pytest.skip("this torch has no flex_attention")
    m = scramble_scalars(build(**kw))
    x = doc_tokens()
    calls, flex = [], model_mod.flex_attention
    with torch.no_grad():
        want = m(x)
        monkeypatch.setattr(model_mod, "flex_applies", lambda device: True)
        monkeypatch.setattr(model_mod, "flex_attention", lambda *a, **k: calls.append(1) or flex(*a, **k))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # eager flex_attention says it is unfused
            got = m(x)
    assert len(calls) == m.config.n_layer
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got, reference_logits(m, x), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_flex_attention_compiled_equals_the_reference(device, monkeypatch):
    """Windows, documents, ALiBi and GQA through compiled flex_attention (inductor on CPU too, so CI runs it)."""
    m = scramble_scalars(build(**dict(SPEEDRUN, n_layer=4, pos_emb="alibi", n_kv_head=2)))
    x = doc_tokens()
    used = []
    monkeypatch.setattr(model_mod, "FlexMask", lambda *a: used.append(a) or FlexMask(*a))
    with torch.no_grad():
        want = reference_logits(m, x)
        compiled = torch.compile(m.to(device))
        got = compiled(x.to(device)).cpu()
    assert used, "the compiled forward took the flex_attention path"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_masks_are_built_once_per_forward_per_distinct_window(monkeypatch):
    m = build(n_layer=4, window_pattern="SSSL", window_short=3, doc_mask_token=DOC)
    calls = []
    real = model_mod.allowed_keys
    monkeypatch.setattr(model_mod, "allowed_keys", lambda *a: calls.append(a[2]) or real(*a))
    with torch.no_grad():
        m(doc_tokens())
    assert sorted(calls, key=str) == [3, None]


def test_x0_mix_and_unet_skips_start_as_the_plain_model_and_learn():
    plain, mixed = build(n_layer=4, pos_emb="rope"), build(n_layer=4, pos_emb="rope", x0_mix=True, unet_skips=True)
    missing = mixed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["unet.skip_weights", "x0_mix.resid_lambdas", "x0_mix.x0_lambdas"]
    assert mixed.unet.skip_weights.shape == (2,)
    x = tokens()
    torch.testing.assert_close(mixed(x), plain(x), rtol=0, atol=0)
    loss = mixed.train()(x, tokens(seed=2))
    loss.backward()
    for p in (mixed.unet.skip_weights, mixed.x0_mix.resid_lambdas, mixed.x0_mix.x0_lambdas):
        assert p.grad.abs().min() > 0


def test_value_embeddings_layers_shapes_and_training():
    m = build(n_layer=5, value_embeds=2, n_kv_head=2).train()
    assert m.config.value_embed_tables == [0, 1, None, 0, 1]       # first two and last two layers, shared
    assert [t.weight.shape for t in m.value_embeds.tables] == [(128, 16)] * 2     # padded vocab x K/V width
    mixes = [type(b.attn.value_mix).__name__ for b in m.transformer.h]
    assert mixes == ["ValueMix"] * 2 + ["Passthrough"] + ["ValueMix"] * 2
    loss = m(tokens(), tokens(seed=2))
    loss.backward()
    assert all(t.weight.grad.abs().sum() > 0 for t in m.value_embeds.tables)
    assert all(p.grad is not None for p in m.parameters())


def test_default_config_adds_no_parameters_and_no_masks():
    m = build(n_layer=2)
    assert not any(k.startswith(("value_embeds", "x0_mix", "unet")) for k in m.state_dict())
    assert isinstance(m.attn_masks, model_mod.CausalMasks)
    assert GPTConfig().layer_windows == [None] * 12 and GPTConfig().value_embed_tables == [None] * 12


def test_num_params_and_flops_with_speedrun_toggles():
    cfg = tiny(n_layer=4, n_embd=64, n_head=8, pad_vocab_multiple=1)
    plain = GPT(cfg)
    ve = GPT(dataclasses.replace(cfg, value_embeds=2, x0_mix=True, unet_skips=True))
    scalars = 2 * 4 + 2 * 4 + 2                                     # ValueMix x 4 layers, x0 lambdas, skips
    assert ve.num_params(non_embedding=False) == plain.num_params(non_embedding=False) + 2 * VOCAB * 64 + scalars
    assert ve.num_params() == plain.num_params() + scalars          # the tables are lookups
    assert runtime.flops_per_token(ve.config, 16) == runtime.flops_per_token(plain.config, 16)  # lookups, mixes: none
    windowed = GPT(dataclasses.replace(cfg, window_pattern="SSL", window_short=4, window_long=10))
    per_key = 12 * 8 * 8                                            # 12 * H * hd per key per layer
    fewer_keys = per_key * ((16 - 4) * 3 + (16 - 10))
    assert runtime.flops_per_token(windowed.config, 16) == runtime.flops_per_token(plain.config, 16) - fewer_keys
    assert runtime.flops_per_token(windowed.config, 2) == runtime.flops_per_token(plain.config, 2)  # windows > T: same


def test_label_smoothing_in_both_loss_paths_equals_torch_over_the_real_vocabulary():
    """Smoothing spreads eps over the real ids only: the padded columns (-inf) must not enter it."""
    model = GPT(GPTConfig(block_size=16, vocab_size=100, pad_vocab_multiple=64, n_layer=1, n_head=2, n_embd=16))
    x = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(0))
    full_model = GPT(model.config, loss="full")
    full_model.load_state_dict(model.state_dict())
    logits, plain = model(x[:, :-1]), full_model(x[:, :-1], x[:, 1:])
    ref = F.cross_entropy(logits.reshape(-1, 100), x[:, 1:].reshape(-1), label_smoothing=0.1)
    full = full_model(x[:, :-1], x[:, 1:], label_smoothing=0.1)
    fused = model(x[:, :-1], x[:, 1:], label_smoothing=0.1)
    assert torch.isfinite(full) and full.item() != pytest.approx(plain.item())
    torch.testing.assert_close(full, ref)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)


def test_layer_scale_at_one_is_the_plain_model_and_its_gains_learn():
    """The worked example of docs/adding_a_toggle.md: LayerScale (CaiT) on every residual branch."""
    for parallel in (False, True):
        plain = build(n_layer=2, parallel_residual=parallel)
        scaled = build(n_layer=2, parallel_residual=parallel, layer_scale=1.0)
        missing = scaled.load_state_dict(plain.state_dict(), strict=False).missing_keys
        assert sorted(missing) == [f"transformer.h.{i}.{b}_scale.gamma" for i in (0, 1) for b in ("attn", "mlp")]
        x = tokens()
        torch.testing.assert_close(scaled(x), plain(x), rtol=0, atol=0)     # gamma = 1: nothing changes
        small = build(n_layer=2, parallel_residual=parallel, layer_scale=1e-4)
        small.load_state_dict(plain.state_dict(), strict=False)
        x0 = small.transformer.ln_f(small.transformer.wte(x) + small.transformer.wpe(torch.arange(12)))
        torch.testing.assert_close(small(x), small.output_logits(x0), atol=1e-2, rtol=0)  # ~ the embedding alone
        loss = scaled.train()(x, tokens(seed=2))
        loss.backward()
        assert all(blk.attn_scale.gamma.grad.abs().sum() > 0 for blk in scaled.transformer.h)
    with pytest.raises(ValueError, match=r"GPTConfig.layer_scale=-1.0 must be >= 0 \(0 = off\)"):
        tiny(layer_scale=-1.0)
