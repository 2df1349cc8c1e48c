"""TIDE-style error types: each constructed detection lands in the type it was built as, and each
fix adds the AP50 the hand-fixed detections have."""

import pytest
from error_cases import DETS, GT

from detr_irpe.analysis.tide import ap50, classify_errors, error_breakdown


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
