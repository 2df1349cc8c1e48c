"""Model EMA: an exponential moving average of the weights, updated after every optimizer update,
with RT-DETR's warm-up (decay d * (1 - exp(-updates / warmup)), so that the average follows the
weights closely at first). Evaluated in place of the raw weights when ``train.ema`` is on, saved
in every checkpoint (``ema``), and what the model sources load from such a checkpoint."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """The averaged copy of ``model`` (its own module, in eval mode, without gradients)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: int = 2000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def decay_now(self) -> float:
        """The decay of the next update."""
        return self.decay * (1 - math.exp(-(self.updates + 1) / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights; integer buffers are copied."""
        d = self.decay_now()
        self.updates += 1
        own = self.module.state_dict()
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                own[name].mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                own[name].copy_(value)

    def state_dict(self) -> dict:
        """What a checkpoint holds: the averaged weights and the update count."""
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
