"""The optimizers of a run and their per-step settings (config.py holds the keys, train.py steps them).

adamw: two weight-decay groups (decay_groups). muon: Muon (torch.optim.Muon, optionally with cautious
weight decay) for the hidden 2-D matrices of the blocks; AdamW for the embeddings, the head and the scalars, each
group at its own peak lr; momentum warm-up. adamw8bit: bitsandbytes. Every param group keeps its peak lr; the
schedule scales them all by the same factor (set_lr).
"""
from __future__ import annotations

import functools
import inspect
import math

import torch
from torch.distributed.tensor import DTensor

from config import OptimConfig, TrainConfig
from model import GPT


MUON_GROUPS = ("hidden", "embed", "head", "scalar")   # Muon / AdamW / AdamW / AdamW


def muon_split(raw: GPT) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """optimizer=muon's parameter groups, each parameter in exactly one (a tied head is the token embedding):
    hidden = the 2-D matrices of the blocks; embed = token, position and value-embedding tables; head = an untied
    lm_head; scalar = everything else (norm gains, biases, the toggles' mixing scalars)."""
    groups = {name: [] for name in MUON_GROUPS}
    tables = {id(m.weight) for m in raw.modules() if isinstance(m, torch.nn.Embedding)}  # any toggle's tables too
    for n, p in raw.named_parameters():
        if not p.requires_grad:
            continue
        kind = ("embed" if id(p) in tables else "head" if n.startswith("lm_head.") else
                "hidden" if n.startswith("transformer.h.") and p.dim() == 2 else "scalar")
        groups[kind].append((n, p))
    return groups


