"""DETR's set loss: classification with a down-weighted no-object class, L1 and GIoU on matched
boxes, the same on every auxiliary decoder output; class and cardinality errors for logging."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from ..core.runtime import sum_over_processes, world_size
from .matcher import HungarianMatcher


def matched_permutation(indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, query index) of every matched prediction, in the matcher's order."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src = torch.cat([src for src, _ in indices])
    return batch, src


def box_count(targets: list[dict]) -> int:
    """The target boxes of a batch (read on the host: no device sync)."""
    return sum(len(t["labels"]) for t in targets)


def boxes_per_process(total: float, world: int) -> float:
    """The normaliser of the box losses: target boxes per process over all ``world`` processes
    (``total`` of them), at least 1."""
    return max(float(total) / world, 1.0)


def average_box_count(targets: list[dict], device) -> float:
    """boxes_per_process of ``targets`` over all processes (a collective in a distributed run)."""
    total = sum_over_processes(torch.tensor([float(box_count(targets))], device=device))
    return boxes_per_process(float(total[0]), world_size())


class SetCriterion(nn.Module):
    """The loss terms of DETR, named as the reference (``loss_ce``, ``loss_bbox``, ``loss_giou``,
    with ``_0``, ``_1``, ... for auxiliary outputs; ``class_error`` and ``cardinality_error``)."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict, eos_coef: float = 0.1):
        super().__init__()
        self.num_classes, self.matcher, self.weight_dict, self.eos_coef = num_classes, matcher, weight_dict, eos_coef
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # derived from the config, not learned: kept out of state dicts
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, outputs: dict, targets: list[dict], num_boxes: float | None = None) -> dict:
        """``targets``: per image ``labels`` (int64) and ``boxes`` (normalised cx, cy, w, h);
        ``num_boxes``: the normaliser of the box losses (boxes_per_process; computed here, with a
        collective in a distributed run, when not given)."""
        return layer_losses(self._losses, outputs, targets, self.num_classes, num_boxes)

    def _losses(self, outputs: dict, targets: list[dict], num_boxes: float, log: bool) -> dict:
        indices = self.matcher(outputs, targets)
        logits = outputs["pred_logits"].float()
        device = logits.device
        idx = matched_permutation(indices)
        idx = (idx[0].to(device), idx[1].to(device))
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        target_classes[idx] = matched_labels
        out = {"loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)}
        with torch.no_grad():
            if log:
                out["class_error"] = class_error(logits[idx], matched_labels, if_none=0.0)
            out["cardinality_error"] = cardinality_error(logits, targets)
        out.update(box_losses(outputs, targets, indices, idx, num_boxes))
        return out


def layer_losses(losses_of, outputs: dict, targets: list[dict], num_classes: int, num_boxes: float | None) -> dict:
    """The loss terms ``losses_of(outputs, targets, num_boxes, log)`` gives for the last decoder
    layer and, suffixed ``_0``, ``_1``, ..., for every auxiliary output (each matched on its own);
    ``num_boxes`` computed (a collective in a distributed run) when not given."""
    for i, t in enumerate(targets):
        labels = t["labels"]
        # checked where it costs nothing: on a GPU this would wait for the device every step
        # (the datasets check category ids when they are opened)
        if len(labels) and labels.device.type == "cpu":
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"target {i}: label {hi if hi >= num_classes else lo} outside "
                                 f"[0, {num_classes - 1}] (num_classes={num_classes})")
    if num_boxes is None:
        num_boxes = average_box_count(targets, outputs["pred_logits"].device)
    losses = losses_of(outputs, targets, num_boxes, log=True)
    for i, aux in enumerate(outputs.get("aux_outputs", [])):
        for name, value in losses_of(aux, targets, num_boxes, log=False).items():
            losses[f"{name}_{i}"] = value
    return losses


@torch.no_grad()
def class_error(matched_logits: torch.Tensor, matched_labels: torch.Tensor, if_none: float) -> torch.Tensor:
    """The percentage of matched predictions whose best class is not their target's; ``if_none``
    without matches (DETR's code says 0, Conditional and DAB-DETR's 100)."""
    if not len(matched_labels):
        return matched_logits.new_tensor(if_none)
    return 100.0 * (1.0 - (matched_logits.argmax(-1) == matched_labels).float().mean())


@torch.no_grad()
def cardinality_error(logits: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """|queries whose best class is not the last one - target boxes|, averaged over images (a
    logging figure, as the references)."""
    lengths = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device, dtype=torch.float32)
    predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
    return F.l1_loss(predicted, lengths)


def box_losses(outputs: dict, targets: list[dict], indices, idx, num_boxes: float) -> dict:
    """``loss_bbox`` (L1) and ``loss_giou`` (1 - GIoU) of the matched boxes, summed over boxes and
    divided by ``num_boxes``."""
    device = outputs["pred_boxes"].device
    src = outputs["pred_boxes"][idx].float()
    tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(device).float()
    giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
    return {"loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num_boxes, "loss_giou": (1 - giou).sum() / num_boxes}


def build_weight_dict(ce: float, bbox: float, giou: float, aux_layers: int) -> dict:
    """Each loss term's weight, auxiliary copies included."""
    weights = {"loss_ce": ce, "loss_bbox": bbox, "loss_giou": giou}
    for i in range(aux_layers):
        weights.update({f"{k}_{i}": v for k, v in list(weights.items())[:3]})
    return weights
