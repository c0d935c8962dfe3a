"""
Sample text from a trained checkpoint (or OpenAI's GPT-2 weights).

    python sample.py --ckpt out/run --prompt "ROMEO:" --num-samples 3 --max-new-tokens 200
    python sample.py --ckpt out/run/best.pt --prompt-file prompt.txt --top-p 0.9 --stream --verbose
    echo "Once upon a time" | python sample.py --ckpt out/run --greedy --stop-at-eot
    python sample.py --init-from gpt2 --prompt "Hello, I'm a language model,"   # needs transformers, online

The prompt comes from --prompt, --prompt-file, or stdin (when piped); with none, generation starts
from the tokenizer's BOS (sentencepiece) or <|endoftext|> (GPT-2) token, or, for a tokenizer without special
tokens (char), from a newline as nanoGPT's sample.py does. Text is decoded with the checkpoint's own tokenizer
(its spec is stored in the checkpoint; an export directory's: its vocab.json, tokenizer.model or tokenizer.json).
Generation uses the model's KV cache unless --no-cache. --temperature 0 or --greedy decodes greedily; --top-k /
--top-p filter the distribution before sampling (top-p keeps the smallest set of tokens whose probability reaches p).
A prompt longer than the model's context is truncated from the left (models with learned positions).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import torch

import runtime
from load import add_model_args, load_model
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# generation: a model's next-token logits, with a KV cache, and the token picked from them


class KVCache:
    """Keys/values for every layer, preallocated on first use in the dtype attention produces
    (bf16 under autocast); `pos` tokens are filled."""

    def __init__(self, config: GPTConfig, batch: int, max_len: int):
        self.shape = (config.n_layer, batch, config.kv_heads, max_len, config.head_dim)
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.docs: torch.Tensor | None = None  # document id of every cached token (doc_mask_token)
        self.pos = 0     # tokens cached
        self.start = 0   # index (in the full sequence) of the first cached token

    @property
    def max_len(self) -> int:
        return self.shape[3]

    def _end(self, new: int) -> int:
        end = self.pos + new
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens, {end} needed; allocate a larger cache")
        return end

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, T, hd) at positions pos..pos+T; return all cached keys/values so far."""
        end = self._end(k.size(2))
        if self.k is None:
            self.k = k.new_zeros(self.shape)
            self.v = v.new_zeros(self.shape)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def doc_ids(self, new: torch.Tensor) -> torch.Tensor:
        """Document ids (B, pos + T) of the cached tokens and of new ones (B, T, numbered from 0 here)."""
        end = self._end(new.size(1))
        if self.docs is None:
            self.docs = new.new_zeros(self.shape[1], self.max_len)
        last = self.docs[:, self.pos - 1:self.pos] if self.pos else 0
        self.docs[:, self.pos:end] = new + last
        return self.docs[:, :end]


def new_cache(model: GPT, batch: int, max_len: int) -> KVCache:
    """A KV cache for `batch` rows of up to max_len tokens (learned positions: at most block_size)."""
    if model.config.pos_emb == "learned":
        max_len = min(max_len, model.config.block_size)
    return KVCache(model.config, batch, max_len)


def context_start(model: GPT, start: int, length: int) -> int:
    """Where the context of the next token starts, given the last start and the tokens so far. Learned
    positions see at most block_size tokens: once the context is full it drops its oldest half at once, so
    a KV cache is refilled once every block_size/2 tokens instead of every token (the context then holds
    block_size/2 to block_size tokens). Other positions keep everything."""
    context = model.config.block_size if model.config.pos_emb == "learned" else None
    if context is None or length - start <= context:
        return start
    return length - context // 2


