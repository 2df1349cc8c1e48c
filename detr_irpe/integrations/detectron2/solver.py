"""The reference optimizer for DetrIrpe in detectron2: AdamW with a backbone learning-rate
multiplier, weight decay on every parameter, and gradient clipping by the norm over all
parameters together (``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: full_model``)."""

from __future__ import annotations

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

BACKBONE_PREFIX = "detr.backbone."


def with_full_model_clipping(optimizer_cls: type, max_norm: float, norm_type: float = 2.0) -> type:
    """A subclass of ``optimizer_cls`` whose ``step`` first clips the gradients of all its
    parameters to a total norm of ``max_norm``."""

    class FullModelClipped(optimizer_cls):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelClipped.__name__ = FullModelClipped.__qualname__ = f"{optimizer_cls.__name__}WithFullModelClip"
    return FullModelClipped


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: the DETR backbone at ``BASE_LR x BACKBONE_MULTIPLIER``
    (0 freezes it, as the reference's lr_backbone 0), the rest at ``BASE_LR``."""
    solver = cfg.SOLVER
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith(BACKBONE_PREFIX) else rest).append(p)
    groups = [{"params": rest, "lr": solver.BASE_LR}]
    backbone_lr = solver.BASE_LR * solver.BACKBONE_MULTIPLIER
    if backbone and backbone_lr > 0:
        groups.append({"params": backbone, "lr": backbone_lr})
    else:
        for p in backbone:
            p.requires_grad_(False)
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        optimizer_cls = with_full_model_clipping(torch.optim.AdamW, clip.CLIP_VALUE, clip.NORM_TYPE)
    else:
        optimizer_cls = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)  # detectron2's "value" / "norm"
    # the fused kernel receives the AMP loss scale itself and would see scaled gradients in our
    # clipping; without AMP it is much faster than the per-tensor loop
    return optimizer_cls(groups, lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY, fused=not solver.AMP.ENABLED)
