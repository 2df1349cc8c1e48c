"""Hungarian matching of predictions to targets (scipy's linear_sum_assignment)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising class, L1 and GIoU costs, solved per image. The class cost
    is DETR's (minus the softmax probability) or, with ``focal_alpha``, the focal cost of the
    sigmoid decoders (Conditional DETR, DAB-DETR)."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float | None = None):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("matcher costs cannot all be 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha = focal_alpha

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Returns, per image, (prediction indices, target indices) as int64 tensors."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        B, Q = logits.shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        # one cost matrix over the whole batch (one set of kernels), split per image for solving
        out_boxes = boxes.flatten(0, 1).float()
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        cost = self.cost_bbox * torch.cdist(out_boxes, tgt_boxes, p=1)
        cost += self.cost_class * self._class_cost(logits.flatten(0, 1).float(), tgt_ids)
        cost -= self.cost_giou * generalized_box_iou(box_convert(out_boxes, "cxcywh", "xyxy"),
                                                     box_convert(tgt_boxes, "cxcywh", "xyxy"))
        cost = cost.view(B, Q, -1).cpu()
        indices = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def _class_cost(self, logits: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """(predictions, targets) cost of each prediction's class score for each target's class."""
        if self.focal_alpha is None:
            return -logits.softmax(-1)[:, tgt_ids]
        alpha, gamma = self.focal_alpha, 2.0
        prob = logits.sigmoid()
        neg = (1 - alpha) * (prob ** gamma) * (-(1 - prob + 1e-8).log())
        pos = alpha * ((1 - prob) ** gamma) * (-(prob + 1e-8).log())
        return pos[:, tgt_ids] - neg[:, tgt_ids]
