"""Query denoising (Li et al., 2022: DN-DETR) for the anchor-box decoder (``model.decoder: dab``).

In training, ``groups`` noised copies of the ground truth enter the decoder as extra queries in
front of the matching queries; each copy learns to reconstruct its own box and label, which
steadies the bipartite matching early in training. Inference has no denoising part.

- Noise (``noise_targets``), per copy of every target box (cx, cy, w, h): the label is replaced,
  with probability ``label_noise``, by a class drawn uniformly from [0, num_classes); the box
  moves by (2u - 1) * (w/2, h/2, w, h) * ``box_noise`` with u ~ U(0, 1) per coordinate, then is
  clamped to [0, 1]. The draws come in the reference's order (label flips, new labels, box
  offsets), so one seed gives the reference's noise.
- Queries (``denoising_queries``): group g holds the noised copies of every image's targets at
  positions g * pad .. g * pad + n_image - 1, pad the largest target count of the batch; the
  content is ``label_enc(noised label)`` followed by an indicator 1, the anchor logit(noised box);
  unused slots are zero content and zero anchor logits. With denoising configured, the matching
  queries' content is ``label_enc(num_classes)`` followed by an indicator 0 (plus the pattern
  embedding with patterns), in training and in inference alike.
- Attention mask (``attention_mask``, True where attention is forbidden, for the decoder's
  self-attention): the matching queries see no denoising query, each group sees no other group;
  denoising queries see the matching ones.
- Losses (``denoising_losses``): on the known assignment (copy i of target j is the query it was
  made from; no matching), the focal class loss, L1 and GIoU of the un-noised targets, each over
  every copy, divided by the number of copies on this process (as the reference; not the
  matching terms' ``num_boxes``); named ``tgt_loss_ce``, ``tgt_loss_bbox``,
  ``tgt_loss_giou`` (and ``tgt_class_error`` for logs), with ``_0``, ``_1``, ... for the earlier
  decoder layers, weighted as their matching counterparts (``denoising_weight_dict``).

How the model gets the targets: ``DABDETR.forward(images, mask, targets=targets)`` in training;
its output then carries the denoising part under ``"dn"`` (``split_outputs``), which
``DenoisingFocalSetCriterion`` (the focal set criterion plus these terms) reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

from .decoder_parts import inverse_sigmoid
from .focal_criterion import FocalSetCriterion, sigmoid_focal_loss

#: the denoising loss terms, each the matching term's name with this prefix
PREFIX = "tgt_"
#: the anchors' logit clamps as DAB-DETR's
INVERSE_SIGMOID_EPS = 1e-3


@dataclass
class NoisedTargets:
    """The batch's ground truth repeated ``groups`` times (group-major, then image, then target)
    and its noised copies; ``query_index`` places each copy in the denoising part."""

    labels: torch.Tensor  # (N,) int64, noised
    boxes: torch.Tensor  # (N, 4) noised, clamped to [0, 1]
    known_labels: torch.Tensor  # (N,) the targets' labels
    known_boxes: torch.Tensor  # (N, 4) the targets' boxes
    batch_index: torch.Tensor  # (N,) the image of each copy
    query_index: torch.Tensor  # (N,) its position among the denoising queries
    groups: int
    single_pad: int  # the largest target count of the batch: the length of one group

    @property
    def pad_size(self) -> int:
        """The number of denoising queries (groups x single_pad)."""
        return self.groups * self.single_pad


def known_targets(targets: Sequence[dict], groups: int) -> NoisedTargets:
    """The un-noised copies and their places (``labels``/``boxes`` equal the known ones)."""
    if groups < 1:
        raise ValueError(f"denoising needs at least one group, got {groups}")
    counts = [len(t["labels"]) for t in targets]
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    labels = torch.cat([t["labels"].reshape(-1).long() for t in targets]) if targets else \
        torch.zeros(0, dtype=torch.int64, device=device)
    boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets]) if targets else torch.zeros(0, 4, device=device)
    image = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(counts)]) \
        if targets else torch.zeros(0, dtype=torch.int64, device=device)
    within = torch.cat([torch.arange(n, device=device) for n in counts]) if targets else image
    single_pad = max(counts, default=0)
    query = torch.cat([within + single_pad * g for g in range(groups)])
    labels, boxes = labels.repeat(groups), boxes.repeat(groups, 1)
    return NoisedTargets(labels=labels, boxes=boxes, known_labels=labels, known_boxes=boxes,
                         batch_index=image.repeat(groups), query_index=query, groups=groups, single_pad=single_pad)


def noise_targets(targets: Sequence[dict], groups: int, label_noise: float, box_noise: float,
                  num_classes: int) -> NoisedTargets:
    """``groups`` noised copies of ``targets`` (per image ``labels`` and normalised cx, cy, w, h
    ``boxes``), drawn from torch's global generator on the targets' device (see the module
    docstring)."""
    known = known_targets(targets, groups)
    labels, boxes = known.known_labels.clone(), known.known_boxes.clone()
    if label_noise > 0:
        flip = torch.rand_like(labels.float())
        chosen = torch.nonzero(flip < label_noise).view(-1)
        labels.scatter_(0, chosen, torch.randint_like(chosen, 0, num_classes))
    if box_noise > 0:
        spread = torch.cat([boxes[:, 2:] / 2, boxes[:, 2:]], dim=1)
        boxes = (boxes + (torch.rand_like(boxes) * 2 - 1.0) * spread * box_noise).clamp(min=0.0, max=1.0)
    known.labels, known.boxes = labels, boxes
    return known


def attention_mask(num_queries: int, groups: int, target_counts: Sequence[int],
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The decoder self-attention mask, (P + Q, P + Q) bool, True where query i may not attend
    to key j, for ``num_queries`` (Q, patterns included) matching queries after P = groups x
    max(target_counts) denoising queries."""
    single = max(target_counts, default=0)
    pad = groups * single
    size = pad + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[pad:, :pad] = True  # the matching queries do not see the ground truth
    for g in range(groups):  # nor does a group see the others
        mask[g * single:(g + 1) * single, :g * single] = True
        mask[g * single:(g + 1) * single, (g + 1) * single:pad] = True
    return mask


