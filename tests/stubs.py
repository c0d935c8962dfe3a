"""Stub tokenizer and models for the evaluation tests: results that can be worked out by hand."""
import torch
import torch.nn as nn


class ByteTokenizer:
    """1 token per UTF-8 byte: token counts are easy to work out by hand."""
    kind, vocab_size, bos_id, eos_id, eot_id = "bytes", 256, None, None, None

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class UniformModel(nn.Module):
    """Same logits everywhere: every token costs exactly log V."""

    def __init__(self, vocab=256):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.vocab), None


class OracleModel(nn.Module):
    """Certain of the next token while the input is a prefix of a known sequence, uniform otherwise."""

    def __init__(self, sequences, vocab=256):
        super().__init__()
        self.sequences, self.vocab = [list(s) for s in sequences], vocab

    def forward(self, idx, targets=None):
        logits = torch.zeros(*idx.shape, self.vocab)
        for b, row in enumerate(idx.tolist()):
            for t in range(len(row)):
                for seq in self.sequences:
                    if len(seq) > t + 1 and seq[:t + 1] == row[:t + 1]:
                        logits[b, t, seq[t + 1]] = 100.0
                        break
        return logits, None


class CausalMixModel(nn.Module):
    """Deterministic causal stub: logits at t = running mean of a random table over idx[:t+1].

    Pure elementwise maths (no matmul), so any difference between batched and unbatched scores
    can only come from padding or alignment mistakes."""

    def __init__(self, vocab=256, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=g)

    def forward(self, idx, targets=None):
        x = self.table[idx].cumsum(dim=1)
        return x / torch.arange(1, idx.size(1) + 1).view(1, -1, 1), None
