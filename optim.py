"""The optimizers of a run and their per-step settings (config.py holds the keys, train.py steps them).

adamw: the model's weight-decay groups (model.param_groups). muon: torch.optim.Muon for the hidden 2-D matrices of
the transformer blocks, AdamW for the rest. adamw8bit: bitsandbytes. Every param group keeps its peak lr; the
schedule scales them all by the same factor (set_lr).
"""
from __future__ import annotations

import torch

from config import TrainConfig
from model import GPT


def build_optimizers(raw: GPT, cfg: TrainConfig, device_type: str) -> list[torch.optim.Optimizer]:
    """adamw (model.configure_optimizers), muon (Muon for hidden matrices + AdamW rest), or adamw8bit."""
    o = cfg.optim
    betas = (o.beta1, o.beta2)
    if o.optimizer == "adamw":
        return [raw.configure_optimizers(o.weight_decay, o.learning_rate, betas, o.eps, device_type)]
    if o.optimizer == "adamw8bit":
        import bitsandbytes as bnb  # optional dependency (CUDA); config.check_optimizer_available said if missing
        return [bnb.optim.AdamW8bit(raw.param_groups(o.weight_decay), lr=o.learning_rate, betas=betas, eps=o.eps)]
    hidden = [p for n, p in raw.named_parameters() if p.requires_grad and p.dim() == 2 and n.startswith("transformer.h.")]
    hidden_ids = {id(p) for p in hidden}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in hidden_ids]} for g in raw.param_groups(o.weight_decay)]
    rest = [g for g in rest if g["params"]]
    muon = torch.optim.Muon(hidden, lr=o.muon_lr, weight_decay=o.weight_decay, momentum=o.muon_momentum)
    fused = {"fused": True} if device_type == "cuda" else {}
    return [muon, torch.optim.AdamW(rest, lr=o.learning_rate, betas=betas, eps=o.eps, **fused)]


def peak_lrs(optimizers: list[torch.optim.Optimizer]) -> list[list[float]]:
    """Each param group's lr as built: the peaks the schedule scales."""
    return [[g["lr"] for g in opt.param_groups] for opt in optimizers]


def set_lr(optimizers: list[torch.optim.Optimizer], peaks: list[list[float]], scale: float) -> None:
    """Every param group at scale x its peak lr."""
    for opt, group_peaks in zip(optimizers, peaks):
        for group, peak in zip(opt.param_groups, group_peaks):
            group["lr"] = peak * scale
