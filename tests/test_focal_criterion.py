"""models/focal_criterion.py, the focal class cost of models/matcher.py and TopKPostProcess: the
sigmoid decoders' loss, matching and detections (their exactness against the reference codes is in
test_conditional_detr.py and test_dab_detr.py)."""

import math

import pytest
import torch

from detr_irpe.models.criterion import build_weight_dict
from detr_irpe.models.focal_criterion import FocalSetCriterion, sigmoid_focal_loss
from detr_irpe.models.matcher import HungarianMatcher
from detr_irpe.models.postprocess import TopKPostProcess


def _focal_by_hand(logits, onehot, alpha=0.25, gamma=2.0):
    """The focal loss of every (image, query, class) entry, one scalar at a time."""
    total = 0.0
    for x, t in zip(logits.flatten().tolist(), onehot.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
        p_t = p * t + (1 - p) * (1 - t)
        total += (alpha if t else 1 - alpha) * (1 - p_t) ** gamma * ce
    return total


def test_the_classification_loss_is_the_focal_sum_over_queries_and_classes_per_box():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    onehot = torch.zeros(2, 5, 3, dtype=torch.float64)
    onehot[0, 1, 2] = onehot[1, 4, 0] = onehot[1, 0, 1] = 1
    # the references: mean over queries, summed, divided by the box count, times the queries
    loss = sigmoid_focal_loss(logits, onehot, num_boxes=3.0, alpha=0.25) * 5
    assert float(loss) == pytest.approx(_focal_by_hand(logits, onehot) / 3.0, rel=1e-12)


def _outputs(logits, boxes):
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_the_focal_matcher_pairs_each_target_with_the_query_that_predicts_it():
    logits = torch.full((1, 3, 4), -6.0)
    logits[0, 2, 1] = 6.0   # query 2 says class 1
    logits[0, 0, 3] = 6.0   # query 0 says class 3
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.7, 0.7, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]])}]
    (rows, cols), = HungarianMatcher(2.0, 5.0, 2.0, focal_alpha=0.25)(_outputs(logits, boxes), targets)
    assert dict(zip(rows.tolist(), cols.tolist())) == {2: 0, 0: 1}


def test_the_focal_criterion_names_its_terms_and_weights_every_auxiliary_output():
    torch.manual_seed(0)
    out = _outputs(torch.randn(2, 6, 4, requires_grad=True), torch.rand(2, 6, 4) * 0.5 + 0.25)
    out["aux_outputs"] = [_outputs(torch.randn(2, 6, 4), torch.rand(2, 6, 4) * 0.5 + 0.25)]
    targets = [{"labels": torch.tensor([0, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3]])},
               {"labels": torch.tensor([], dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    weights = build_weight_dict(2.0, 5.0, 2.0, aux_layers=1)
    criterion = FocalSetCriterion(4, HungarianMatcher(2.0, 5.0, 2.0, focal_alpha=0.25), weights)
    losses = criterion(out, targets, num_boxes=2.0)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0", "class_error",
            "cardinality_error"} <= losses.keys()
    assert weights["loss_ce"] == weights["loss_ce_0"] == 2.0
    loss = sum(losses[k] * weights[k] for k in losses if k in weights)
    loss.backward()
    assert torch.isfinite(out["pred_logits"].grad).all() and out["pred_logits"].grad.abs().sum() > 0


def test_top_k_keeps_the_best_query_class_pairs_with_boxes_in_pixels():
    logits = torch.full((1, 3, 2), -5.0)
    logits[0, 1, 0], logits[0, 1, 1], logits[0, 2, 1] = 3.0, 2.0, 1.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0], [0.75, 0.25, 0.5, 0.5]]])
    det, = TopKPostProcess(num_select=3)(_outputs(logits, boxes), torch.tensor([[100, 200]]))
    assert det["labels"].tolist() == [0, 1, 1]  # query 1 gives two classes
    assert torch.allclose(det["scores"], torch.tensor([3.0, 2.0, 1.0]).sigmoid())
    assert torch.allclose(det["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert torch.allclose(det["boxes"][2], torch.tensor([100.0, 0.0, 200.0, 50.0]))
    assert len(TopKPostProcess(num_select=100)(_outputs(logits, boxes), torch.tensor([[100, 200]]))[0]["scores"]) == 6
