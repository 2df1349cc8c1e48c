"""Where a detector's AP goes: per-class AP (overall, at IoU 0.5 and 0.75, by object size),
precision-recall curves per class, and a confusion matrix between the classes and background at
IoU 0.5. The breakdown of the errors themselves is in detr_irpe.analysis.tide.

Inputs are a COCO ground-truth dict and a COCO results list (``image_id``, ``category_id``,
``bbox`` as x, y, width, height, ``score``); the evaluation is faster-coco-eval's, its extras
(``Curves``, ``PreviewResults``) give the curves and the matrix.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UserError

#: the IoU at which the curves and the confusion matrix count a detection as a match
MATCH_IOU = 0.5
#: detections below this score are left out of the confusion matrix (the curves use all)
SCORE_THRESHOLD = 0.3
#: the COCO area ranges, in the order of COCOeval's ``areaRng``
SIZES = ("all", "small", "medium", "large")
#: names of the per-class metrics, and where each is read in COCOeval's precision array:
#: (IoU threshold index or None for the mean over 0.5:0.95, area index)
CLASS_METRICS = {"AP": (None, 0), "AP50": (0, 0), "AP75": (5, 0), "APs": (None, 1), "APm": (None, 2),
                 "APl": (None, 3)}


class ResultsError(UserError):
    """A results file that cannot be analysed (missing, not JSON, not a COCO results list)."""


@dataclass
class ClassReport:
    """Everything the analysis measures of one category."""

    category_id: int
    name: str
    ground_truth: int
    metrics: dict = field(default_factory=dict)  # CLASS_METRICS name -> value (NaN where undefined)
    recall: list = field(default_factory=list)  # precision-recall curve at MATCH_IOU
    precision: list = field(default_factory=list)
    scores: list = field(default_factory=list)


@dataclass
class ConfusionMatrix:
    """Rows: ground-truth class, then ``background`` (detections matching no object); columns:
    predicted class, then ``missed`` (objects no detection matched). Matching is class-agnostic at
    MATCH_IOU over detections with score >= ``score_threshold``."""

    names: list
    counts: np.ndarray
    score_threshold: float


def read_results(path: str | Path) -> list[dict]:
    """A COCO results JSON file (a list of detections), checked for the keys the analysis reads."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"results file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, list):
        raise ResultsError(f"results file {path}: expected a list of detections, got {type(data).__name__}")
    for i, det in enumerate(data):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if not isinstance(det, dict) or k not in det]
        if missing:
            raise ResultsError(f"results file {path}: detection {i} has no '{missing[0]}' (COCO results format: "
                               f"image_id, category_id, bbox [x, y, w, h], score)")
    return data


def check_results(gt: dict, results: list[dict], source: str) -> None:
    """Refuse detections of images or categories the ground truth does not have."""
    images = {img["id"] for img in gt["images"]}
    cats = {c["id"] for c in gt["categories"]}
    for det in results:
        if det["image_id"] not in images:
            raise ResultsError(f"{source}: image_id {det['image_id']} is not in the ground truth")
        if det["category_id"] not in cats:
            raise ResultsError(f"{source}: category_id {det['category_id']} is not in the ground truth "
                               f"({', '.join(map(str, sorted(cats)))})")


def coco_objects(gt: dict, results: list[dict]):
    """faster-coco-eval COCO objects of the ground truth and the detections (fresh copies: the
    evaluation writes into the annotations)."""
    from faster_coco_eval import COCO

    quiet = lambda *a, **k: None  # noqa: E731
    coco_gt = COCO(json.loads(json.dumps(gt)), print_function=quiet)
    coco_dt = coco_gt.loadRes(json.loads(json.dumps(results))) if results else COCO(print_function=quiet)
    if not results:  # an empty results list still needs the images and categories
        coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
        coco_dt.createIndex()
    return coco_gt, coco_dt


def coco_eval(gt: dict, results: list[dict], iou_thresholds=None):
    """An evaluated and accumulated faster-coco-eval COCOeval of boxes (``iou_thresholds``
    replaces 0.5:0.95)."""
    from faster_coco_eval import COCOeval_faster

    coco_gt, coco_dt = coco_objects(gt, results)
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
    if iou_thresholds is not None:
        ev.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def mean_precision(precision: np.ndarray) -> float:
    """The mean of the defined entries of a COCO precision slice (NaN when none is defined)."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else math.nan


def per_class(gt: dict, results: list[dict]) -> list[ClassReport]:
    """Per-class AP, AP50, AP75 and AP by size (COCO's definitions, 100 detections per image),
    and the precision-recall curve at MATCH_IOU, for every category of the ground truth."""
    from faster_coco_eval.extra import Curves

    ev = coco_eval(gt, results)
    precision = ev.eval["precision"]  # [IoU, recall, category, area, max detections]
    cat_ids = list(ev.params.catIds)
    counts = {c: 0 for c in cat_ids}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    reports = []
    for k, cat in enumerate(cat_ids):
        cat = int(cat)
        rep = ClassReport(cat, names.get(cat, str(cat)), counts.get(cat, 0))
        for metric, (t, area) in CLASS_METRICS.items():
            rep.metrics[metric] = mean_precision(precision[:, :, k, area, -1] if t is None
                                                 else precision[t, :, k, area, -1])
        reports.append(rep)
    if results:
        coco_gt, coco_dt = coco_objects(gt, results)
        with contextlib.redirect_stdout(io.StringIO()):
            curves = Curves(coco_gt, coco_dt, iou_tresh=MATCH_IOU, useCats=True).build_curve("category_id")
        by_cat = {c["category_id"]: c for c in curves}
        for rep in reports:
            c = by_cat.get(rep.category_id)
            if c is not None:
                rep.recall = [float(v) for v in c["recall_list"]]
                rep.precision = [float(v) for v in c["precision_list"]]
                rep.scores = [float(v) for v in c["scores"]]
    return reports


def confusion_matrix(gt: dict, results: list[dict], score_threshold: float = SCORE_THRESHOLD) -> ConfusionMatrix:
    """The class / background confusion at MATCH_IOU (faster-coco-eval's class-agnostic
    matching), as a (classes + 1) x (classes + 1) count matrix."""
    from faster_coco_eval.extra import PreviewResults

    names = [str(c.get("name", c["id"])) for c in gt["categories"]]
    k = len(names)
    full = np.zeros((k + 1, k + 1), dtype=np.int64)
    kept = [d for d in results if d["score"] >= score_threshold]
    if kept:
        coco_gt, coco_dt = coco_objects(gt, kept)
        with contextlib.redirect_stdout(io.StringIO()):
            cm = PreviewResults(coco_gt, coco_dt, iou_tresh=MATCH_IOU, useCats=False).compute_confusion_matrix()
        order = list(coco_gt.cats)  # the row order PreviewResults uses
        index = [order.index(c["id"]) for c in gt["categories"]]
        cm = cm[index]
        full[:k, :k] = cm[:, index]
        full[k, :k] = cm[:, -2]  # false positives, by predicted class
        full[:k, k] = cm[:, -1]  # false negatives, by true class
    else:
        for a in gt["annotations"]:
            if not a.get("iscrowd", 0):
                full[[c["id"] for c in gt["categories"]].index(a["category_id"]), k] += 1
    return ConfusionMatrix(names + ["background"], full, score_threshold)
