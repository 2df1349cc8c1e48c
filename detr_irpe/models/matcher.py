"""Hungarian matching of predictions to targets (scipy's linear_sum_assignment)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising class, L1 and GIoU costs, solved per image."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("matcher costs cannot all be 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

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
        prob = logits.flatten(0, 1).float().softmax(-1)
        out_boxes = boxes.flatten(0, 1).float()
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        cost = self.cost_bbox * torch.cdist(out_boxes, tgt_boxes, p=1)
        cost -= self.cost_class * prob[:, tgt_ids]
        cost -= self.cost_giou * generalized_box_iou(box_convert(out_boxes, "cxcywh", "xyxy"),
                                                     box_convert(tgt_boxes, "cxcywh", "xyxy"))
        cost = cost.view(B, Q, -1).cpu()
        indices = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
