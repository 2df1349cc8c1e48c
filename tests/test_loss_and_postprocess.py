"""Hungarian matching, the set loss and post-processing, against hand computations."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

from detr_irpe.models.criterion import SetCriterion, build_weight_dict
from detr_irpe.models.matcher import HungarianMatcher
from detr_irpe.models.postprocess import PostProcess


def _random_case(seed, B=2, Q=5, C=4, sizes=(3, 2)):
    g = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(B, Q, C + 1, generator=g),
               "pred_boxes": torch.rand(B, Q, 4, generator=g) * 0.5 + 0.1}
    targets = [{"labels": torch.randint(0, C, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.1}
               for n in sizes]
    return outputs, targets


def _cost(outputs, targets, b, q, t):
    prob = outputs["pred_logits"][b, q].softmax(-1)[targets[b]["labels"][t]]
    l1 = (outputs["pred_boxes"][b, q] - targets[b]["boxes"][t]).abs().sum()
    giou = generalized_box_iou(box_convert(outputs["pred_boxes"][b, q][None], "cxcywh", "xyxy"),
                               box_convert(targets[b]["boxes"][t][None], "cxcywh", "xyxy"))[0, 0]
    return float(-1 * prob + 5 * l1 - 2 * giou)


@pytest.mark.parametrize("seed", range(5))
def test_matcher_finds_the_minimum_cost_assignment(seed):
    outputs, targets = _random_case(seed)
    indices = HungarianMatcher(1, 5, 2)(outputs, targets)
    for b, (src, tgt) in enumerate(indices):
        n = len(targets[b]["labels"])
        assert len(src) == len(tgt) == n and len(set(src.tolist())) == n
        got = sum(_cost(outputs, targets, b, q, t) for q, t in zip(src.tolist(), tgt.tolist()))
        best = min(sum(_cost(outputs, targets, b, q, t) for t, q in enumerate(perm))
                   for perm in itertools.permutations(range(5), n))
        assert abs(got - best) < 1e-5


def test_matcher_handles_images_without_objects():
    outputs, targets = _random_case(0, sizes=(0, 2))
    indices = HungarianMatcher()(outputs, targets)
    assert len(indices[0][0]) == 0 and len(indices[1][0]) == 2
    outputs, targets = _random_case(0, sizes=(0, 0))
    assert all(len(i[0]) == 0 for i in HungarianMatcher()(outputs, targets))


def test_loss_terms_equal_a_hand_computation():
    outputs, targets = _random_case(1)
    crit = SetCriterion(4, HungarianMatcher(1, 5, 2), build_weight_dict(1, 5, 2, 0), eos_coef=0.1)
    losses = crit(outputs, targets)
    indices = crit.matcher(outputs, targets)
    target_classes = torch.full((2, 5), 4)
    src_boxes, tgt_boxes = [], []
    for b, (src, tgt) in enumerate(indices):
        target_classes[b, src] = targets[b]["labels"][tgt]
        src_boxes.append(outputs["pred_boxes"][b, src])
        tgt_boxes.append(targets[b]["boxes"][tgt])
    weight = torch.tensor([1, 1, 1, 1, 0.1])
    ce = F.cross_entropy(outputs["pred_logits"].reshape(-1, 5), target_classes.reshape(-1), weight)
    src, tgt = torch.cat(src_boxes), torch.cat(tgt_boxes)
    l1 = (src - tgt).abs().sum() / 5
    giou = (1 - torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))).sum() / 5
    assert torch.allclose(losses["loss_ce"], ce) and torch.allclose(losses["loss_bbox"], l1)
    assert torch.allclose(losses["loss_giou"], giou)
    pred_count = (outputs["pred_logits"].argmax(-1) != 4).sum(1).float()
    assert torch.allclose(losses["cardinality_error"], (pred_count - torch.tensor([3.0, 2.0])).abs().mean())


def test_perfect_predictions_have_zero_box_loss_and_no_errors():
    targets = [{"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])}]
    logits = torch.full((1, 4, 4), -20.0)
    logits[0, :, 3] = 20.0  # no object
    logits[0, 1] = torch.tensor([-20.0, -20, 20, -20])
    logits[0, 3] = torch.tensor([20.0, -20, -20, -20])
    boxes = torch.rand(1, 4, 4) * 0.2 + 0.1
    boxes[0, 1], boxes[0, 3] = targets[0]["boxes"][0], targets[0]["boxes"][1]
    crit = SetCriterion(3, HungarianMatcher(), build_weight_dict(1, 5, 2, 0))
    losses = crit({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert losses["loss_bbox"] < 1e-6 and losses["loss_giou"] < 1e-6 and losses["loss_ce"] < 1e-6
    assert losses["class_error"] == 0 and losses["cardinality_error"] == 0


def test_auxiliary_outputs_get_suffixed_terms_and_weights():
    outputs, targets = _random_case(2)
    outputs["aux_outputs"] = [dict(outputs), dict(outputs)]
    crit = SetCriterion(4, HungarianMatcher(), build_weight_dict(1, 5, 2, 2))
    losses = crit(outputs, targets)
    for i in (0, 1):
        for name in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error"):
            assert torch.allclose(losses[f"{name}_{i}"], losses[name])
    assert set(crit.weight_dict) == {k for k in losses if k.startswith("loss_")}
    assert crit.weight_dict["loss_bbox_1"] == 5 and crit.weight_dict["loss_giou_0"] == 2


def test_labels_outside_the_class_range_are_refused():
    outputs, targets = _random_case(0)
    targets[1]["labels"][0] = 7
    with pytest.raises(ValueError, match="label 7 outside"):
        SetCriterion(4, HungarianMatcher(), build_weight_dict(1, 5, 2, 0))(outputs, targets)


def test_postprocess_scales_boxes_to_the_original_size_and_drops_no_object():
    logits = torch.tensor([[[0.0, 5.0, 10.0], [3.0, 0.0, 0.0]]])  # 2 classes + no-object
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0]]])
    (det,) = PostProcess()({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]))
    assert torch.allclose(det["boxes"], torch.tensor([[50.0, 25, 150, 75], [0, 0, 100, 100]]))
    assert det["labels"].tolist() == [1, 0]
    p = logits.softmax(-1)[0]
    assert torch.allclose(det["scores"], torch.stack([p[0, 1], p[1, 0]]))
