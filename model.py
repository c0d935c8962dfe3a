"""One GPT, every architecture toggle of the systems in SEEDS.md, built from a single GPTConfig.

The baseline is GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"):
pre-norm transformer, learned absolute positions, GELU MLP (tanh approximation, as in the released
weights), LayerNorm, tied input/output embeddings, init std 0.02 with residual projections scaled by
1/sqrt(2 * n_layer). Each toggle follows one paper:

- pos_emb="rope":   RoFormer, Su et al. 2021 (arXiv:2104.09864), in the GPT-NeoX / Llama "rotate_half"
                    layout: dimension i is paired with i + head_dim/2, inv_freq = theta^(-2i/head_dim).
- pos_emb="alibi":  ALiBi, Press et al. 2022, "Train Short, Test Long" (arXiv:2108.12409): a per-head
                    linear distance penalty, slopes as in the paper (incl. non-power-of-two head counts).
- pos_emb="none":   NoPE; causal attention alone carries order (Haviv et al. 2022, arXiv:2203.16634).
- n_kv_head:        grouped-query attention, Ainslie et al. 2023 (arXiv:2305.13245); n_kv_head=1 is
                    multi-query attention, Shazeer 2019 (arXiv:1911.02150).
- mlp="swiglu":     GLU variants, Shazeer 2020 (arXiv:2002.05202), hidden 2/3 * 4d as in LLaMA
                    (Touvron et al. 2023, arXiv:2302.13971).
- mlp="relu2":      squared ReLU, Primer, So et al. 2021 (arXiv:2109.08668).
- norm="rmsnorm":   Zhang & Sennrich 2019 (arXiv:1910.07467).
- parallel_residual: GPT-J (Wang & Komatsuzaki 2021) / GPT-NeoX (Black et al. 2022, arXiv:2204.06745):
                    x + attn(ln(x)) + mlp(ln(x)) with one shared norm per block.
- qk_norm:          RMSNorm on queries and keys per head (Dehghani et al. 2023, arXiv:2302.05442).
- logit_softcap:    cap * tanh(logits / cap) on the output (Gemma 2, Gemma Team 2024, arXiv:2408.00118;
                    modded-nanogpt), also inside the fused loss.
- zero_init_proj:   attention and MLP output projections start at zero (modded-nanogpt).
- value_embeds=k:   value embeddings (modded-nanogpt, Jordan et al. 2024, record of 2024-11; after value residual
                    learning, Zhou et al. 2024, arXiv:2410.17897): k extra token tables; table j feeds layers j
                    and n_layer-k+j, whose values become v = l0 * v + l1 * ve (l0, l1 learned, init 0.5, 0.5).
- x0_mix:           before block i, x = a_i * x + b_i * x0, x0 the embedding (modded-nanogpt, nanochat);
                    a_i = 1, b_i = 0 at init.
- unet_skips:       U-net skips (modded-nanogpt; Ronneberger et al. 2015, arXiv:1505.04597): the output of
                    block j < n_layer/2 is added, times a learned w_j (init 0), to the input of block n_layer-1-j.
- window_pattern:   sliding-window attention per layer (Longformer, Beltagy et al. 2020, arXiv:2004.05150;
                    alternating windows as in Gemma 2 and nanochat): "LLLS" tiled over the layers, L = window_long
                    tokens, S = window_short; a query sees itself and the window - 1 tokens before it.
- layer_scale=eps:  LayerScale (CaiT, Touvron et al. 2021, arXiv:2103.17239): each residual branch's output is
                    multiplied by a learned per-channel vector, init eps; 0 = off.
- doc_mask_token:   document masking: a packed row splits into documents, each starting at this token id
                    (BOS / EOT); no query attends across a document boundary (as in Llama 3, arXiv:2407.21783).

Attention runs through F.scaled_dot_product_attention. Windows and documents add a boolean mask built
once per forward (per distinct window, not per layer; combined with the ALiBi bias); in a torch.compile'd
model (CUDA or CPU) they use flex_attention's block-sparse masks instead. Sequences longer than block_size are
allowed for rope, alibi and none (length extrapolation); learned positions raise an error instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # block-sparse attention masks (torch >= 2.5); without it windows and documents use SDPA masks
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:
    create_block_mask = flex_attention = None

POS_EMBS = ("learned", "rope", "alibi", "none")
MLPS = ("gelu", "swiglu", "relu2")
NORMS = ("layernorm", "rmsnorm")


@dataclass
class GPTConfig:
    """Architecture of a GPT. Defaults are GPT-2 small (124M) with the vocabulary padded to 50304."""
    block_size: int = 1024            # context length (tokens)
    vocab_size: int = 50257           # the tokenizer's real vocabulary; unset: data_dir's meta.json's
    pad_vocab_multiple: int = 64      # embedding/lm_head rows rounded up to this (1 = no padding)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None      # None = n_head (multi-head); fewer = grouped-query; 1 = multi-query
    n_embd: int = 768
    pos_emb: str = "learned"          # learned | rope | alibi | none
    rope_theta: float = 10000.0
    mlp: str = "gelu"                 # gelu | swiglu | relu2
    mlp_hidden: int | None = None     # None = 4*n_embd (swiglu: 2/3 of that, rounded up to a multiple of 64)
    norm: str = "layernorm"           # layernorm | rmsnorm
    norm_eps: float = 1e-5
    parallel_residual: bool = False   # GPT-J style x + attn(ln(x)) + mlp(ln(x))
    tie_embeddings: bool = True       # lm_head shares the token embedding
    bias: bool = True                 # biases in Linear layers and LayerNorms
    dropout: float = 0.0
    qk_norm: bool = False             # RMSNorm on queries and keys per head
    logit_softcap: float = 0.0        # > 0: logits = cap * tanh(logits / cap) (Gemma 2, modded-nanogpt); 0 = off
    zero_init_proj: bool = False      # attention and MLP c_proj start at zero: each block starts as the identity
    value_embeds: int = 0             # k > 0: k extra token tables mixed into the values of the first and last k layers
    x0_mix: bool = False              # before block i: x = a_i * x + b_i * x0, x0 = the embedding (init a_i=1, b_i=0)
    unet_skips: bool = False          # block j's output (first half) feeds block n_layer-1-j's input, weight init 0
    window_pattern: str = ""          # per-layer attention windows tiled over layers, e.g. "LLLS"; "" = full causal
    window_short: int = 256           # tokens an S layer's query sees (itself and the window_short - 1 before it)
    window_long: int | None = None    # tokens an L layer's query sees; None = no limit
    doc_mask_token: int | None = None  # documents start at this token id (BOS/EOT); no attention across them
    layer_scale: float = 0.0          # > 0: each residual branch times a learned per-channel vector, init this; 0 = off

    def __post_init__(self) -> None:
        for name, valid in (("pos_emb", POS_EMBS), ("mlp", MLPS), ("norm", NORMS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"GPTConfig.{name}={getattr(self, name)!r} is unknown; "
                                 f"choose one of {', '.join(valid)}")
        for name in ("block_size", "vocab_size", "pad_vocab_multiple", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name}={getattr(self, name)} must be a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             f"pick n_embd a multiple of n_head")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ValueError(f"GPTConfig.n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}; "
                             f"n_kv_head must divide n_head (n_kv_head=1 is multi-query, None = n_head)")
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig.pos_emb='rope' needs an even head size, got n_embd/n_head="
                             f"{self.head_dim}; change n_embd or n_head")
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise ValueError(f"GPTConfig.mlp_hidden={self.mlp_hidden} must be positive (or None for the default)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout={self.dropout} must be in [0, 1)")
        for name in ("logit_softcap", "layer_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"GPTConfig.{name}={getattr(self, name)} must be >= 0 (0 = off)")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ValueError("GPTConfig.rope_theta and GPTConfig.norm_eps must be positive")
        if not 0 <= 2 * self.value_embeds <= self.n_layer:
            raise ValueError(f"GPTConfig.value_embeds={self.value_embeds} needs 0 <= 2 * value_embeds <= n_layer="
                             f"{self.n_layer} (tables feed the first and the last value_embeds layers); lower it")
        if set(self.window_pattern) - {"L", "S"}:
            raise ValueError(f"GPTConfig.window_pattern={self.window_pattern!r} may hold only L (window_long) and "
                             f"S (window_short), e.g. 'LLLS'; '' = no windows")
        if self.window_short < 1 or (self.window_long is not None and self.window_long < 1):
            raise ValueError(f"GPTConfig.window_short={self.window_short} and window_long={self.window_long} must "
                             f"be positive token counts (window_long=None: no limit)")
        if self.doc_mask_token is not None and not 0 <= self.doc_mask_token < self.vocab_size:
            raise ValueError(f"GPTConfig.doc_mask_token={self.doc_mask_token} is not a token id below vocab_size="
                             f"{self.vocab_size}; use the BOS/EOT id, or None for no document masking")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden_dim(self) -> int:
        """MLP hidden width: mlp_hidden if given, else 4d (SwiGLU: 2/3 * 4d rounded up to 64)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return (8 * self.n_embd // 3 + 63) // 64 * 64
        return 4 * self.n_embd

    @property
    def layer_windows(self) -> list[int | None]:
        """Each layer's attention window in tokens (None: unlimited): window_pattern tiled over the layers."""
        if not self.window_pattern:
            return [None] * self.n_layer
        size = {"L": self.window_long, "S": self.window_short}
        return [size[self.window_pattern[i % len(self.window_pattern)]] for i in range(self.n_layer)]

    @property
    def value_embed_tables(self) -> list[int | None]:
        """Each layer's value-embedding table (None: none): table j feeds layers j and n_layer - k + j."""
        k, L = self.value_embeds, self.n_layer
        return [i if i < k else i - (L - k) if i >= L - k else None for i in range(L)]


# ----------------------------------------------------------------------------- building blocks

class RMSNormFunction(torch.autograd.Function):
    """x * r * w, r = 1 / sqrt(mean(x^2) + eps), its gradient written out (float32 on a CPU, where autograd through
    F.rms_norm runs twice the kernels): dx = r (g w - x_hat mean(g w x_hat)), dw = g x_hat summed to w's shape."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(x.square().mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x_hat := x * r, r, weight)
        return x_hat * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x_hat, r, weight = ctx.saved_tensors
        gw = grad * weight
        return (gw - x_hat * (gw * x_hat).mean(-1, keepdim=True)) * r, (grad * x_hat).sum_to_size(weight.shape), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim; weight: a gain per channel, or per head and channel."""
    if x.is_cpu and x.dtype == torch.float32:
        return RMSNormFunction.apply(x, weight, eps)
    if weight.dim() == 1:
        return F.rms_norm(x, (x.size(-1),), weight.to(x.dtype), eps)
    return F.rms_norm(x, (x.size(-1),), None, eps) * weight.to(x.dtype)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_parameter("bias", None)  # same attributes as nn.LayerNorm(bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class RotaryEmbedding(nn.Module):
    """Caches cos/sin of m * inv_freq for positions m (float32); grows on demand past block_size."""

    def __init__(self, head_dim: int, theta: float, length: int):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self._build(length, None)  # None: the default device (honours `with torch.device(...)`)

    def _build(self, length: int, device: torch.device | None) -> None:
        inv_freq = self.theta ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
                                  / self.head_dim)
        angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if start + length > self.cos.size(0):
            self._build(max(start + length, 2 * self.cos.size(0)), self.cos.device)
        rows = slice(start, start + length)
        return self.cos[rows, None].to(dtype), self.sin[rows, None].to(dtype)   # (T, 1, D/2): one row per head


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x (B, T, heads, D) by the angles in cos/sin (T, 1, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Head slopes from the ALiBi paper: geometric 2^(-8/n) ... ; non-powers of two interleave 2n."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]
    closest = 2 ** math.floor(math.log2(n_head))
    slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][:n_head - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBi(nn.Module):
    """Additive attention bias -slope_h * (i - j) for keys j <= i, -inf above the diagonal.

    The bias for length L is the top-left L x L corner of any longer one, so one tensor is cached
    (per device/dtype) and sliced; it grows (in steps of 256, so decoding rarely rebuilds it) when a
    longer sequence arrives.
    """

    def __init__(self, n_head: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_head), persistent=False)
        self._cache: torch.Tensor | None = None

    def forward(self, start: int, length: int, dtype: torch.dtype) -> torch.Tensor:
        end = start + length
        c = self._cache
        if c is None or c.size(-1) < end or c.dtype != dtype or c.device != self.slopes.device:
            n = max(-(-end // 256) * 256, c.size(-1) if c is not None else 0)  # grow in steps of 256
            pos = torch.arange(n, device=self.slopes.device)
            dist = (pos[None, :] - pos[:, None]).float()          # j - i, <= 0 on and below diagonal
            bias = self.slopes[:, None, None] * dist
            self._cache = c = bias.masked_fill(dist > 0, float("-inf")).to(dtype)
        return c[:, start:end, :end]


class Passthrough(nn.Module):
    """A toggle that is off: returns its first argument unchanged, so forward code is the same either way."""

    def forward(self, x, *_):
        return x


class ValueMix(nn.Module):
    """v = lambdas[0] * v + lambdas[1] * ve, ve from a value-embedding table; init (0.5, 0.5) (modded-nanogpt)."""

    def __init__(self):
        super().__init__()
        self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, v: torch.Tensor, ve: torch.Tensor) -> torch.Tensor:
        return (self.lambdas[0] * v + self.lambdas[1] * ve).to(v.dtype)  # v's dtype: bf16 under autocast


class CausalSelfAttention(nn.Module):
    """Multi-head / grouped-query / multi-query attention with a fused q,k,v projection."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim,
                                bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.norm_eps)
        self.qk_norm = config.qk_norm
        self.value_mix = ValueMix() if config.value_embed_tables[layer_idx] is not None else Passthrough()
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple | None, attend: SDPAMask | FlexMask,
                cache=None, ve: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        qk, v = self.c_attn(x).split([(H + Hkv) * hd, Hkv * hd], dim=-1)
        v = self.value_mix(v, ve).view(B, T, Hkv, hd).transpose(1, 2)  # (B, Hkv, T, hd), + value embedding
        qk = qk.view(B, T, H + Hkv, hd)          # q's heads then k's: normed and rotated in one pass each
        if self.qk_norm:
            qk = rms_norm(qk, self.qk_gains(), self.q_norm.eps)
        if rope is not None:
            qk = apply_rope(qk, *rope)
        q, k = qk.transpose(1, 2).to(v.dtype).split([H, Hkv], dim=1)   # (B, heads, T, hd); norms may upcast
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        y = attend(q, k, v, self.dropout if self.training else 0.0, self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def qk_gains(self) -> torch.Tensor:
        """(H + Hkv, hd): q_norm's gains on each of q's heads, then k_norm's on each of k's."""
        return torch.cat((self.q_norm.weight.expand(self.n_head, -1), self.k_norm.weight.expand(self.n_kv_head, -1)))


class ReLU2(torch.autograd.Function):
    """relu(x)^2, its gradient 2 relu(x) g written out: two kernels back where autograd runs three (a mask pass)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(r := torch.relu(x))
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * (2 * ctx.saved_tensors[0])


class MLP(nn.Module):
    """c_proj(act(c_fc(x))) with act = GELU (tanh approximation, GPT-2's) or squared ReLU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.relu2 = config.mlp == "relu2"
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        h = ReLU2.apply(h) if self.relu2 else F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class SwiGLU(nn.Module):
    """c_proj(silu(c_gate(x)) * c_fc(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.c_gate = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x)))


