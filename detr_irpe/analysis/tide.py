"""The errors behind a detector's AP50, in the way TIDE (Bolya et al., ECCV 2020) defines them,
each with the AP50 it would add if it alone were fixed.

A detection that COCO's class-aware matching at IoU ``t_f`` (0.5) leaves unmatched is, by its
best IoU with an object of its own class and with an object of another class:

- duplicate: >= t_f with an object of its class that a higher-scoring detection matched;
- classification: >= t_f with an object of another class;
- localisation: in [t_b, t_f) with an object of its class (t_b = 0.1);
- both: in [t_b, t_f) with an object of another class only;
- background: below t_b with every object.

An object no detection matched, and that no classification or localisation error points at, is
missed. Fixing means: give a classification error the object's class, or a localisation error
the object's box (or drop it where the object is already found); drop duplicates, "both" and
background errors; and take missed objects out of the ground truth. AP50 is computed by
faster-coco-eval before and after each fix.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .error_analysis import coco_eval, coco_objects, mean_precision

ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")
FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1


@dataclass
class ErrorBreakdown:
    """Counts of each error type, and the AP50 each would add if fixed alone (fractions)."""

    ap50: float
    counts: dict = field(default_factory=dict)
    delta_ap50: dict = field(default_factory=dict)
    true_positives: int = 0
    detections: int = 0
    ground_truth: int = 0


@dataclass
class Error:
    kind: str
    detection: int | None  # index in the results list
    target: int | None  # ground-truth annotation id the error points at


def ap50(gt: dict, results: list[dict]) -> float:
    """AP at IoU 0.5 averaged over the categories that have objects (COCO's 101 recall points,
    100 detections per image)."""
    ev = coco_eval(gt, results, iou_thresholds=[FOREGROUND_IOU])
    per_cat = [mean_precision(ev.eval["precision"][0, :, k, 0, -1]) for k in range(len(ev.params.catIds))]
    per_cat = [v for v in per_cat if not np.isnan(v)]
    return float(np.mean(per_cat)) if per_cat else float("nan")


def _box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of x, y, w, h boxes, |a| x |b|."""
    import torch
    from torchvision.ops import box_iou

    to_xyxy = lambda b: torch.as_tensor(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1),  # noqa: E731
                                        dtype=torch.float64)
    return box_iou(to_xyxy(boxes_a), to_xyxy(boxes_b)).numpy()


def classify_errors(gt: dict, results: list[dict], t_f: float = FOREGROUND_IOU,
                    t_b: float = BACKGROUND_IOU) -> tuple[list[Error], set, int]:
    """The errors of ``results``, the ids of the objects that were found, and the count of true
    positives (COCO matching at ``t_f`` by faster-coco-eval)."""
    from faster_coco_eval import COCOeval_faster

    coco_gt, coco_dt = coco_objects(gt, results)
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", extra_calc=True, print_function=lambda *a, **k: None)
    ev.params.iouThrs = np.asarray([t_f])
    ev.params.maxDets = [max(100, len(results))]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.evaluate()
    ev.accumulate()
    dt_anns = sorted(coco_dt.anns.values(), key=lambda a: a["id"])  # loadRes numbers them 1.. in list order
    found = {a["gt_id"] for a in dt_anns if a.get("gt_id") is not None}
    objects = defaultdict(list)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            objects[a["image_id"]].append(a)
    errors: list[Error] = []
    fps = defaultdict(list)
    for i, a in enumerate(dt_anns):
        if a.get("gt_id") is None:
            fps[a["image_id"]].append((i, a))
    for image_id, dets in fps.items():
        objs = objects.get(image_id, [])
        if not objs:
            errors += [Error("background", i, None) for i, _ in dets]
            continue
        ious = _box_iou(np.array([d["bbox"] for _, d in dets], dtype=np.float64),
                        np.array([o["bbox"] for o in objs], dtype=np.float64))
        classes = np.array([o["category_id"] for o in objs])
        for row, (i, det) in zip(ious, dets):
            same = classes == det["category_id"]
            best_same = int(np.argmax(np.where(same, row, -1))) if same.any() else None
            best_other = int(np.argmax(np.where(~same, row, -1))) if (~same).any() else None
            iou_same = row[best_same] if best_same is not None else 0.0
            iou_other = row[best_other] if best_other is not None else 0.0
            if iou_same >= t_f:
                errors.append(Error("duplicate", i, objs[best_same]["id"]))
            elif iou_other >= t_f:
                errors.append(Error("classification", i, objs[best_other]["id"]))
            elif iou_same >= t_b:
                errors.append(Error("localisation", i, objs[best_same]["id"]))
            elif iou_other >= t_b:
                errors.append(Error("both", i, None))
            else:
                errors.append(Error("background", i, None))
    pointed = {e.target for e in errors if e.kind in ("classification", "localisation")}
    errors += [Error("missed", None, a["id"]) for objs in objects.values() for a in objs
               if a["id"] not in found and a["id"] not in pointed]
    return errors, found, len(found)


def fixed(gt: dict, results: list[dict], errors: list[Error], kind: str, found: set) -> tuple[dict, list[dict]]:
    """Ground truth and results with every error of ``kind`` fixed (see the module doc)."""
    if kind == "missed":
        gone = {e.target for e in errors if e.kind == "missed"}
        gt = {**gt, "annotations": [a for a in gt["annotations"] if a["id"] not in gone]}
        return gt, results
    by_id = {a["id"]: a for a in gt["annotations"]}
    results = copy.deepcopy(results)
    drop = set()
    claimed = set(found)
    for e in sorted((e for e in errors if e.kind == kind), key=lambda e: -results[e.detection]["score"]):
        if kind in ("classification", "localisation"):
            if e.target in claimed:  # the object is found already: the detection is a duplicate
                drop.add(e.detection)
                continue
            claimed.add(e.target)
            obj = by_id[e.target]
            if kind == "classification":
                results[e.detection]["category_id"] = obj["category_id"]
            else:
                results[e.detection]["bbox"] = list(obj["bbox"])
        else:
            drop.add(e.detection)
    return gt, [r for i, r in enumerate(results) if i not in drop]


def error_breakdown(gt: dict, results: list[dict]) -> ErrorBreakdown:
    """Counts of each error type of ``results`` and the AP50 fixing each alone would add."""
    base = ap50(gt, results)
    errors, found, tp = classify_errors(gt, results)
    out = ErrorBreakdown(base, true_positives=tp, detections=len(results),
                         ground_truth=sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0)))
    for kind in ERROR_TYPES:
        out.counts[kind] = sum(1 for e in errors if e.kind == kind)
        out.delta_ap50[kind] = ap50(*fixed(gt, results, errors, kind, found)) - base if out.counts[kind] else 0.0
    return out
