"""AdamW with backbone and rest parameter groups; step decay with optional linear warm-up."""

from __future__ import annotations

import torch
from torch import nn


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: the backbone at ``lr_backbone``, the rest at ``lr``."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr, "initial_lr": cfg.lr, "name": "rest"}]
    if backbone and cfg.lr_backbone > 0:
        groups.append({"params": backbone, "lr": cfg.lr_backbone, "initial_lr": cfg.lr_backbone, "name": "backbone"})
    elif backbone:
        for p in backbone:  # lr_backbone 0 freezes the backbone, as in the reference
            p.requires_grad_(False)
    # the fused implementation (one kernel for all parameters) is much faster than the per-tensor
    # loop, on the CPU too
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


class LRSchedule:
    """The learning-rate factor as a pure function of (epoch, update): x0.1 from epoch
    ``lr_drop`` on (the reference's StepLR), times a linear warm-up over the first
    ``warmup_iters`` updates. Pure, so that a resumed run gets exactly the same rates."""

    def __init__(self, lr_drop: int, warmup_iters: int = 0):
        self.lr_drop, self.warmup_iters = lr_drop, warmup_iters

    def factor(self, epoch: int, update: int) -> float:
        scale = 0.1 if epoch >= self.lr_drop else 1.0
        if self.warmup_iters and update < self.warmup_iters:
            scale *= (update + 1) / self.warmup_iters
        return scale

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, update: int) -> float:
        """Set each group's rate for the coming update; returns the factor."""
        f = self.factor(epoch, update)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
        return f
