"""From model outputs to detections in original image coordinates."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_convert


class PostProcess(nn.Module):
    """Scores, labels and absolute xyxy boxes: softmax, drop the no-object column, best class per
    query; all queries kept (no NMS), as the reference."""

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: torch.Tensor) -> list[dict]:
        """``target_sizes`` (B, 2) holds each image's original (height, width)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(logits) != len(target_sizes):
            raise ValueError(f"{len(logits)} outputs but {len(target_sizes)} target sizes")
        prob = logits.float().softmax(-1)
        scores, labels = prob[..., :-1].max(-1)
        h, w = target_sizes.to(boxes.device).float().unbind(1)
        scale = torch.stack([w, h, w, h], dim=1)[:, None, :]
        xyxy = box_convert(boxes.float(), "cxcywh", "xyxy") * scale
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, xyxy)]


class TopKPostProcess(nn.Module):
    """Detections of the sigmoid decoders (Conditional DETR, DAB-DETR): the ``num_select`` best
    (query, class) pairs of each image by sigmoid score, as the references (no threshold, no NMS;
    a query may give several classes)."""

    def __init__(self, num_select: int = 100):
        super().__init__()
        self.num_select = num_select

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: torch.Tensor) -> list[dict]:
        """``target_sizes`` (B, 2) holds each image's original (height, width)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(logits) != len(target_sizes):
            raise ValueError(f"{len(logits)} outputs but {len(target_sizes)} target sizes")
        B, Q, C = logits.shape
        k = min(self.num_select, Q * C)
        scores, index = torch.topk(logits.float().sigmoid().view(B, -1), k, dim=1)
        query, labels = index // C, index % C
        xyxy = torch.gather(box_convert(boxes.float(), "cxcywh", "xyxy"), 1, query.unsqueeze(-1).expand(-1, -1, 4))
        h, w = target_sizes.to(boxes.device).float().unbind(1)
        xyxy = xyxy * torch.stack([w, h, w, h], dim=1)[:, None, :]
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, xyxy)]