def denoising_queries(noised: NoisedTargets, label_enc: torch.nn.Embedding, batch_size: int):
    """(content (B, P, C), anchor logits (B, P, 4)) of the denoising queries; C is label_enc's
    width + 1 (the indicator, 1 here)."""
    weight = label_enc.weight
    pad = noised.pad_size
    content = weight.new_zeros(batch_size, pad, weight.shape[1] + 1)
    anchors = weight.new_zeros(batch_size, pad, 4)
    if len(noised.labels):
        idx = (noised.batch_index.to(weight.device), noised.query_index.to(weight.device))
        embedded = label_enc(noised.labels.to(weight.device))
        content[idx] = torch.cat([embedded, embedded.new_ones(len(embedded), 1)], dim=1)
        anchors[idx] = inverse_sigmoid(noised.boxes.to(weight), INVERSE_SIGMOID_EPS)
    return content, anchors


def matching_content(label_enc: torch.nn.Embedding, num_classes: int) -> torch.Tensor:
    """(C,) the content every matching query starts from: label_enc(num_classes), indicator 0."""
    row = label_enc.weight[num_classes]
    return torch.cat([row, row.new_zeros(1)])


def split_outputs(logits: torch.Tensor, boxes: torch.Tensor, noised: NoisedTargets, aux_loss: bool):
    """(layers, B, P + Q, ...) logits and boxes -> (matching logits, matching boxes, the denoising
    part: a dict of ``pred_logits``, ``pred_boxes`` (B, P, ...; with ``aux_outputs`` of the
    earlier layers when ``aux_loss``) and the known assignment ``labels``, ``boxes``,
    ``batch_index``, ``query_index``)."""
    pad = noised.pad_size
    dn_logits, dn_boxes = logits[:, :, :pad], boxes[:, :, :pad]
    part = {"pred_logits": dn_logits[-1], "pred_boxes": dn_boxes[-1],
            "labels": noised.known_labels, "boxes": noised.known_boxes,
            "batch_index": noised.batch_index, "query_index": noised.query_index}
    if aux_loss:
        part["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(dn_logits[:-1], dn_boxes[:-1])]
    return logits[:, :, pad:], boxes[:, :, pad:], part


def _layer_terms(outputs: dict, part: dict, focal_alpha: float) -> dict:
    device = outputs["pred_logits"].device
    idx = (part["batch_index"].to(device), part["query_index"].to(device))
    logits = outputs["pred_logits"].float()[idx]  # (N, C)
    src = outputs["pred_boxes"].float()[idx]
    labels = part["labels"].to(device)
    tgt = part["boxes"].to(device).float()
    n = len(labels)
    onehot = torch.zeros(1, n, logits.shape[-1] + 1, dtype=logits.dtype, device=device)
    onehot.scatter_(2, labels.view(1, n, 1), 1)
    losses = {"tgt_loss_ce": sigmoid_focal_loss(logits[None], onehot[..., :-1], n, focal_alpha) * n}
    with torch.no_grad():
        losses["tgt_class_error"] = 100.0 - 100.0 * (logits.argmax(-1) == labels).float().mean()
    giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
    losses["tgt_loss_bbox"] = F.l1_loss(src, tgt, reduction="sum") / n
    losses["tgt_loss_giou"] = (1 - giou).sum() / n
    return losses


def _zeros(device) -> dict:
    z = torch.zeros((), device=device)
    return {"tgt_loss_ce": z, "tgt_class_error": z, "tgt_loss_bbox": z, "tgt_loss_giou": z}


def denoising_losses(outputs: dict, focal_alpha: float) -> dict:
    """The denoising terms of a model's ``outputs`` (their ``"dn"`` part; zeros, as the reference,
    when there is none: evaluation, or a batch without targets), for the last layer and, suffixed
    ``_i``, for each auxiliary output of the matching part."""
    part = outputs.get("dn")
    aux = len(outputs.get("aux_outputs", []))
    device = outputs["pred_logits"].device
    have = part is not None and len(part["labels"]) > 0
    losses = _layer_terms(part, part, focal_alpha) if have else _zeros(device)
    for i in range(aux):
        layer = _layer_terms(part["aux_outputs"][i], part, focal_alpha) if have else _zeros(device)
        losses.update({f"{k}_{i}": v for k, v in layer.items()})
    return losses


def denoising_weight_dict(weight_dict: dict) -> dict:
    """The weights of the denoising terms: each matching loss term's (auxiliary ones included),
    under its ``tgt_`` name."""
    return {PREFIX + k: v for k, v in weight_dict.items() if k.startswith("loss_")}


class DenoisingFocalSetCriterion(FocalSetCriterion):
    """``FocalSetCriterion`` (the matching terms, on the matching queries' outputs) plus the
    denoising terms of the outputs' ``dn`` part (``denoising_losses``)."""

    def forward(self, outputs: dict, targets: list[dict], num_boxes: float | None = None) -> dict:
        losses = super().forward(outputs, targets, num_boxes)
        losses.update(denoising_losses(outputs, self.focal_alpha))
        return losses