@torch.no_grad()
def next_token_logits(model: GPT, idx: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
    """Logits (B, vocab) for the token after idx[:, start:]. With a cache: prefill once, then feed only
    the new tokens; a new start (the context slid) or a shorter idx refills it."""
    ctx = idx[:, start:]
    with runtime.variable_shape_attention():
        if cache is None:
            return model(ctx)[:, -1]
        if cache.start != start or cache.pos >= ctx.size(1):
            cache.start, cache.pos = start, 0
        return model.forward_cached(ctx[:, cache.pos:], cache)


@dataclass(frozen=True)
class Decoding:
    """How each new token is picked (greedy at temperature 0, else a draw after top-k / top-p filtering), and
    whether a KV cache serves the forward passes (the same tokens either way)."""
    temperature: float = 1.0     # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None   # in (0, 1]
    use_cache: bool = True

    def check(self) -> None:
        """Clear errors for out-of-range settings."""
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


GREEDY = Decoding(temperature=0.0)


def pick_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits (B, V): greedy at temperature 0, else top-k/top-p sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    candidates = None
    if top_k is not None and top_k < logits.size(-1):
        # draw among the k best only: the softmax and the draw run over k values, not the vocabulary
        logits, candidates = torch.topk(logits, top_k)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p         # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    choice = torch.multinomial(logits.softmax(-1), 1, generator=generator)
    return choice if candidates is None else candidates.gather(-1, choice)


@torch.no_grad()
def generate_stream(model: GPT, idx: torch.Tensor, max_new_tokens: int, decoding: Decoding = Decoding(),
                    stop_token: int | None = None, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield each new token (B, 1). Rows that emitted stop_token keep emitting it; stops when all have."""
    cache = new_cache(model, idx.size(0), idx.size(1) + max_new_tokens) if decoding.use_cache else None
    done = torch.zeros(idx.size(0), 1, dtype=torch.bool, device=idx.device)
    start = 0
    for _ in range(max_new_tokens):
        start = context_start(model, start, idx.size(1))
        tok = pick_token(next_token_logits(model, idx, cache, start), temperature=decoding.temperature,
                         top_k=decoding.top_k, top_p=decoding.top_p, generator=generator)
        if stop_token is not None:
            tok = tok.masked_fill(done, stop_token)
            done |= tok == stop_token
        idx = torch.cat((idx, tok), dim=1)
        yield tok
        if stop_token is not None and bool(done.all()):
            return


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, decoding: Decoding = Decoding(),
             stop_token: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """idx (B, T) -> (B, T + new) with new <= max_new_tokens; the tokens of generate_stream."""
    new = generate_stream(model, idx, max_new_tokens, decoding, stop_token=stop_token, generator=generator)
    return torch.cat([idx, *new], dim=1)


# -----------------------------------------------------------------------------
# prompt


def read_prompt(prompt: str | None, prompt_file: str | None, stdin: TextIO | None = None) -> str:
    """--prompt, else --prompt-file, else piped stdin, else '' (unconditional)."""
    if prompt is not None:
        return prompt
    if prompt_file is not None:
        return Path(prompt_file).read_text(encoding="utf-8")
    stdin = sys.stdin if stdin is None else stdin
    try:
        piped = stdin is not None and not stdin.isatty()
    except (AttributeError, ValueError, OSError):
        piped = False
    return stdin.read() if piped else ""


def start_token(tokenizer) -> int:
    """BOS, else <|endoftext|> / EOS, else (a tokenizer without special tokens: char) the newline's token."""
    for tok in (tokenizer.bos_id, tokenizer.eot_id, tokenizer.eos_id):
        if tok is not None:
            return tok
    try:
        newline = tokenizer.encode("\n")
    except ValueError:  # a char tokenizer whose corpus had no newline
        newline = []
    if len(newline) == 1:
        return newline[0]
    raise ValueError("empty prompt and the tokenizer has no BOS/EOT token or newline to start from; give a --prompt")


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    hidden: int = 0              # leading ids not shown in the text (the start token of an unconditional sample)


def encode_prompt(tokenizer, text: str, context: int | None) -> tuple[Prompt, int]:
    """(the prompt, number of tokens dropped from the left to fit `context` tokens). An empty text starts from
    the tokenizer's start token, which the samples do not show."""
    if not text:
        return Prompt([start_token(tokenizer)], hidden=1), 0
    ids = tokenizer.encode(text)
    if context is not None and len(ids) > context:
        return Prompt(ids[-context:]), len(ids) - context
    return Prompt(ids), 0


def max_prompt_len(model) -> int | None:
    """Hard prompt limit: block_size for learned positions; None for rope/alibi/none (they extrapolate)."""
    config = model.config
    return config.block_size if getattr(config, "pos_emb", "learned") == "learned" else None


# -----------------------------------------------------------------------------
# generation


@dataclass
class SampleConfig:
    num_samples: int = 1
    max_new_tokens: int = 200
    decoding: Decoding = Decoding()
    seed: int | None = 1337
    stop_at_eot: bool = False
    stream: bool = False


@dataclass
class Generation:
    """One sample: its prompt, the new tokens and the text."""
    prompt_ids: list[int]
    new_ids: list[int]          # generated tokens (a final stop token excluded)
    text: str                   # decoded prompt + generation (an unconditional start token not shown)
    seconds: float


def validate(cfg: SampleConfig) -> None:
    """Clear errors for out-of-range settings."""
    cfg.decoding.check()
    if cfg.num_samples < 1 or cfg.max_new_tokens < 0:
        raise ValueError("num_samples must be >= 1 and max_new_tokens >= 0")


class StreamDecoder:
    """Incremental detokenizer: decodes the accumulated ids and returns only the new text.

    A BPE token can end in the middle of a UTF-8 character; such a tail decodes to U+FFFD and is held
    back until the following tokens complete it (flush() releases whatever is left).
    """

    def __init__(self, tokenizer, prefix_ids: list[int]):
        self.tokenizer, self.ids = tokenizer, list(prefix_ids)
        self.emitted = tokenizer.decode(self.ids) if self.ids else ""

    def _new_text(self, text: str) -> str:
        new = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted += new
        return new

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        return "" if text.endswith("\ufffd") else self._new_text(text)

    def flush(self) -> str:
        return self._new_text(self.tokenizer.decode(self.ids))


def stop_id(tokenizer, cfg: SampleConfig) -> int | None:
    if not cfg.stop_at_eot:
        return None
    return tokenizer.eot_id if tokenizer.eot_id is not None else tokenizer.eos_id


def generate_one(model, tokenizer, prompt: Prompt, cfg: SampleConfig, generator: torch.Generator,
                 device, autocast_dtype=None, out: TextIO | None = None) -> Generation:
    """One sample with generate (or generate_stream, echoing text to `out` as it arrives)."""
    device = torch.device(device)
    idx = torch.tensor([prompt.ids], dtype=torch.long, device=device)
    stop = stop_id(tokenizer, cfg)
    t0 = time.perf_counter()
    with runtime.autocast(device, autocast_dtype), torch.no_grad():
        if cfg.stream:
            decoder = StreamDecoder(tokenizer, prompt.ids[prompt.hidden:])
            if out is not None:
                out.write(decoder.emitted)
                out.flush()
            new_ids = []
            for tok in generate_stream(model, idx, cfg.max_new_tokens, cfg.decoding, stop_token=stop,
                                       generator=generator):
                tok = int(tok.view(-1)[0])
                new_ids.append(tok)
                if tok == stop:
                    break
                piece = decoder.push(tok)
                if out is not None and piece:
                    out.write(piece)
                    out.flush()
            if out is not None:
                out.write(decoder.flush())
        else:
            new = generate(model, idx, cfg.max_new_tokens, cfg.decoding, stop_token=stop, generator=generator)
            new_ids = new[0, len(prompt.ids):].tolist()
    runtime.synchronize(device)
    seconds = time.perf_counter() - t0
    if stop is not None and stop in new_ids:
        new_ids = new_ids[:new_ids.index(stop)]
    return Generation(prompt.ids, new_ids, tokenizer.decode((prompt.ids + new_ids)[prompt.hidden:]), seconds)


def generate_samples(model, tokenizer, prompt: Prompt, cfg: SampleConfig, device="cpu", autocast_dtype=None,
                     out: TextIO | None = None) -> list[Generation]:
    """cfg.num_samples samples (printed to `out` if given); the same seed gives the same samples."""
    validate(cfg)
    seed = cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    generator = torch.Generator(device=torch.device(device)).manual_seed(seed)
    samples = []
    for _ in range(cfg.num_samples):
        s = generate_one(model, tokenizer, prompt, cfg, generator, device, autocast_dtype=autocast_dtype, out=out)
        if out is not None:
            if not cfg.stream:
                out.write(s.text)
            out.write("\n---------------\n")
            out.flush()
        samples.append(s)
    return samples


# -----------------------------------------------------------------------------
# command line


def _top_p(value: str) -> float:
    p = float(value)
    if not 0.0 < p <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return p


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return n


def _non_negative_float(value: str) -> float:
    x = float(value)
    if x < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return x


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="prompt text (default: stdin if piped, else unconditional)")
    prompt.add_argument("--prompt-file", help="read the prompt from this file")
    p.add_argument("--num-samples", type=_positive_int, default=1)
    p.add_argument("--max-new-tokens", type=_positive_int, default=200)
    p.add_argument("--temperature", type=_non_negative_float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=_positive_int, default=None)
    p.add_argument("--top-p", type=_top_p, default=None, help="nucleus sampling, in (0, 1]")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (same as --temperature 0)")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--stop-at-eot", action="store_true", help="stop a sample at the end-of-text token")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    p.add_argument("--verbose", action="store_true", help="print generation speed (tokens/s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: at most 4; token-by-token "
                                                             "decoding is memory-bound)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SampleConfig:
    decoding = Decoding(temperature=0.0 if args.greedy else args.temperature, top_k=args.top_k, top_p=args.top_p,
                        use_cache=not args.no_cache)
    return SampleConfig(num_samples=args.num_samples, max_new_tokens=args.max_new_tokens, decoding=decoding,
                        seed=args.seed, stop_at_eot=args.stop_at_eot, stream=args.stream)


def main(argv=None, out: TextIO | None = None) -> list[Generation]:
    args = parse_args(argv)
    out = sys.stdout if out is None else out
    cfg = config_from_args(args)
    try:
        device = runtime.pick_device(args.device)
        model, tokenizer = load_model(args.source, device, args.trust_checkpoint, tiktoken_file=args.tiktoken_file,
                                      tokenizer="required")
        prompt, dropped = encode_prompt(tokenizer, read_prompt(args.prompt, args.prompt_file), max_prompt_len(model))
        dtype = runtime.decode_dtype(device, args.dtype)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"sample.py: error: {e}")
    torch.set_num_threads(runtime.decode_threads(args.threads))
    autocast_dtype = runtime.autocast_dtype(device, dtype)
    if runtime.device_type(device) == "cpu" and autocast_dtype is not None:
        model.to(autocast_dtype)  # CPU: weights in bf16 themselves (half the bytes read per token), no autocast
        autocast_dtype = None
    if dropped:
        print(f"note: prompt has {len(prompt.ids) + dropped} tokens, more than the model's context "
              f"({len(prompt.ids)}); dropped the first {dropped}", file=sys.stderr)
    if args.compile:
        model = torch.compile(model)
    samples = generate_samples(model, tokenizer, prompt, cfg, device, autocast_dtype=autocast_dtype, out=out)
    if args.verbose:
        n_tok = sum(len(s.new_ids) for s in samples)
        secs = sum(s.seconds for s in samples)
        print(f"generated {n_tok} tokens in {secs:.2f}s: {n_tok / max(secs, 1e-9):.1f} tokens/s "
              f"({'' if cfg.decoding.use_cache else 'no '}KV cache, device {device}, "
              f"dtype {dtype}, {torch.get_num_threads()} threads)", file=sys.stderr)
    return samples


if __name__ == "__main__":
    main()
