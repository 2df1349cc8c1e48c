"""Error analysis: per-class AP equals the evaluator's, the confusion matrix counts the constructed
matches, and bad results files are named."""

import json
import math

import numpy as np
import pytest
from error_cases import DETS, GT

from detr_irpe.analysis.error_analysis import ResultsError, check_results, confusion_matrix, per_class, read_results
from detr_irpe.evaluation.backends import load_ground_truth
from detr_irpe.evaluation.metrics import evaluate_detections


def test_per_class_ap_equals_the_evaluators():
    rng = np.random.default_rng(0)
    dets = [dict(d, score=float(s)) for d, s in zip(DETS, rng.uniform(0.1, 1, len(DETS)))]
    reports = per_class(GT, dets)
    metrics = evaluate_detections(load_ground_truth(GT), {
        i: {"scores": np.array([d["score"] for d in dets if d["image_id"] == i]),
            "labels": np.array([d["category_id"] for d in dets if d["image_id"] == i]),
            "boxes": np.array([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]
                               for d in dets if d["image_id"] == i])} for i in (1, 2)}, per_category=True)
    assert [r.name for r in reports] == ["a", "b"] and [r.ground_truth for r in reports] == [2, 2]
    for r in reports:
        assert r.metrics["AP"] == pytest.approx(metrics["per_category"][r.name])
        assert len(r.recall) == len(r.precision) > 10 and max(r.recall) <= 1
    assert math.isnan(reports[0].metrics["APl"])  # no large object


def test_confusion_matrix_counts_the_matches():
    cm = confusion_matrix(GT, DETS, score_threshold=0.3)
    assert cm.names == ["a", "b", "background"]
    # a->a (object 1), b predicted a (object 2); objects 3 and 4 missed; duplicate, loc, both, background unmatched
    assert cm.counts.tolist() == [[1, 0, 1], [1, 0, 1], [3, 1, 0]]
    assert confusion_matrix(GT, DETS, score_threshold=0.95).counts[:2, 2].tolist() == [2, 2]


def test_bad_results_are_named(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    with pytest.raises(ResultsError, match="detection 0 has no 'category_id'"):
        read_results(bad)
    with pytest.raises(ResultsError, match="image_id 9 is not in the ground truth"):
        check_results(GT, [dict(DETS[0], image_id=9)], "r.json")
