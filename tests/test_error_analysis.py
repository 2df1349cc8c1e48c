"""Error analysis: each constructed detection lands in the TIDE error type it was built as, fixes
add the AP the hand-fixed detections have, per-class AP equals the evaluator's, the confusion
matrix counts the constructed matches, and the report holds every model."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from detr_irpe.analysis.error_analysis import ResultsError, check_results, confusion_matrix, per_class, read_results
from detr_irpe.analysis.error_report import FIGURES, analyse, to_json, write_figures
from detr_irpe.analysis.tide import ap50, classify_errors, error_breakdown
from detr_irpe.evaluation.coco import evaluate_detections, load_ground_truth


def _obj(i, image, cat, box):
    return {"id": i, "image_id": image, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}


GT = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
      "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
      "annotations": [_obj(1, 1, 1, [10, 10, 30, 30]), _obj(2, 1, 2, [60, 60, 30, 30]),
                      _obj(3, 2, 1, [0, 0, 20, 20]), _obj(4, 2, 2, [50, 0, 40, 40])]}
# one detection per error type, by construction (the comment names the object it concerns)
DETS = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9},  # found: object 1
        {"image_id": 1, "category_id": 1, "bbox": [11, 11, 30, 30], "score": 0.8},  # duplicate of object 1
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.7},  # classification: object 2
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.6},  # localisation: object 3, IoU .39
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 30], "score": 0.55},  # both: object 3, IoU .25
        {"image_id": 2, "category_id": 1, "bbox": [70, 60, 30, 30], "score": 0.5}]  # background
# object 4 is found by no detection and pointed at by no classification or localisation error: missed


def test_each_detection_is_the_error_it_was_built_as():
    errors, found, tp = classify_errors(GT, DETS)
    kinds = {e.detection: (e.kind, e.target) for e in errors if e.detection is not None}
    assert kinds == {1: ("duplicate", 1), 2: ("classification", 2), 3: ("localisation", 3), 4: ("both", None),
                     5: ("background", None)}
    assert [e.target for e in errors if e.kind == "missed"] == [4]
    assert found == {1} and tp == 1


def test_fixes_add_the_ap_of_the_hand_fixed_detections():
    b = error_breakdown(GT, DETS)
    assert b.counts == {"classification": 1, "localisation": 1, "both": 1, "duplicate": 1, "background": 1,
                        "missed": 1}
    assert b.ap50 == pytest.approx(ap50(GT, DETS))
    recoloured = [dict(d, category_id=2) if i == 2 else d for i, d in enumerate(DETS)]
    assert b.delta_ap50["classification"] == pytest.approx(ap50(GT, recoloured) - b.ap50)
    moved = [dict(d, bbox=[0, 0, 20, 20]) if i == 3 else d for i, d in enumerate(DETS)]
    assert b.delta_ap50["localisation"] == pytest.approx(ap50(GT, moved) - b.ap50)
    without_missed = {**GT, "annotations": GT["annotations"][:3]}
    assert b.delta_ap50["missed"] == pytest.approx(ap50(without_missed, DETS) - b.ap50)
    for kind, i in (("duplicate", 1), ("both", 4), ("background", 5)):
        assert b.delta_ap50[kind] == pytest.approx(ap50(GT, DETS[:i] + DETS[i + 1:]) - b.ap50)
    assert b.delta_ap50["classification"] > 0 and b.delta_ap50["localisation"] > 0


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


def test_report_and_figures_hold_every_model(tmp_path):
    analyses = [analyse("one", GT, DETS), analyse("two", GT, DETS[:3])]
    data = json.loads(json.dumps(to_json(analyses)))
    assert list(data) == ["one", "two"]
    assert data["two"]["errors"]["counts"]["missed"] == 2 and data["one"]["per_class"][0]["APl"] is None
    for path in write_figures(analyses, tmp_path):
        assert path.name in FIGURES
        with Image.open(path) as im:
            assert len(np.unique(np.asarray(im.convert("L")))) > 10


def test_bad_results_are_named(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    with pytest.raises(ResultsError, match="detection 0 has no 'category_id'"):
        read_results(bad)
    with pytest.raises(ResultsError, match="image_id 9 is not in the ground truth"):
        check_results(GT, [dict(DETS[0], image_id=9)], "r.json")
