"""The set loss of Group DETR (Chen et al., 2022): in training the model's outputs hold K groups
of queries (group-major); each group is matched one-to-one to the targets on its own and gets the
decoder's usual set loss.

Term names: group 0's are today's (``loss_ce``, ``loss_bbox``, ``loss_giou``, ``loss_ce_0``, ...,
``class_error``, ``cardinality_error``), so that a run's logs read as a single-group run's; group
g > 0's carry the suffix ``_g{g}`` (``loss_ce_g1``, ``loss_bbox_0_g2``, ...). Each group's terms are
normalised as usual (the box losses by the target boxes per process), and every group's weight is
the term's weight divided by K: the weighted sum is the mean of the K groups' losses. That is the
normalisation of the public Group DETR code (Atten4Vis' GroupDETR branch of Conditional DETR, and
detrex's ``group_detr``, which matches per group, computes the loss over all K x Q queries at once
and divides by K x the box count): for the focal and box terms the two are the same number, and
for DETR's weighted cross-entropy too, because every group matches the same number of queries.
"""

from __future__ import annotations

import torch
from torch import nn

from .criterion import average_box_count

#: output keys whose queries lie along dimension 2 (decoder layers first); the others' along 1
LAYER_MAJOR = ("anchors",)


def group_name(name: str, group: int) -> str:
    """The name of loss term ``name`` of group ``group``: unchanged for group 0, ``name_g{group}``
    for the others."""
    return name if group == 0 else f"{name}_g{group}"


def group_weight_dict(weight_dict: dict, num_groups: int) -> dict:
    """Every group's copy of every weighted term, at 1 / ``num_groups`` of its weight."""
    return {group_name(k, g): w / num_groups for g in range(num_groups) for k, w in weight_dict.items()}


def _split(value, total: int, start: int, size: int, dim: int):
    if torch.is_tensor(value) and value.dim() > dim and value.shape[dim] == total:
        return value.narrow(dim, start, size)
    return value


def group_outputs(outputs: dict, num_groups: int, group: int) -> dict:
    """Group ``group``'s share of the model's outputs (and of each auxiliary output): the queries
    ``group * n`` .. ``(group + 1) * n - 1`` of the K x n; other entries as they are."""
    total = outputs["pred_logits"].shape[1]
    size = total // num_groups
    start = group * size
    out = {}
    for key, value in outputs.items():
        if key == "aux_outputs":
            out[key] = [group_outputs(aux, num_groups, group) for aux in value]
        else:
            out[key] = _split(value, total, start, size, 2 if key in LAYER_MAJOR else 1)
    return out


class GroupCriterion(nn.Module):
    """Group DETR's loss around a decoder's criterion (``SetCriterion`` or ``FocalSetCriterion``):
    the outputs of K x ``group_size`` queries are split into the K groups, each matched and scored
    by ``criterion`` with the one box normaliser of the batch; terms named and weighted as the
    module docstring says. Outputs of one group (``group_size`` queries: the model in eval mode)
    are refused: the weights assume K groups."""

    def __init__(self, criterion: nn.Module, num_groups: int, group_size: int):
        super().__init__()
        if num_groups < 2:
            raise ValueError(f"GroupCriterion needs at least 2 groups, got {num_groups}; use the criterion itself")
        self.criterion, self.num_groups, self.group_size = criterion, num_groups, group_size
        self.num_classes, self.matcher = criterion.num_classes, criterion.matcher
        self.weight_dict = group_weight_dict(criterion.weight_dict, num_groups)

    def forward(self, outputs: dict, targets: list[dict], num_boxes: float | None = None) -> dict:
        """``targets``: per image ``labels`` and ``boxes`` (normalised cx, cy, w, h); ``num_boxes``:
        the box-loss normaliser (boxes_per_process; computed here once, with a collective in a
        distributed run, when not given)."""
        queries = outputs["pred_logits"].shape[1]
        K = self.num_groups
        if queries != K * self.group_size:
            raise ValueError(f"Group DETR's loss expects the outputs of {K} query groups of {self.group_size} "
                             f"({K * self.group_size} queries, the model in training mode), got {queries}")
        if num_boxes is None:
            num_boxes = average_box_count(targets, outputs["pred_logits"].device)
        losses = {}
        for g in range(K):
            for name, value in self.criterion(group_outputs(outputs, K, g), targets, num_boxes=num_boxes).items():
                losses[group_name(name, g)] = value
        return losses
