"""One loader: a GPT and its tokenizer from anything a run or an export leaves, or from the hub.

    model, tokenizer = load_model("out/run")           # a training run directory: its newest ckpt_*.pt
    model, tokenizer = load_model("out/run/best.pt")   # a checkpoint file
    model, tokenizer = load_model("hf/run")            # an export_hf.py directory, or a plain GPT-2 / Llama one
    model, tokenizer = load_model("gpt2")              # OpenAI's GPT-2 weights by hub name (needs transformers)

The model comes back in eval mode; the tokenizer is the one the source records (a checkpoint's spec, an export's
tokenizer.model, vocab.json or character tokenizer.json), or None. sample.py, evaluate.py, hellaswag.py,
perplexity.py, export_hf.py and train.py's init_from all load through here, and `add_model_args` gives their
command lines the same options.
Checkpoints load with weights_only=True unless trust=True (--trust-checkpoint); every model config read from a
file is checked (checkpoint.model_config) before anything is allocated.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Literal

import torch

import checkpoint
import tokenization
from hf_mapping import REMOTE_FAMILY, from_hf_state_dict
from model import GPT, GPTConfig

TokenizerMode = Literal["recorded", "required", "skip"]
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # gpt2, openai-community/gpt2


def load_model(source: str | Path, device: str = "cpu", trust: bool = False, *, fill_defaults: bool = True,
               tiktoken_file: str | None = None, tokenizer: TokenizerMode = "recorded",
               pad_vocab_multiple: int | None = None) -> tuple[GPT, tokenization.Tokenizer | None]:
    """(model in eval mode on `device`, tokenizer) from a checkpoint file, a training run directory (its newest
    ckpt_*.pt), a transformers directory (export_hf.py's, or a plain GPT-2 / Llama one) or a hub name.

    trust: full unpickling for checkpoints that need it (it can run code). fill_defaults: config fields an old
    checkpoint lacks take GPTConfig's defaults; False makes that an error (export_hf.py asks first).
    tokenizer: "recorded" gives the source's own or None; "required" falls back to GPT-2's where the source
    records none and the model fits it, else raises RuntimeError; "skip" reads none.
    pad_vocab_multiple: the vocabulary padding of a model read from transformers weights (None: as recorded);
    a checkpoint keeps its own.
    """
    if tokenizer not in ("recorded", "required", "skip"):
        raise ValueError(f"tokenizer={tokenizer!r}: use 'recorded', 'required' or 'skip'")
    kind = _kind(source)
    if kind == "checkpoint":
        model, spec = _from_checkpoint(source, trust, fill_defaults)
    elif kind == "transformers":
        model, spec = _from_transformers_dir(Path(source), pad_vocab_multiple), None
    else:
        model, spec = _from_hub(str(source), pad_vocab_multiple), None
    tok = None if tokenizer == "skip" else _recorded_tokenizer(kind, source, spec, tiktoken_file)
    if tok is None and tokenizer == "required":
        tok = _gpt2_instead(kind, source, model.config, tiktoken_file)
    if tok is not None and tok.vocab_size > model.config.vocab_size:
        raise RuntimeError(f"tokenizer vocab {tok.vocab_size} > model vocab {model.config.vocab_size}")
    return model.to(device).eval(), tok


def _kind(source: str | Path) -> str:
    """'transformers' for a directory with a config.json and no training run in it, 'hub' for a name that is no
    path here, else 'checkpoint' (a file or a run directory; what is missing is said when it is read)."""
    path = Path(source)
    if path.is_dir():
        return "transformers" if (path / "config.json").is_file() and not checkpoint.run_files(path) else "checkpoint"
    if path.exists() or HUB_NAME.fullmatch(str(source)) is None or str(source).endswith(".pt"):
        return "checkpoint"
    return "hub" if path.parent == Path(".") or not path.parent.exists() else "checkpoint"  # out/run: a path


def _build(config: GPTConfig, weights: dict[str, torch.Tensor]) -> GPT:
    model = GPT(config)
    model.load_state_dict(weights)
    return model.eval()


# ----------------------------------------------------------------------------- checkpoints

def _from_checkpoint(source: str | Path, trust: bool, fill_defaults: bool) -> tuple[GPT, dict | None]:
    """(model, tokenizer spec or None) of a checkpoint file or run directory, read once."""
    if not Path(source).exists():
        raise FileNotFoundError(f"{source} does not exist; pass a checkpoint file, a training out_dir, an "
                                f"export_hf.py directory or a hub name (gpt2, gpt2-medium, ...)")
    path = checkpoint.resolve_checkpoint(source)  # a sharded run: the consolidate command
    ckpt = checkpoint.load_checkpoint(path, trust=trust)
    try:
        config, weights, spec = checkpoint.model_parts(ckpt, fill_defaults)
        return _build(config, weights), spec
    except Exception as e:  # a bad config, wrong keys or shapes: one clear message naming the file
        raise checkpoint.CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


# ----------------------------------------------------------------------------- transformers directories, the hub

def _from_transformers_dir(path: Path, pad_vocab_multiple: int | None) -> GPT:
    """A directory written by export_hf.py (any family), or a plain GPT-2 / Llama transformers directory."""
    config_file = path / "config.json"
    hc = json.loads(config_file.read_text())
    if not isinstance(hc, dict):
        raise ValueError(f"{config_file} is not a transformers config (a JSON object)")
    config = _config_of(hc, pad_vocab_multiple, source=str(config_file))  # checked before the weights are read
    return _build(config, _weights_of(hc, _safetensors(path), config))


def _from_hub(name: str, pad_vocab_multiple: int | None) -> GPT:
    """OpenAI's GPT-2 weights (gpt2, gpt2-medium, ...), or a Llama, by hub name; downloads on first use."""
    from transformers import AutoModelForCausalLM  # optional dependency
    try:
        hf = AutoModelForCausalLM.from_pretrained(name)
    except OSError as e:
        raise FileNotFoundError(f"{name} is no file or directory here, nor a model on the Hugging Face hub "
                                f"({checkpoint.sentences(str(e))})") from None
    hc = hf.config.to_dict()
    config = _config_of(hc, pad_vocab_multiple, source=name)
    return _build(config, _weights_of(hc, hf.state_dict(), config))


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors (or its shards)."""
    from safetensors.torch import load_file
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors in {path}; is it a transformers export?")
    sd = {}
    for f in files:
        sd.update(load_file(str(path / f)))
    return sd


def _config_of(hc: dict, pad_vocab_multiple: int | None, source: str) -> GPTConfig:
    """GPTConfig of a transformers config: our export's nanogpt_config (older exports lack newer toggles: their
    defaults), else a plain GPT-2 or Llama config translated; checked like a checkpoint's."""
    if "nanogpt_config" in hc:
        c = checkpoint.model_config(hc["nanogpt_config"], fill_defaults=True, source=f"{source} nanogpt_config")
    else:
        c = _foreign_config(hc, source)
    return c if pad_vocab_multiple is None else dataclasses.replace(c, pad_vocab_multiple=pad_vocab_multiple)