def decay_groups(raw: GPT, weight_decay: float) -> list[dict]:
    """AdamW's two groups: 2-D (and larger) tensors decay (matmuls, embeddings); biases and norm gains do not."""
    params = [p for p in raw.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


@functools.lru_cache(maxsize=None)
def fused_adamw_available(device_type: str) -> bool:
    """Whether torch.optim.AdamW(fused=True) runs on this device type (CPU: torch >= 2.4); probed once."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    if device_type != "cpu":
        return device_type == "cuda"
    try:
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = torch.ones(2)
        torch.optim.AdamW([p], fused=True).step()
        return True
    except (RuntimeError, NotImplementedError):
        return False


def adamw(groups: list[dict], o: OptimConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW at o's lr, betas and eps; the fused kernel where this device has one (CUDA, and CPU in torch >= 2.4)."""
    fused = {"fused": True} if fused_adamw_available(device_type) else {}
    return torch.optim.AdamW(groups, lr=o.learning_rate, betas=(o.beta1, o.beta2), eps=o.eps, **fused)


def build_optimizers(raw: GPT, cfg: TrainConfig, device_type: str) -> list[torch.optim.Optimizer]:
    """adamw (decay_groups), muon (Muon for the hidden matrices + AdamW for the rest, each group at its own peak
    lr), or adamw8bit."""
    o = cfg.optim
    if o.optimizer == "adamw":
        return [adamw(decay_groups(raw, o.weight_decay), o, device_type)]
    if o.optimizer == "adamw8bit":
        import bitsandbytes as bnb  # optional dependency (CUDA); config.check_optimizer_available said if missing
        return [bnb.optim.AdamW8bit(decay_groups(raw, o.weight_decay), lr=o.learning_rate, betas=(o.beta1, o.beta2),
                                    eps=o.eps)]
    split = muon_split(raw)
    wd = o.muon_weight_decay if o.muon_weight_decay is not None else o.weight_decay
    muon = Muon([p for _, p in split["hidden"]], lr=o.muon_lr, weight_decay=wd, momentum=o.muon_momentum,
                cautious_wd=o.muon_cautious_wd, ns_steps=o.muon_ns_steps)
    lrs = {"embed": o.embed_lr, "head": o.head_lr, "scalar": o.scalar_lr}
    rest = [{"params": [p for _, p in split[k]], "name": k, "lr": lrs[k] if lrs[k] is not None else o.learning_rate,
             "weight_decay": 0.0 if k == "scalar" else o.weight_decay} for k in lrs if split[k]]
    return [muon, adamw(rest, o, device_type)]


class Muon(torch.optim.Muon):
    """torch.optim.Muon's update (momentum, Nesterov, the quintic Newton-Schulz iteration in bfloat16, its lr scaling,
    decoupled weight decay p -= lr * wd * p), with the matrices of one shape orthogonalized together as one batch (a
    bmm chain per shape instead of per matrix: 1.7x faster for a small model on a CPU), and the option of cautious
    weight decay. State and param groups are torch's, so checkpoints load either way."""

    def __init__(self, params, cautious_wd: bool = False, **kwargs):
        super().__init__(params, **kwargs)
        self.cautious_wd = cautious_wd

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            momentum, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
            for buf, grad in zip(bufs, grads):
                buf.lerp_(grad, 1 - momentum)
            updates = [g.lerp(b, momentum) if group["nesterov"] else b for g, b in zip(grads, bufs)]
            ortho = orthogonalize(updates, group["ns_coefficients"], group["ns_steps"], group["eps"])
            for p, u in zip(params, ortho):
                before = p.clone() if self.cautious_wd else None
                if not self.cautious_wd:
                    p.mul_(1 - lr * wd)
                p.add_(u.to(p.dtype), alpha=-lr * muon_lr_scale(p.shape, group["adjust_lr_fn"]))
                if self.cautious_wd:
                    cautious_decay_(p, before, lr, wd)
        return loss


def muon_lr_scale(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """torch.optim.Muon's per-matrix lr factor: sqrt(max(1, rows / cols)), or 0.2 sqrt(max dim) (match_rms_adamw)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols)) if adjust_lr_fn in (None, "original") else 1.0


def orthogonalize(updates: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int,
                  eps: float) -> list[torch.Tensor]:
    """Newton-Schulz orthogonalization of each matrix. Matrices of one shape up to a transpose (an MLP's d x 4d and
    4d x d) go as one batch in the wide orientation, where the iteration runs anyway; FSDP's sharded DTensors go one
    at a time."""
    groups: dict[tuple, list[int]] = {}
    for i, u in enumerate(updates):
        groups.setdefault(("one", i) if isinstance(u, DTensor) else tuple(sorted(u.shape)), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(updates)
    for key, index in groups.items():
        if key[0] == "one":
            out[index[0]] = newton_schulz(updates[index[0]], coefficients, steps, eps)
            continue
        tall = [updates[i].size(0) > updates[i].size(1) for i in index]
        result = newton_schulz(torch.stack([updates[i].mT if t else updates[i] for i, t in zip(index, tall)]),
                               coefficients, steps, eps)
        for j, (i, t) in enumerate(zip(index, tall)):
            out[i] = result[j].mT if t else result[j]
    return out


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """X ~ U V^T of G = U S V^T (one matrix, or a batch of them): Muon's quintic iteration in bfloat16 on the wide
    orientation, each matrix first scaled to Frobenius norm 1."""
    a, b, c = coefficients
    tall = g.size(-2) > g.size(-1)
    x = g.bfloat16().mT if tall else g.bfloat16()
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.mT if tall else x


def cautious_decay_(param: torch.Tensor, before: torch.Tensor, lr: float, weight_decay: float) -> None:
    """Cautious weight decay (Chen et al. 2025): x -= lr * wd * 1[u * x >= 0] * x, with x the weights before the step
    and u = before - param the step's update (descent direction): decay only where it already pulls x toward 0."""
    param.sub_(before * ((before - param) * before >= 0) * (lr * weight_decay))


def muon_momentum_at(step: int, o: OptimConfig) -> float:
    """Muon momentum warm-up (modded-nanogpt): linear from muon_momentum_start at step 0 to muon_momentum at
    step muon_momentum_warmup, then held."""
    if not o.muon_momentum_warmup:
        return o.muon_momentum
    frac = min(step / o.muon_momentum_warmup, 1.0)
    return (1 - frac) * o.muon_momentum_start + frac * o.muon_momentum


def set_momentum(optimizers: list[torch.optim.Optimizer], momentum: float) -> None:
    for opt in optimizers:
        if isinstance(opt, torch.optim.Muon):
            for group in opt.param_groups:
                group["momentum"] = momentum


def peak_lrs(optimizers: list[torch.optim.Optimizer]) -> list[list[float]]:
    """Each param group's lr as built: the peaks the schedule scales."""
    return [[g["lr"] for g in opt.param_groups] for opt in optimizers]


def set_lr(optimizers: list[torch.optim.Optimizer], peaks: list[list[float]], scale: float) -> None:
    """Every param group at scale x its peak lr."""
    for opt, group_peaks in zip(optimizers, peaks):
        for group, peak in zip(opt.param_groups, group_peaks):
            group["lr"] = peak * scale


# ----------------------------------------------------------------------------- schedules: lr, and staged warmups


def warmup_lr(step: int, warmup_iters: int, max_lr: float, start_ratio: float = 0.0) -> float:
    """Linear warmup: step 0 -> max_lr*(start_ratio + (1-start_ratio)/warmup_iters), step warmup_iters-1 -> max_lr."""
    return max_lr * (start_ratio + (1.0 - start_ratio) * (step + 1) / warmup_iters)


def cosine_lr(step: int, max_lr: float, min_lr: float, warmup_iters: int, decay_iters: int,
              start_ratio: float = 0.0) -> float:
    """Warmup, cosine from max_lr to min_lr at decay_iters, then min_lr held (GPT* holds the last 10%)."""
    if step < warmup_iters:
        return warmup_lr(step, warmup_iters, max_lr, start_ratio)
    if step >= decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / (decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def wsd_lr(step: int, max_lr: float, min_lr: float, warmup_iters: int, max_iters: int,
           cooldown_frac: float, shape: str = "linear", start_ratio: float = 0.0) -> float:
    """Warmup-stable-decay: warmup, max_lr until the last cooldown_frac of steps, then linear or 1-sqrt to min_lr."""
    if step < warmup_iters:
        return warmup_lr(step, warmup_iters, max_lr, start_ratio)
    cool_start = max_iters - round(cooldown_frac * max_iters)
    if step < cool_start:
        return max_lr
    progress = min(1.0, (step - cool_start) / max(1, max_iters - cool_start))
    factor = 1.0 - math.sqrt(progress) if shape == "1-sqrt" else 1.0 - progress
    return min_lr + (max_lr - min_lr) * factor


def constant_lr(step: int, max_lr: float, warmup_iters: int, start_ratio: float = 0.0) -> float:
    return warmup_lr(step, warmup_iters, max_lr, start_ratio) if step < warmup_iters else max_lr


def get_lr(step: int, cfg: TrainConfig) -> float:
    """The peak-lr-scale learning rate at a (0-based) optimizer step, per the config's schedule."""
    s, max_lr = cfg.schedule, cfg.optim.learning_rate
    if s.lr_schedule == "wsd":
        return wsd_lr(step, max_lr, cfg.min_lr, s.warmup_iters, s.max_iters, s.cooldown_frac,
                      s.cooldown_shape, s.warmup_start_ratio)
    if s.lr_schedule == "constant":
        return constant_lr(step, max_lr, s.warmup_iters, s.warmup_start_ratio)
    decay = s.lr_decay_iters if s.lr_decay_iters is not None else round(s.max_iters * (1 - s.lr_hold_frac))
    return cosine_lr(step, max_lr, cfg.min_lr, s.warmup_iters, decay, s.warmup_start_ratio)


def stage_at(step: int, max_iters: int, final: int, stages: tuple[int, ...], frac: float) -> int:
    """Staged warmup (sequence length, batch size): stages split the first frac*max_iters steps equally, then final."""
    span = int(frac * max_iters)
    if not stages or step >= span:
        return final
    return stages[step * len(stages) // span]