class LayerScale(nn.Module):
    """x * gamma, gamma a learned per-channel vector starting at `init` (CaiT's LayerScale)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


def make_scale(config: GPTConfig) -> nn.Module:
    return LayerScale(config.n_embd, config.layer_scale) if config.layer_scale else Passthrough()


class Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x)) (each branch LayerScaled when layer_scale > 0)."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)
        self.attn_scale, self.mlp_scale = make_scale(config), make_scale(config)

    def forward(self, x, rope, attend, cache=None, ve=None):
        x = x + self.attn_scale(self.attn(self.ln_1(x), rope, attend, cache, ve))
        return x + self.mlp_scale(self.mlp(self.ln_2(x)))


class ParallelBlock(nn.Module):
    """GPT-J style block: x + attn(ln_1(x)) + mlp(ln_1(x)), one shared norm."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)
        self.attn_scale, self.mlp_scale = make_scale(config), make_scale(config)

    def forward(self, x, rope, attend, cache=None, ve=None):
        h = self.ln_1(x)
        return x + self.attn_scale(self.attn(h, rope, attend, cache, ve)) + self.mlp_scale(self.mlp(h))


# ----------------------------------------------------------------------------- residual-stream toggles

class ValueEmbeddings(nn.Module):
    """value_embeds token tables (rows: padded vocabulary, width: the K/V width); forward gives each
    layer's table output, or None for layers without one (all of them when value_embeds=0)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        width = config.kv_heads * config.head_dim
        self.tables = nn.ModuleList(nn.Embedding(config.padded_vocab_size, width) for _ in range(config.value_embeds))
        self.layer_tables = config.value_embed_tables

    def forward(self, idx: torch.Tensor) -> list[torch.Tensor | None]:
        out = [table(idx) for table in self.tables]
        return [None if j is None else out[j] for j in self.layer_tables]


class X0Mix(nn.Module):
    """Before block i: x = resid_lambdas[i] * x + x0_lambdas[i] * x0, x0 the embedding output; init 1 and 0,
    so the model starts as the plain one (modded-nanogpt, nanochat)."""

    def __init__(self, n_layer: int):
        super().__init__()
        self.resid_lambdas = nn.Parameter(torch.ones(n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(n_layer))

    def forward(self, x: torch.Tensor, i: int, x0: torch.Tensor) -> torch.Tensor:
        return self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0


class UNetSkips(nn.Module):
    """The input of block n_layer-1-j gets + skip_weights[j] * (output of block j), for j < n_layer // 2 (the
    middle block of an odd stack gets none); weights init 0, so the model starts as the plain one."""

    def __init__(self, n_layer: int):
        super().__init__()
        self.n_layer = n_layer
        self.skip_weights = nn.Parameter(torch.zeros(n_layer // 2))

    def forward(self, x: torch.Tensor, i: int, outputs: list[torch.Tensor]) -> torch.Tensor:
        j = self.n_layer - 1 - i                                      # the mirrored block
        return x + self.skip_weights[j] * outputs[j] if j < self.skip_weights.numel() else x


# ----------------------------------------------------------------------------- attention masks

def allowed_keys(start: int, end: int, window: int | None, docs: torch.Tensor | None,
                 device: torch.device) -> torch.Tensor:
    """Whether query start+i may attend to key j < end: causal, inside its window of `window` tokens (itself
    and the window-1 before it), in its own document. (Tq, Tk), or (B, 1, Tq, Tk) with docs (B, end)."""
    q = torch.arange(start, end, device=device)[:, None]
    k = torch.arange(end, device=device)[None, :]
    allowed = (k <= q) & (q - k < (window or end))
    if docs is not None:
        allowed = allowed & (docs[:, start:, None] == docs[:, None, :])[:, None]
    return allowed


def flex_applies(device: torch.device) -> bool:
    """flex_attention for windows/documents: inside torch.compile only (eager, it is an unfused reference
    implementation, slower than SDPA with a mask); on CUDA, and on CPU, where inductor compiles it too."""
    return flex_attention is not None and device.type in ("cuda", "cpu") and torch.compiler.is_compiling()


class SDPAMask:
    """Attention through F.scaled_dot_product_attention under `mask`: None (causal), an additive float bias
    (ALiBi) or a boolean mask (True = attend). The masks below hand one to each layer; FlexMask is the other kind."""

    def __init__(self, mask: torch.Tensor | None):
        self.mask = mask

    def __call__(self, q, k, v, dropout_p: float, enable_gqa: bool) -> torch.Tensor:
        Tq, Tk = q.size(2), k.size(2)
        mask, causal = self.mask, False
        if mask is not None:
            mask = mask if mask.dtype == torch.bool else mask.to(q.dtype)  # no-op unless dtypes differ
        elif Tq == Tk:
            causal = True
        elif Tq > 1:                                                 # chunk of queries after a cached prefix
            mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal,
                                              enable_gqa=enable_gqa)


class FlexMask:
    """flex_attention with a block-sparse mask (fully masked blocks are skipped) and ALiBi as a score_mod."""

    def __init__(self, T: int, window: int | None, docs: torch.Tensor | None, slopes: torch.Tensor | None,
                 device: torch.device):
        w = window or T

        def mask_mod(b, h, q_idx, kv_idx):
            ok = (kv_idx <= q_idx) & (q_idx - kv_idx < w)
            return ok & (docs[b, q_idx] == docs[b, kv_idx]) if docs is not None else ok

        def alibi(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx)

        batch = docs.size(0) if docs is not None else None
        self.block_mask = create_block_mask(mask_mod, batch, None, T, T, device=device)
        self.score_mod = alibi if slopes is not None else None

    def __call__(self, q, k, v, dropout_p: float, enable_gqa: bool) -> torch.Tensor:  # (used without dropout)
        return flex_attention(q, k, v, score_mod=self.score_mod, block_mask=self.block_mask, enable_gqa=enable_gqa)


class CausalMasks:
    """The default: every layer attends causally (SDPA's is_causal, or the ALiBi bias); no mask is built."""

    def __init__(self, config: GPTConfig, alibi: ALiBi | None):
        self.n_layer = config.n_layer

    def __call__(self, idx, start, bias, cache=None, flex=False) -> list[SDPAMask]:
        return [SDPAMask(bias)] * self.n_layer


class WindowDocMasks:
    """Per-layer sliding windows and/or document masks: one mask per distinct window per forward (not per
    layer), boolean, or the ALiBi bias with -inf where not allowed; FlexMasks when `flex` (full forwards)."""

    def __init__(self, config: GPTConfig, alibi: ALiBi | None):
        self.windows, self.doc_token, self.alibi = config.layer_windows, config.doc_mask_token, alibi

    def __call__(self, idx, start, bias, cache=None, flex=False) -> list:
        docs = self._doc_ids(idx, cache)
        end, dev = start + idx.size(1), idx.device
        if flex:
            slopes = self.alibi.slopes if self.alibi is not None else None
            masks = {w: FlexMask(end, w, docs, slopes, dev) for w in set(self.windows)}
        else:
            allowed = {w: allowed_keys(start, end, w, docs, dev) for w in set(self.windows)}
            masks = {w: SDPAMask(a if bias is None else torch.where(a, bias, float("-inf")))
                     for w, a in allowed.items()}
        return [masks[w] for w in self.windows]

    def _doc_ids(self, idx: torch.Tensor, cache) -> torch.Tensor | None:
        """(B, end): tokens with equal ids are in one document; a document starts at doc_token."""
        if self.doc_token is None:
            return None
        ids = (idx == self.doc_token).cumsum(1)
        return ids if cache is None else cache.doc_ids(ids)


# ----------------------------------------------------------------------------- fused output layer + loss

class ChunkedLoss(NamedTuple):
    """LinearCrossEntropy's settings: the real vocabulary, rows per chunk, the matmul dtype, whether gradients are
    made, the logit softcap (0 = off) and label smoothing."""
    vocab_size: int
    chunk: int
    dtype: torch.dtype
    need_grad: bool
    softcap: float
    label_smoothing: float


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of x @ weight[:vocab_size].T against targets, computed a chunk of rows at a time.

    The full (N, vocab) float32 logits never exist: each chunk's logits go into one reused buffer, are
    turned into probabilities in place, and the gradients are made right there (softmax minus one-hot,
    over the number of counted rows), so backward is only a scaling. The gradient of x is one matmul per
    chunk; the weight's is one matmul per group of chunks (their logit gradients kept in compute_dtype,
    at most GROUP_ELEMENTS of them), since every weight-gradient matmul adds a full (vocab, C) update.
    Matmuls run in compute_dtype (bf16 under autocast); softmax and the loss in float32 (float64 for
    float64 inputs). Rows with target -1 are ignored; padded weight rows (>= vocab_size) get zero
    gradient. With no counted row the loss is 0 (F.cross_entropy would give nan). label_smoothing eps: the
    target is (1 - eps) one-hot + eps uniform over the real vocabulary, as F.cross_entropy's.
    """
    GROUP_ELEMENTS = 2 ** 26

    @staticmethod
    def forward(ctx, x, weight, targets, o: ChunkedLoss):
        N, V, eps, chunk, softcap = x.size(0), o.vocab_size, o.label_smoothing, o.chunk, o.softcap
        compute_dtype, need_grad = o.dtype, o.need_grad
        grad_x_needed = need_grad and ctx.needs_input_grad[0]
        grad_w_needed = need_grad and ctx.needs_input_grad[1]
        acc_dtype = torch.promote_types(x.dtype, torch.float32)
        w = weight[:V].to(compute_dtype)
        valid = targets >= 0
        n = valid.sum().clamp(min=1).to(acc_dtype)
        safe_targets = targets.clamp(min=0)[:, None]
        loss = torch.zeros((), dtype=acc_dtype, device=x.device)
        probs_buf = torch.empty(min(chunk, N), V, dtype=acc_dtype, device=x.device)
        group = max(1, LinearCrossEntropy.GROUP_ELEMENTS // (V * chunk)) * chunk   # rows per weight-grad matmul
        grad_x = torch.empty_like(x) if grad_x_needed else None
        grad_w = torch.empty(weight.shape, dtype=acc_dtype, device=x.device) if grad_w_needed else None
        dlogits_buf = None
        if grad_x_needed or grad_w_needed:
            dlogits_buf = torch.empty(min(group, N), V, dtype=compute_dtype, device=x.device)
        if grad_w_needed:
            grad_w[V:].zero_()
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            tc, vc = safe_targets[s:e], valid[s:e]
            probs = probs_buf[:e - s]
            probs.copy_(x[s:e].to(compute_dtype) @ w.t())            # logits
            if softcap:                                               # cap * tanh(logits / cap); its slope for backward
                probs.div_(softcap).tanh_()
                slope = 1 - probs.square() if dlogits_buf is not None else None
                probs.mul_(softcap)
            target_logit = probs.gather(1, tc).squeeze(1)
            if eps:                                                   # the uniform part's logit: the row mean
                target_logit = (1 - eps) * target_logit + eps * probs.mean(dim=1)
            row_max = probs.amax(dim=1, keepdim=True)
            probs.sub_(row_max).exp_()                                # unnormalised probabilities
            z = probs.sum(dim=1)
            loss += ((row_max.squeeze(1) + z.log() - target_logit) * vc).sum()
            if dlogits_buf is None:
                continue
            weight_row = vc.to(acc_dtype) / n                         # d loss / d row-loss (0 if ignored)
            probs.mul_((weight_row / z)[:, None])
            probs.scatter_add_(1, tc, -(1 - eps) * weight_row[:, None])  # (softmax - smoothed target) / n
            if eps:
                probs.sub_((eps / V * weight_row)[:, None])
            if softcap:
                probs.mul_(slope)                                     # through the cap, to the raw logits
            g0 = s // group * group                                   # first row of this group
            dlogits = dlogits_buf[s - g0:e - g0]
            dlogits.copy_(probs)
            if grad_x_needed:
                grad_x[s:e] = dlogits @ w
            if grad_w_needed and (e - g0 == group or e == N):         # group complete: one weight-grad matmul
                part = dlogits_buf[:e - g0].t() @ x[g0:e].to(compute_dtype)
                if g0 == 0:
                    grad_w[:V].copy_(part)
                else:
                    grad_w[:V].add_(part)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)                          # no-op for fp32 weights
        ctx.save_for_backward(grad_x, grad_w)
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        if grad_loss.device.type == "cpu" and grad_loss.item() == 1.0:  # the usual case: skip two passes
            return grad_x, grad_w, None, None
        gx = grad_x * grad_loss.to(grad_x.dtype) if grad_x is not None else None
        gw = grad_w * grad_loss.to(grad_w.dtype) if grad_w is not None else None
        return gx, gw, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                         chunk: int = 128, softcap: float = 0.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """F.cross_entropy(x @ weight[:vocab_size].T, targets, ignore_index=-1, label_smoothing=label_smoothing)
    without materialising the logits (softcap > 0: of softcap * tanh(logits / softcap)).

    x (..., C), weight (V_padded, C), targets (...). Under autocast the matmuls use the autocast dtype.
    """
    dev = x.device.type
    compute_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    with torch.autocast(dev, enabled=False):
        settings = ChunkedLoss(vocab_size, chunk, compute_dtype, need_grad, softcap, label_smoothing)
        return LinearCrossEntropy.apply(x.reshape(-1, x.size(-1)), weight, targets.reshape(-1), settings)


class SoftCap(nn.Module):
    """cap * tanh(x / cap): logits stay in (-cap, cap), smoothly."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cap * torch.tanh(x / self.cap)