def _foreign_config(hc: dict, source: str) -> GPTConfig:
    """GPTConfig for a foreign (not exported by us) GPT-2 or Llama checkpoint, checked like a checkpoint's."""
    mt = hc.get("model_type")
    if mt == "gpt2":
        act = hc.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "relu2"):
            raise ValueError(f"GPT-2 activation {act!r} has no GPTConfig equivalent")
        d = dict(block_size=hc.get("n_positions"), vocab_size=hc.get("vocab_size"), n_layer=hc.get("n_layer"),
                 n_head=hc.get("n_head"), n_embd=hc.get("n_embd"), mlp_hidden=hc.get("n_inner"),
                 mlp="relu2" if act == "relu2" else "gelu", norm_eps=hc.get("layer_norm_epsilon", 1e-5),
                 tie_embeddings=hc.get("tie_word_embeddings", True), bias=True)
        return checkpoint.model_config(d, fill_defaults=True, source=source)
    if mt == "llama":
        rope = hc.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default" or hc.get("rope_scaling"):
            raise ValueError("Llama rope scaling has no GPTConfig equivalent")
        n_head, width = hc.get("num_attention_heads"), hc.get("hidden_size")
        sizes_ok = isinstance(n_head, int) and isinstance(width, int) and n_head > 0  # else model_config says so
        if sizes_ok and hc.get("head_dim") not in (None, width // n_head):
            raise ValueError("Llama head_dim != hidden_size / num_attention_heads has no GPTConfig equivalent")
        if hc.get("attention_bias", False) != hc.get("mlp_bias", False):
            raise ValueError("Llama with attention_bias != mlp_bias has no GPTConfig equivalent")
        d = dict(block_size=hc.get("max_position_embeddings"), vocab_size=hc.get("vocab_size"),
                 n_layer=hc.get("num_hidden_layers"), n_head=n_head, n_kv_head=hc.get("num_key_value_heads") or n_head,
                 n_embd=width, pos_emb="rope", rope_theta=rope.get("rope_theta", hc.get("rope_theta", 10000.0)),
                 mlp="swiglu", mlp_hidden=hc.get("intermediate_size"), norm="rmsnorm", norm_eps=hc.get("rms_norm_eps"),
                 tie_embeddings=hc.get("tie_word_embeddings", False), bias=hc.get("attention_bias", False))
        return checkpoint.model_config(d, fill_defaults=True, source=source)
    raise ValueError(f"cannot import model_type {mt!r} without the 'nanogpt_config' that export_hf.py writes; "
                     f"supported foreign types: gpt2, llama")


def _weights_of(hc: dict, hf: dict[str, torch.Tensor], c: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict from a transformers one: the remote-code family stores our names under 'gpt.', the native
    families (model_type) go through hf_mapping's rules."""
    hf = {k: v for k, v in hf.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # old GPT-2 buffers
    family = hc.get("model_type")
    if family == REMOTE_FAMILY:
        sd = {k.removeprefix("gpt."): v for k, v in hf.items()}
        if c.tie_embeddings:
            sd["lm_head.weight"] = sd["transformer.wte.weight"]
        return sd
    if c.tie_embeddings and "lm_head.weight" in hf and family != "gpt2":
        hf.pop("lm_head.weight")
    return from_hf_state_dict(hf, family, c)


# ----------------------------------------------------------------------------- tokenizers

def _recorded_tokenizer(kind: str, source: str | Path, spec: dict | None,
                        tiktoken_file: str | None) -> tokenization.Tokenizer | None:
    """The tokenizer the source records: a checkpoint's spec, a transformers directory's tokenizer.model or
    vocab.json; None for a hub name or a source without one."""
    if kind == "checkpoint":
        return tokenization.tokenizer_from_spec(spec, tiktoken_file) if spec else None
    return tokenization.tokenizer_from_hf_dir(source) if kind == "transformers" else None


def _gpt2_instead(kind: str, source: str | Path, config: GPTConfig, tiktoken_file: str | None) -> tokenization.Tokenizer:
    """GPT-2's tokenizer where a source records none: hub names (OpenAI's GPT-2), transformers directories of
    weights only, and checkpoints written before tokenizer specs were, if their vocab_size is GPT-2's."""
    if kind == "checkpoint" and config.vocab_size != tokenization.GPT2_VOCAB:
        raise RuntimeError(f"checkpoint {source} has no tokenizer spec and vocab_size {config.vocab_size} "
                           f"is not GPT-2's")
    if kind != "hub":
        print(f"note: {source} has no tokenizer (spec or files); using the GPT-2 tokenizer", file=sys.stderr)
    return tokenization.gpt2_tokenizer(tiktoken_file)


# ----------------------------------------------------------------------------- command line

def add_model_args(p: argparse.ArgumentParser) -> None:
    """Where the model comes from (args.source) and how it runs; shared by sample.py, evaluate.py, hellaswag.py."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", dest="source", help="checkpoint file, run directory (newest ckpt_*.pt), export_hf.py "
                                                   "directory or hub name")
    src.add_argument("--init-from", dest="source", help="the same as --ckpt, under its older name for export_hf.py "
                                                        "directories and hub names (gpt2, gpt2-medium, ...)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda, else mps, else cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="compute dtype (default: bfloat16 on CUDA when supported, for sample.py also on CPUs "
                        "with native bf16 (AVX512_BF16/AMX); else float32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tiktoken-file", default=None,
                   help="local GPT-2 ranks file (default: env TIKTOKEN_GPT2_FILE, else tiktoken's download)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a checkpoint that needs full unpickling (older versions; can run code: only files "
                        "you trust). Without it checkpoints load with weights_only=True")
