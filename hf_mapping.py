"""Our GPT's weights <-> a transformers model's: the weight names of each native family, one table read both ways.

`rules_for(family, config)` lists every tensor of the transformers model and where it comes from in our state dict
(renamed, split from fused q,k,v, transposed for GPT-2's Conv1D, real vocabulary rows only). export_hf.py writes
with `to_hf_state_dict`; load.py reads exports and plain GPT-2 / Llama directories back with `from_hf_state_dict`.
The remote-code family (REMOTE_FAMILY) needs no table: it stores our own names under "gpt.".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model import GPT, GPTConfig

REMOTE_FAMILY = "nanogpt"


@dataclass
class Rule:
    """One of our tensors <-> one or more HF tensors.

    ours=None: the HF tensor has no counterpart (a bias we lack) and is exported as zeros of `shape`.
    split: sizes along dim 0 that cut ours into the hf tensors (fused q,k,v).
    transpose: HF stores the transpose (GPT-2's Conv1D). vocab: rows beyond vocab_size are dropped.
    """
    ours: str | None
    hf: tuple[str, ...]
    split: tuple[int, ...] | None = None
    transpose: bool = False
    vocab: bool = False
    shape: tuple[int, ...] | None = None


def _norm_rules(ours: str, hf: str, c: GPTConfig, hf_has_bias: bool) -> list[Rule]:
    rules = [Rule(f"{ours}.weight", (f"{hf}.weight",))]
    if c.norm == "layernorm" and c.bias:
        rules.append(Rule(f"{ours}.bias", (f"{hf}.bias",)))
    elif hf_has_bias:
        rules.append(Rule(None, (f"{hf}.bias",), shape=(c.n_embd,)))
    return rules


def _linear_rules(ours: str, hf: tuple[str, ...], c: GPTConfig, out: int, hf_has_bias: bool,
                  split: tuple[int, ...] | None = None, transpose: bool = False) -> list[Rule]:
    rules = [Rule(f"{ours}.weight", tuple(f"{h}.weight" for h in hf), split, transpose)]
    if c.bias:
        rules.append(Rule(f"{ours}.bias", tuple(f"{h}.bias" for h in hf), split))
    elif hf_has_bias:
        sizes = split or (out,)
        rules += [Rule(None, (f"{h}.bias",), shape=(n,)) for h, n in zip(hf, sizes)]
    return rules


def rules_for(family: str, c: GPTConfig) -> list[Rule]:
    """Every tensor of the HF model of `family`, and where it comes from in our state dict."""
    qkv = (c.n_head * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim)
    H, D = c.hidden_dim, c.n_embd
    if family == "gpt2":
        rules = [Rule("transformer.wte.weight", ("transformer.wte.weight",), vocab=True),
                 Rule("transformer.wpe.weight", ("transformer.wpe.weight",))]
        for i in range(c.n_layer):
            p = f"transformer.h.{i}"
            rules += _norm_rules(f"{p}.ln_1", f"{p}.ln_1", c, True)
            rules += _linear_rules(f"{p}.attn.c_attn", (f"{p}.attn.c_attn",), c, sum(qkv), True, transpose=True)
            rules += _linear_rules(f"{p}.attn.c_proj", (f"{p}.attn.c_proj",), c, D, True, transpose=True)
            rules += _norm_rules(f"{p}.ln_2", f"{p}.ln_2", c, True)
            rules += _linear_rules(f"{p}.mlp.c_fc", (f"{p}.mlp.c_fc",), c, H, True, transpose=True)
            rules += _linear_rules(f"{p}.mlp.c_proj", (f"{p}.mlp.c_proj",), c, D, True, transpose=True)
        rules += _norm_rules("transformer.ln_f", "transformer.ln_f", c, True)
        if not c.tie_embeddings:
            rules.append(Rule("lm_head.weight", ("lm_head.weight",), vocab=True))
        return rules

    # the Llama-like families share the "model.layers.{i}" naming
    always_bias = family == "phi"
    norm_bias = family in ("starcoder2", "phi")
    rules = [Rule("transformer.wte.weight", ("model.embed_tokens.weight",), vocab=True)]
    for i in range(c.n_layer):
        o, h = f"transformer.h.{i}", f"model.layers.{i}"
        rules += _norm_rules(f"{o}.ln_1", f"{h}.input_layernorm", c, norm_bias)
        attn = tuple(f"{h}.self_attn.{n}_proj" for n in "qkv")
        rules += _linear_rules(f"{o}.attn.c_attn", attn, c, sum(qkv), always_bias, split=qkv)
        out_name = "dense" if family == "phi" else "o_proj"
        rules += _linear_rules(f"{o}.attn.c_proj", (f"{h}.self_attn.{out_name}",), c, D, always_bias)
        if family == "qwen3":
            rules += [Rule(f"{o}.attn.q_norm.weight", (f"{h}.self_attn.q_norm.weight",)),
                      Rule(f"{o}.attn.k_norm.weight", (f"{h}.self_attn.k_norm.weight",))]
        if family != "phi":
            rules += _norm_rules(f"{o}.ln_2", f"{h}.post_attention_layernorm", c, norm_bias)
        if family in ("llama", "qwen3"):
            rules += _linear_rules(f"{o}.mlp.c_gate", (f"{h}.mlp.gate_proj",), c, H, False)
            rules += _linear_rules(f"{o}.mlp.c_fc", (f"{h}.mlp.up_proj",), c, H, False)
            rules += _linear_rules(f"{o}.mlp.c_proj", (f"{h}.mlp.down_proj",), c, D, False)
        else:
            fc, proj = ("fc1", "fc2") if family == "phi" else ("c_fc", "c_proj")
            rules += _linear_rules(f"{o}.mlp.c_fc", (f"{h}.mlp.{fc}",), c, H, always_bias)
            rules += _linear_rules(f"{o}.mlp.c_proj", (f"{h}.mlp.{proj}",), c, D, always_bias)
    final = "model.final_layernorm" if family == "phi" else "model.norm"
    rules += _norm_rules("transformer.ln_f", final, c, norm_bias)
    if not c.tie_embeddings:
        rules.append(Rule("lm_head.weight", ("lm_head.weight",), vocab=True))
    if family == "phi":
        rules.append(Rule(None, ("lm_head.bias",), shape=(c.vocab_size,)))
    return rules


def to_hf_state_dict(model: GPT, family: str) -> dict[str, torch.Tensor]:
    """Our state dict renamed/split/transposed into the HF family's (real vocab rows only)."""
    c, sd = model.config, model.state_dict()
    dtype = model.transformer.wte.weight.dtype
    out = {}
    for r in rules_for(family, c):
        if r.ours is None:
            out[r.hf[0]] = torch.zeros(r.shape, dtype=dtype)
            continue
        t = sd[r.ours].detach().cpu()
        if r.vocab:
            t = t[:c.vocab_size]
        if r.transpose:
            t = t.t()
        parts = t.split(list(r.split), dim=0) if r.split else (t,)
        for name, part in zip(r.hf, parts):
            out[name] = part.contiguous().clone()
    return out


def from_hf_state_dict(hf: dict[str, torch.Tensor], family: str, c: GPTConfig) -> dict[str, torch.Tensor]:
    """Inverse of to_hf_state_dict: our state dict (padded vocab rows are zeros)."""
    out = {}
    for r in rules_for(family, c):
        missing = [k for k in r.hf if k not in hf]
        if missing:
            raise KeyError(f"HF checkpoint lacks {missing[0]!r} needed for family {family!r}")
        if r.ours is None:
            if hf[r.hf[0]].abs().max() > 0:
                raise ValueError(f"{r.hf[0]} is nonzero but GPTConfig(bias={c.bias}, norm={c.norm!r}) has no "
                                 f"such parameter; this model cannot be represented exactly")
            continue
        t = torch.cat([hf[k] for k in r.hf], dim=0) if r.split else hf[r.hf[0]]
        if r.transpose:
            t = t.t()
        if r.vocab:
            t = torch.cat([t, t.new_zeros(c.padded_vocab_size - t.size(0), *t.shape[1:])])
        out[r.ours] = t.contiguous()
    if c.tie_embeddings:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out
