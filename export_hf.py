"""Export a checkpoint to a Hugging Face transformers directory (load.py reads one back).

    python export_hf.py --ckpt out/run/best.pt --out hf/run [--overwrite]

The directory loads with `AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`
(add `trust_remote_code=True` to both for the "nanogpt" family, and to AutoTokenizer for sentencepiece unigram
tokenizers: without it transformers stops at an interactive [y/N] prompt; a char tokenizer is a plain
tokenizer.json). The GPTConfig toggles pick the class:

    toggles                                                           -> transformers class
    learned pos, gelu|relu2, layernorm, sequential, MHA, no qk_norm   -> GPT2LMHeadModel
    rope, rmsnorm, swiglu, sequential, no qk_norm (GQA/MQA, bias ok)  -> LlamaForCausalLM
    rope, rmsnorm, swiglu, sequential, qk_norm, no bias               -> Qwen3ForCausalLM
    rope, layernorm, gelu|relu2, sequential (GQA/MQA ok)              -> Starcoder2ForCausalLM
    rope, layernorm, gelu|relu2, parallel residual (one shared norm)  -> PhiForCausalLM
    anything else (alibi, nope, learned+swiglu, qk_norm elsewhere...) -> NanoGPTForCausalLM (remote code)
    logit_softcap > 0, value_embeds, x0_mix, unet_skips, window_pattern,
    doc_mask_token (whatever the block)                               -> NanoGPTForCausalLM (remote code)

Falcon's ALiBi is not used for ALiBi models: FalconModel adds alibi / sqrt(head_dim) (ours and the paper's
bias is unscaled) and rounds slope * position to bfloat16, so its logits differ from ours. ALiBi models
export as remote code, which runs a copy of model.py and so matches exactly.

Padded vocabulary: only the real `vocab_size` rows of wte/lm_head are exported (HF vocab_size = the
tokenizer's), so the padded rows can never be predicted; load.load_model pads them back with zeros.
Absent biases (bias=False exported to a class that always has them) are written as zeros.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import fnmatch
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import checkpoint
import tokenization
from hf_mapping import REMOTE_FAMILY, to_hf_state_dict
from load import load_model
from model import GPT, GPTConfig

PROBE_TEXT = ("Hello world! The quick brown fox, 1234567890.\n\n  Two  spaces\tand a tab; "
              "unicode: caf\u00e9, na\u00efve, \u00fcber, \u2603.\nFirst Citizen:\nBefore we proceed any further.")


# ----------------------------------------------------------------------------- family selection

# The export map. The GPTConfig fields that family_of() and rules_for() map onto native transformers classes; any
# other field away from its default is a toggle only the remote code computes (it runs model.py itself), so a new
# toggle exports correctly with no change here. Gemma 2 caps logits and Mistral/Qwen window attention, but they
# differ from our blocks everywhere else.
NATIVE_FIELDS = {"block_size", "vocab_size", "pad_vocab_multiple", "n_layer", "n_head", "n_kv_head", "n_embd",
                 "pos_emb", "rope_theta", "mlp", "mlp_hidden", "norm", "norm_eps", "parallel_residual",
                 "tie_embeddings", "bias", "dropout", "qk_norm", "zero_init_proj", "window_short", "window_long"}
TOGGLE_NAMES = {"logit_softcap": "logit soft-capping", "value_embeds": "value embeddings", "x0_mix": "x0 mixing",
                "unet_skips": "U-net skips", "window_pattern": "per-layer attention windows",
                "doc_mask_token": "document masking"}  # how why_remote() names them (the field name otherwise)


def remote_only_toggles(c: GPTConfig) -> list[str]:
    """The toggles set in c that no native class computes with our blocks, whatever the rest."""
    default = GPTConfig()
    on = [f.name for f in dataclasses.fields(c) if f.name not in NATIVE_FIELDS
          and getattr(c, f.name) != getattr(default, f.name)]
    return [f"{TOGGLE_NAMES.get(name, name)} ({name}={getattr(c, name)!r})" for name in on]


def family_of(c: GPTConfig) -> str:
    """The transformers architecture that computes exactly what GPT(c) computes, or REMOTE_FAMILY."""
    seq, mha = not c.parallel_residual, c.kv_heads == c.n_head
    plain_mlp = c.mlp in ("gelu", "relu2")
    if remote_only_toggles(c):
        return REMOTE_FAMILY
    if c.pos_emb == "learned" and plain_mlp and c.norm == "layernorm" and seq and mha and not c.qk_norm:
        return "gpt2"
    if c.pos_emb == "rope" and c.norm == "rmsnorm" and c.mlp == "swiglu" and seq:
        if not c.qk_norm:
            return "llama"
        if not c.bias:
            return "qwen3"
    if c.pos_emb == "rope" and c.norm == "layernorm" and plain_mlp and not c.qk_norm:
        return "starcoder2" if seq else "phi"
    return REMOTE_FAMILY


def why_remote(c: GPTConfig) -> str:
    """One line on why no native class matches (for the CLI's report)."""
    if remote_only_toggles(c):
        return f"{', '.join(remote_only_toggles(c))} with this block has no native class"
    if c.pos_emb == "alibi":
        return ("ALiBi: Falcon scales the bias by 1/sqrt(head_dim) and rounds it to bfloat16; "
                "no native class adds the paper's unscaled bias with this block")
    if c.pos_emb == "none":
        return "no positional encoding (NoPE) has no native transformers class"
    return (f"no native class has pos_emb={c.pos_emb}, mlp={c.mlp}, norm={c.norm}, "
            f"parallel_residual={c.parallel_residual}, qk_norm={c.qk_norm}, n_kv_head={c.kv_heads}/{c.n_head}")


HF_CLASS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "starcoder2": "Starcoder2ForCausalLM", "phi": "PhiForCausalLM",
            REMOTE_FAMILY: "NanoGPTForCausalLM"}