# ----------------------------------------------------------------------------- the model

class GPT(nn.Module):
    """forward(idx) -> logits; forward(idx, targets) -> the mean loss, by the method `loss` picks once here:
    "chunked" (linear_cross_entropy: output layer and loss fused, a chunk of rows at a time; lean, the CPU
    default), "full" (full logits, then F.cross_entropy: the compiled GPU path), or a function with
    linear_cross_entropy's signature (liger-kernel's, see runtime.py)."""

    def __init__(self, config: GPTConfig, loss: str | Callable = "chunked"):
        super().__init__()
        self.config = config
        block = ParallelBlock if config.parallel_residual else Block
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.pos_emb == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.rotary = (RotaryEmbedding(config.head_dim, config.rope_theta, config.block_size)
                       if config.pos_emb == "rope" else None)
        self.alibi = ALiBi(config.n_head) if config.pos_emb == "alibi" else None
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.softcap = SoftCap(config.logit_softcap) if config.logit_softcap else nn.Identity()
        self.value_embeds = ValueEmbeddings(config)              # no tables (and no parameters) when off
        self.x0_mix = X0Mix(config.n_layer) if config.x0_mix else Passthrough()
        self.unet = UNetSkips(config.n_layer) if config.unet_skips else Passthrough()
        masked = config.window_pattern or config.doc_mask_token is not None
        self.attn_masks = (WindowDocMasks if masked else CausalMasks)(config, self.alibi)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        if isinstance(loss, str) and loss not in ("chunked", "full"):
            raise ValueError(f"GPT(loss={loss!r}) is unknown; choose one of chunked, full or pass a function")
        self.loss = self.full_logits_loss if loss == "full" else self.fused_loss
        self.fused_loss_fn = loss if callable(loss) else linear_cross_entropy
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight") and config.zero_init_proj:
                nn.init.zeros_(p)                    # every block starts as the identity (modded-nanogpt)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    # -- forward passes

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        T = idx.size(1)
        x = self.transformer.wte(idx)
        if self.config.pos_emb == "learned":
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size} "
                                 f"with learned positions; crop the input or use pos_emb='rope'/'alibi'")
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        return self.transformer.drop(x)

    def _positions(self, x: torch.Tensor, start: int, length: int) -> tuple[tuple | None, torch.Tensor | None]:
        """RoPE (cos, sin) and ALiBi bias for positions start..start+length, in the compute dtype."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        rope = self.rotary(start, length, dtype) if self.rotary is not None else None
        bias = self.alibi(start, length, dtype) if self.alibi is not None else None
        return rope, bias

    def _blocks(self, x: torch.Tensor, idx: torch.Tensor, rope: tuple | None, masks: list,
                cache=None) -> torch.Tensor:
        """The blocks in turn. U-net skips and x0 mixing are Passthrough when off, value embeddings None."""
        x0, outputs = x, []
        for i, (block, mask, ve) in enumerate(zip(self.transformer.h, masks, self.value_embeds(idx))):
            x = self.unet(x, i, outputs)                         # + w_j * output of the mirrored block j
            x = self.x0_mix(x, i, x0)                            # a_i * x + b_i * x0
            x = block(x, rope, mask, cache, ve)
            outputs.append(x)
        return x

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> final hidden states (B, T, n_embd): everything but the output layer. Scoring calls
        this and output_logits on just the positions it needs; logits for every position are (B, T, vocab)."""
        x = self._embed(idx, 0)
        rope, bias = self._positions(x, 0, idx.size(1))
        flex = flex_applies(x.device) and not (self.training and self.config.dropout)  # flex has no dropout
        x = self._blocks(x, idx, rope, self.attn_masks(idx, 0, bias, flex=flex))
        return self.transformer.ln_f(x)

    def output_logits(self, x: torch.Tensor, padded: bool = False) -> torch.Tensor:
        """Hidden states (..., n_embd) -> logits over the real vocabulary (..., vocab_size). padded=True keeps
        the padded width with the padded ids at -inf: contiguous, so a softmax over many rows runs faster."""
        logits = self.softcap(self.lm_head(x))               # the padded (aligned) matmul is the fast one
        if padded:
            if logits._base is not None:                      # a view out of an autograd Function (a float8 head)
                logits = logits.clone()                       # cannot be written in place
            logits[..., self.config.vocab_size:] = float("-inf")  # padded ids get zero probability
            return logits
        return logits[..., :self.config.vocab_size]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, vocab_size); given targets (B, T; -1 = ignored), the mean cross-entropy
        over the real ids instead. label_smoothing (training only): targets (1 - eps) one-hot + eps uniform."""
        x = self.hidden_states(idx)
        if targets is None:
            return self.output_logits(x)
        return self.loss(x, targets, label_smoothing)

    def fused_loss(self, x: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The output layer and the loss in one (linear_cross_entropy, or liger's): the logits never exist."""
        return self.fused_loss_fn(x, self.lm_head.weight, targets, self.config.vocab_size,
                                  softcap=self.config.logit_softcap, label_smoothing=label_smoothing)

    def full_logits_loss(self, x: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        logits = self.output_logits(x, padded=True)          # CE over the contiguous padded width: cheaper
        scored = logits[..., :self.config.vocab_size] if label_smoothing else logits  # (smoothing: not the padding)
        return F.cross_entropy(scored.reshape(-1, scored.size(-1)), targets.reshape(-1), ignore_index=-1,
                               label_smoothing=label_smoothing)

    def forward_cached(self, idx: torch.Tensor, cache) -> torch.Tensor:
        """Feed idx (B, T) after the cache.pos tokens already cached (a sample.KVCache: generation's); return the
        next-token logits (B, vocab)."""
        start = cache.pos
        x = self._embed(idx, start)
        rope, bias = self._positions(x, start, idx.size(1))
        x = self._blocks(x, idx, rope, self.attn_masks(idx, start, bias, cache), cache)
        cache.pos += idx.size(1)
        return self.output_logits(self.transformer.ln_f(x[:, -1]))

    # -- accounting

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (tied weights once). non_embedding drops lookup-only tables: wpe, value embeddings,
        and wte when untied (a tied wte is the lm_head matrix and stays counted, as in nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for p in self.value_embeds.parameters())
            if self.config.pos_emb == "learned":
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n
