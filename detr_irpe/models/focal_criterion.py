"""The set loss of the sigmoid-classification decoders (Conditional DETR, DAB-DETR): a sigmoid
focal classification loss over every query and class (no no-object logit), L1 and GIoU on matched
boxes, the same on every auxiliary output, each re-matched; class and cardinality errors for logs.
Term names and normalisation as the reference codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .criterion import box_losses, cardinality_error, class_error, layer_losses, matched_permutation
from .matcher import HungarianMatcher

#: the focusing exponent of the focal loss; both references fix it at 2
FOCAL_GAMMA = 2.0


def sigmoid_focal_loss(logits: torch.Tensor, onehot: torch.Tensor, num_boxes: float, alpha: float,
                       gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """RetinaNet's focal loss of (B, Q, C) logits against a one-hot target, summed over classes and
    images, averaged over queries and divided by ``num_boxes`` (then scaled by Q by the caller, as
    the references do)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = prob * onehot + (1 - prob) * (1 - onehot)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * onehot + (1 - alpha) * (1 - onehot)) * loss
    return loss.mean(1).sum() / num_boxes


class FocalSetCriterion(nn.Module):
    """The loss terms of Conditional DETR and DAB-DETR, named as the references (``loss_ce``,
    ``loss_bbox``, ``loss_giou``, with ``_0``, ``_1``, ... for auxiliary outputs; ``class_error``
    and ``cardinality_error``)."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict, focal_alpha: float = 0.25):
        super().__init__()
        self.num_classes, self.matcher, self.weight_dict, self.focal_alpha = num_classes, matcher, weight_dict, focal_alpha

    def forward(self, outputs: dict, targets: list[dict], num_boxes: float | None = None) -> dict:
        """``targets``: per image ``labels`` (int64) and ``boxes`` (normalised cx, cy, w, h);
        ``num_boxes``: the normaliser of the losses (boxes_per_process; computed here, with a
        collective in a distributed run, when not given)."""
        return layer_losses(self._losses, outputs, targets, self.num_classes, num_boxes)

    def _losses(self, outputs: dict, targets: list[dict], num_boxes: float, log: bool) -> dict:
        indices = self.matcher(outputs, targets)
        logits = outputs["pred_logits"].float()
        device = logits.device
        B, Q, C = logits.shape
        idx = tuple(i.to(device) for i in matched_permutation(indices))
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(device)
        onehot = torch.zeros(B, Q, C + 1, dtype=logits.dtype, device=device)
        classes = torch.full((B, Q), C, dtype=torch.int64, device=device)
        classes[idx] = matched_labels
        onehot.scatter_(2, classes.unsqueeze(-1), 1)
        out = {"loss_ce": sigmoid_focal_loss(logits, onehot[..., :-1], num_boxes, self.focal_alpha) * Q}
        with torch.no_grad():
            if log:
                out["class_error"] = class_error(logits[idx], matched_labels, if_none=100.0)
            out["cardinality_error"] = cardinality_error(logits, targets)
        out.update(box_losses(outputs, targets, indices, idx, num_boxes))
        return out