# ----------------------------------------------------------------------------- HF configs

def hf_config_for(family: str, c: GPTConfig, bos_id: int | None, eos_id: int | None):
    """The transformers config object of `family` for GPTConfig c (dropout 0: exports are for inference)."""
    import transformers
    act = {"gelu": "gelu_pytorch_tanh", "relu2": "relu2"}.get(c.mlp)  # our GELU is the tanh approximation
    common = dict(vocab_size=c.vocab_size, bos_token_id=bos_id, eos_token_id=eos_id,
                  tie_word_embeddings=c.tie_embeddings, nanogpt_config=dataclasses.asdict(c))
    llama_like = dict(hidden_size=c.n_embd, intermediate_size=c.hidden_dim, num_hidden_layers=c.n_layer,
                      num_attention_heads=c.n_head, num_key_value_heads=c.kv_heads,
                      max_position_embeddings=c.block_size, rope_theta=c.rope_theta, **common)
    if family == "gpt2":
        return transformers.GPT2Config(
            n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_inner=c.hidden_dim,
            activation_function="gelu_new" if c.mlp == "gelu" else act, layer_norm_epsilon=c.norm_eps,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    if family == "llama":
        return transformers.LlamaConfig(head_dim=c.head_dim, hidden_act="silu", rms_norm_eps=c.norm_eps,
                                        attention_bias=c.bias, mlp_bias=c.bias, attention_dropout=0.0,
                                        **llama_like)
    if family == "qwen3":
        return transformers.Qwen3Config(head_dim=c.head_dim, hidden_act="silu", rms_norm_eps=c.norm_eps,
                                        attention_bias=False, use_sliding_window=False, sliding_window=None,
                                        attention_dropout=0.0, **llama_like)
    if family == "starcoder2":
        return transformers.Starcoder2Config(hidden_act=act, norm_epsilon=c.norm_eps, use_bias=c.bias,
                                             sliding_window=None, residual_dropout=0.0, embedding_dropout=0.0,
                                             attention_dropout=0.0, **llama_like)
    if family == "phi":
        return transformers.PhiConfig(hidden_act=act, layer_norm_eps=c.norm_eps, partial_rotary_factor=1.0,
                                      qk_layernorm=False, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attention_dropout=0.0, **llama_like)
    raise ValueError(f"no native transformers config for family {family!r}")


# ----------------------------------------------------------------------------- remote code

REPO = Path(__file__).resolve().parent
REMOTE_CODE = REPO / "hf_remote_code"
# what NanoGPTForCausalLM runs, copied unchanged; the modeling file imports GPT from the copy of model.py beside it
REMOTE_MODEL_FILES = (REMOTE_CODE / "configuration_nanogpt.py", REMOTE_CODE / "modeling_nanogpt.py", REPO / "model.py")
REMOTE_TOKENIZER_FILE = REMOTE_CODE / "tokenization_nanogpt.py"


def save_remote(model: GPT, out: Path, bos_id: int | None, eos_id: int | None, dtype: torch.dtype) -> None:
    """config.json with auto_map, the remote-code files, model.safetensors (our names under 'gpt.')."""
    from safetensors.torch import save_file
    c = model.config
    for file in REMOTE_MODEL_FILES:
        shutil.copyfile(file, out / file.name)
    config = {
        "architectures": ["NanoGPTForCausalLM"], "model_type": REMOTE_FAMILY,
        "auto_map": {"AutoConfig": "configuration_nanogpt.NanoGPTConfig",
                     "AutoModelForCausalLM": "modeling_nanogpt.NanoGPTForCausalLM"},
        "gpt_config": dataclasses.asdict(c), "nanogpt_config": dataclasses.asdict(c),
        "vocab_size": c.vocab_size, "max_position_embeddings": c.block_size,
        "hidden_size": c.n_embd, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."), "dtype": str(dtype).removeprefix("torch."),
        "use_cache": False,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    sd = {f"gpt.{k}": v.detach().cpu().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if c.tie_embeddings:
        del sd["gpt.lm_head.weight"]  # tied to wte; transformers re-ties on load
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    gen = {"bos_token_id": bos_id, "eos_token_id": eos_id, "use_cache": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def save_native(model: GPT, family: str, out: Path, bos_id, eos_id, dtype: torch.dtype) -> None:
    """Build the transformers model, load our converted weights strictly, save_pretrained (safetensors)."""
    from transformers import AutoModelForCausalLM
    hf_config = hf_config_for(family, model.config, bos_id, eos_id)
    hf_model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    sd = to_hf_state_dict(model, family)
    missing, unexpected = hf_model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"weight mapping for {family} is incomplete: missing {sorted(set(missing) - tied)}, "
                           f"unexpected {sorted(unexpected)}")
    if model.config.tie_embeddings:
        hf_model.tie_weights()
    hf_model.to(dtype).save_pretrained(out, safe_serialization=True)


# ----------------------------------------------------------------------------- tokenizers

def _bpe_pair(ranks: dict[bytes, int], token: bytes, max_rank: int) -> tuple[bytes, bytes]:
    """Run BPE on token's bytes with ranks < max_rank only; for a mergeable token this ends in 2 parts."""
    parts = [bytes([b]) for b in token]
    while True:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best_rank is None or r < best_rank):
                best, best_rank = i, r
        if best is None:
            break
        parts = parts[:best] + [parts[best] + parts[best + 1]] + parts[best + 2:]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {max_rank}) does not split into one merge")
    return parts[0], parts[1]


def gpt2_vocab_and_merges(ranks: dict[bytes, int], special: dict[str, int]) -> tuple[dict, list[str]]:
    """HF GPT-2 vocab.json dict and merges.txt lines, rebuilt from tiktoken BPE ranks."""
    b2u = tokenization.bytes_to_unicode()
    enc = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {enc(tok): rank for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            a, b = _bpe_pair(ranks, tok, rank)
            merges.append(f"{enc(a)} {enc(b)}")
    vocab.update(special)
    return vocab, merges


def save_gpt2_tokenizer(out: Path, ranks: dict[bytes, int], model_max_length: int = 1024) -> tuple[int, int]:
    """vocab.json + merges.txt (+ tokenizer.json): a GPT-2 fast tokenizer; returns (bos_id, eos_id).
    GPT-2 has no BOS of its own: <|endoftext|> serves as both, as in HF's gpt2."""
    from transformers import AutoTokenizer
    vocab, merges = gpt2_vocab_and_merges(ranks, {"<|endoftext|>": 50256})
    (out / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")  # byte-identical to encoder.json
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    eot = "<|endoftext|>"
    cfg = {"tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
           "add_prefix_space": False, "add_bos_token": False, "model_max_length": model_max_length}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(out)  # adds tokenizer.json (fast loading)
    return 50256, 50256


def _sp_fast_tokenizer(raw: bytes):
    """A `tokenizers` BPE pipeline equal to a sentencepiece BPE model, or None where none is known to be:
    unigram models (HF's Viterbi picks different pieces on some words), text normalisation rules."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    try:
        from sentencepiece import sentencepiece_model_pb2
        proto = sentencepiece_model_pb2.ModelProto.FromString(raw)
    except Exception:  # protobuf missing
        return None
    ns, ts = proto.normalizer_spec, proto.trainer_spec
    if ts.model_type != ts.BPE or ns.precompiled_charsmap or ns.remove_extra_whitespaces:
        return None
    sp = spm.SentencePieceProcessor(model_proto=raw)
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    # merges ranked by the merged piece's score (ties: longer left, longer right), as transformers' converter
    merges = []
    for i in range(n):
        p = sp.id_to_piece(i)
        local = sorted(((p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab),
                       key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += [(a, b, sp.get_score(i)) for a, b in local]
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    merges = [(a, b) for a, b, _ in merges]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=sp.id_to_piece(sp.unk_id()), fuse_unk=True,
                               byte_fallback=ts.byte_fallback))
    norm = [normalizers.Replace(" ", "\u2581")]
    if ns.add_dummy_prefix:
        norm.insert(0, normalizers.Prepend(" "))
    tok.normalizer = normalizers.Sequence(norm)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(sp.id_to_piece(i), special=True, normalized=False)
                            for i in range(n) if sp.is_control(i) or sp.is_unknown(i)])
    tok.add_tokens([AddedToken(sp.id_to_piece(i), special=False, normalized=False)
                    for i in range(n) if proto.pieces[i].type == proto.pieces[i].USER_DEFINED])
    return tok


def save_sentencepiece_tokenizer(out: Path, raw: bytes, model_max_length: int = 1024):
    """tokenizer.model (the serialized proto `raw`), plus either a fast tokenizer.json (BPE models whose ids equal
    sentencepiece's on a probe text) or an exact remote-code tokenizer (tokenization_nanogpt.py) that
    calls sentencepiece itself (unigram models). Returns (bos_id, eos_id)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_proto=raw)
    ids = {n: getattr(sp, f"{n}_id")() for n in ("bos", "eos", "unk", "pad")}
    special = {f"{n}_token": sp.id_to_piece(i) for n, i in ids.items() if i >= 0}
    bos_id, eos_id = (ids["bos"] if ids["bos"] >= 0 else None), (ids["eos"] if ids["eos"] >= 0 else None)
    (out / "tokenizer.model").write_bytes(raw)
    fast = _sp_fast_tokenizer(raw)
    if fast is not None and fast.encode(PROBE_TEXT, add_special_tokens=False).ids == sp.encode(PROBE_TEXT):
        from transformers import PreTrainedTokenizerFast
        PreTrainedTokenizerFast(tokenizer_object=fast, model_max_length=model_max_length, **special).save_pretrained(out)
        return bos_id, eos_id
    shutil.copyfile(REMOTE_TOKENIZER_FILE, out / REMOTE_TOKENIZER_FILE.name)
    cfg = {"tokenizer_class": "NanoGPTSentencePieceTokenizer", "model_max_length": model_max_length,
           "auto_map": {"AutoTokenizer": ["tokenization_nanogpt.NanoGPTSentencePieceTokenizer", None]}, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return bos_id, eos_id


def save_char_tokenizer(out: Path, chars: list[str], model_max_length: int = 1024) -> tuple[None, None]:
    """tokenizer.json (+ tokenizer_config.json): a `tokenizers` WordLevel model over the characters (id i = chars[i]),
    each character its own piece, decoded by plain concatenation, so spaces and newlines round-trip exactly. No
    special tokens, so (None, None); a character outside chars is an error in transformers too."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")   # every character alone
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                            clean_up_tokenization_spaces=False).save_pretrained(out)  # keeps " ," and " ."
    return None, None


def save_tokenizer(out: Path, spec: dict, tiktoken_file=None, model_max_length: int = 1024):
    """Tokenizer files for a tokenization.py tokenizer spec; returns (bos_id, eos_id) for the model config."""
    tok = tokenization.tokenizer_from_spec(spec, tiktoken_file)
    if tok.kind == "gpt2":
        return save_gpt2_tokenizer(out, tok.ranks, model_max_length)
    if tok.kind == "char":
        return save_char_tokenizer(out, tok.chars, model_max_length)
    return save_sentencepiece_tokenizer(out, tok.proto, model_max_length)


# ----------------------------------------------------------------------------- export

def _spec_of(tokenizer) -> dict | None:
    if tokenizer is None or tokenizer is False:
        return None
    if isinstance(tokenizer, dict):
        return tokenizer
    if hasattr(tokenizer, "spec"):
        return tokenizer.spec()
    raise TypeError(f"tokenizer must be a spec dict or a tokenization.py Tokenizer, got {type(tokenizer).__name__}")


def export(ckpt_path_or_model, out_dir, tokenizer=None, overwrite: bool = False, dtype: torch.dtype | None = None,
           tiktoken_file=None, fill_defaults: bool = False, verify: bool = False) -> str:
    """Write a transformers directory for a GPT, or for any source load.load_model reads (a checkpoint, a run
    or export directory, a hub name); returns the family exported to.

    tokenizer: spec dict or tokenization.py Tokenizer (default: the source's own); False writes no tokenizer.
    """
    out = Path(out_dir)
    replaced = previous_export_files(out, overwrite)
    if isinstance(ckpt_path_or_model, GPT):
        model, own = ckpt_path_or_model.eval(), None
    else:
        model, own = load_model(ckpt_path_or_model, fill_defaults=fill_defaults, tiktoken_file=tiktoken_file,
                                tokenizer="recorded" if tokenizer is None else "skip")
    spec = _spec_of(own if tokenizer is None else tokenizer)
    dtype = dtype or model.transformer.wte.weight.dtype
    family = family_of(model.config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export", dir=out.parent))
    try:  # written and verified beside out_dir first: a failed export never touches out_dir
        bos_id, eos_id = save_tokenizer(tmp, spec, tiktoken_file, model.config.block_size) if spec else (None, None)
        if family == REMOTE_FAMILY:
            save_remote(model, tmp, bos_id, eos_id, dtype)
        else:
            save_native(model, family, tmp, bos_id, eos_id, dtype)
        if verify:
            verify_export(model, tmp, family, dtype)
        install_export(tmp, out, replaced)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return family


# The names an export writes (transformers' save_pretrained included); --overwrite replaces these and no others.
EXPORT_FILES = ("config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
                "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model",
                "configuration_nanogpt.py", "modeling_nanogpt.py", "model.py", "tokenization_nanogpt.py")


def is_export_file(path: Path) -> bool:
    return path.is_file() and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in EXPORT_FILES)


def previous_export_files(out: Path, overwrite: bool) -> list[Path]:
    """The files of an earlier export in `out` that a new export replaces (--overwrite). Refuses a training
    run directory, a non-empty `out` without overwrite, and export-named files that no export of ours wrote."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; pass a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return []
    if checkpoint.run_files(out):
        raise FileExistsError(f"--out {out} holds a training run (checkpoints or metrics.jsonl), which an export "
                              f"must never replace; pass another directory, e.g. --out {out / 'hf'}")
    if not overwrite:
        raise FileExistsError(f"output directory {out} exists and is not empty; pass --overwrite "
                              f"(overwrite=True) to replace the export in it")
    ours = [p for p in out.iterdir() if is_export_file(p)]
    config = out / "config.json"
    if ours and not (config.is_file() and "nanogpt_config" in config.read_text(errors="replace")):
        raise FileExistsError(f"--out {out} holds {', '.join(sorted(p.name for p in ours))} but no config.json "
                              f"written by export_hf.py, so --overwrite would replace files it did not write; "
                              f"pass another directory")
    return ours


def install_export(tmp: Path, out: Path, replaced: list[Path]) -> None:
    """Move the finished export in `tmp` to `out`: a rename when `out` is new or empty, else the earlier export's
    files are replaced one by one and every other file in `out` is left alone."""
    if not out.is_dir() or not any(out.iterdir()):
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
        return
    for old in replaced:
        old.unlink()
    for new in tmp.iterdir():
        os.replace(new, out / new.name)


# ----------------------------------------------------------------------------- verification

@torch.no_grad()
def verify_export(model: GPT, out: Path, family: str, dtype: torch.dtype | None = None, seq_len: int = 32,
                  rtol: float = 1e-4) -> float:
    """Load the export with AutoModelForCausalLM and compare logits on random tokens; returns max abs diff.

    Both sides run in float32 on the CPU from the same (export-dtype) weights; `model` is not touched.
    The tolerance is rtol * max |logit| (at least rtol): float32 rounding grows with the logits, while
    a wrong mapping (swapped, transposed or missing weights) changes them by far more.
    """
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=family == REMOTE_FAMILY,
                                              dtype=torch.float32).eval()
    dtype = dtype or model.transformer.wte.weight.dtype
    ref = copy.deepcopy(model).to("cpu", dtype).float().eval()  # the exported weights, in float32
    g = torch.Generator().manual_seed(0)
    T = min(seq_len, model.config.block_size)
    idx = torch.randint(0, model.config.vocab_size, (2, T), generator=g)
    ours = ref(idx)
    theirs = hf(idx).logits.float()
    if theirs.shape != ours.shape:
        raise RuntimeError(f"export verification failed: logits {tuple(theirs.shape)} vs {tuple(ours.shape)}")
    diff = (ours - theirs).abs().max().item()
    tol = rtol * max(1.0, ours.abs().max().item())
    if not diff <= tol:  # also catches NaN
        raise RuntimeError(f"export verification failed: max abs diff {diff:.3g} > {tol:.3g} "
                           f"(= {rtol:g} x max |logit|, at least {rtol:g})")
    return diff


# ----------------------------------------------------------------------------- CLI

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file, training out_dir (newest ckpt_*.pt), "
                                                 "transformers directory or hub name (see load.py)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="weight dtype of the export (default: the checkpoint's)")
    p.add_argument("--tiktoken-file", default=None, help="gpt2.tiktoken ranks (default: env TIKTOKEN_GPT2_FILE, "
                                                         "else tiktoken's cached gpt2 encoding)")
    p.add_argument("--fill-defaults", action="store_true",
                   help="fill model_config fields missing from an old checkpoint with GPTConfig defaults")
    p.add_argument("--no-verify", action="store_true", help="skip reloading the export and comparing logits")
    p.add_argument("--trust-checkpoint", action="store_true", help="load a checkpoint that needs full unpickling (older versions; can run code: only files you trust)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    try:
        previous_export_files(Path(args.out), args.overwrite)  # a bad --out stops before any work
        model, tokenizer = load_model(args.ckpt, trust=args.trust_checkpoint, fill_defaults=args.fill_defaults,
                                      tiktoken_file=args.tiktoken_file)
        if tokenizer is None:
            print(f"warning: {args.ckpt} records no tokenizer; exporting weights and config only", file=sys.stderr)
        family = export(model, args.out, tokenizer=False if tokenizer is None else tokenizer,
                        overwrite=args.overwrite, dtype=dtype, tiktoken_file=args.tiktoken_file,
                        verify=not args.no_verify)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:  # RuntimeError: verification
        sys.exit(f"export_hf.py: error: {e}")
    note = f" ({why_remote(model.config)})" if family == REMOTE_FAMILY else ""
    remote = ", trust_remote_code=True" if family == REMOTE_FAMILY else ""
    code = sorted(p.name for p in Path(args.out).glob("*.py") if is_export_file(p))  # remote model and/or tokenizer
    print(f"exported {args.ckpt} -> {args.out} as {HF_CLASS[family]}{note}")
    print(f"load: AutoModelForCausalLM.from_pretrained({str(args.out)!r}{remote})")
    if tokenizer is not None:  # AutoTokenizer reads config.json too: a remote model's auto_map asks as well
        print(f"      AutoTokenizer.from_pretrained({str(args.out)!r}{', trust_remote_code=True' if code else ''})")
    if code:
        print(f"note: this export runs its own code ({', '.join(code)}); without trust_remote_code=True, "
              f"transformers stops at an interactive [y/N] prompt (and fails where there is no terminal)")


if __name__ == "__main__":
    main()
