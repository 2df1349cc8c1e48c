"""COCO box metrics of stored detections: COCOeval (bbox) on the chosen backend, AP per
category, and :func:`evaluate_detections` for a whole set of detections in one call."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..data.errors import DatasetError
from .backends import backend_classes, coco_from_dataset, load_ground_truth, quiet
from ..core.names import AP_NAMES, METRIC_NAMES
from .results import Detections, convert_detections, results_entries

logger = logging.getLogger(__name__)


def _undefined_metrics(cat_names: Mapping[int, str] | None) -> dict:
    metrics: dict[str, Any] = {name: -1.0 for name in METRIC_NAMES}
    if cat_names is not None:
        metrics["per_category"] = {name: -1.0 for name in cat_names.values()}
    return metrics


def _category_names(coco_gt) -> dict[int, str]:
    """Category id -> display name; a repeated name gets its id appended so none is lost."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for cat in sorted(coco_gt.dataset["categories"], key=lambda c: c["id"]):
        name = str(cat.get("name", cat["id"]))
        if name in seen:
            name = f"{name} (id {cat['id']})"
        seen.add(name)
        names[int(cat["id"])] = name
    return names


def run_cocoeval(coco_gt, dets_by_image: Mapping[int, Detections], backend: str, per_category: bool) -> dict:
    """COCOeval (bbox) over the images in ``dets_by_image`` (an image with no detections still
    counts: its objects are misses). Returns the metrics dict."""
    _, eval_cls = backend_classes(backend)
    cat_names = _category_names(coco_gt) if per_category else None
    img_ids = sorted(int(i) for i in dets_by_image)
    if not img_ids:
        # nothing was evaluated: every number is undefined, as COCOeval reports an empty set
        logger.warning("COCO evaluation: no images were evaluated; all metrics are -1")
        return _undefined_metrics(cat_names)
    anns = results_entries(dets_by_image)
    t0 = time.perf_counter()
    with quiet():
        if anns:
            coco_dt = coco_gt.loadRes(anns)
        else:
            # pycocotools' loadRes fails on an empty list (it reads anns[0]); an empty results
            # set over the ground truth's images and categories evaluates to AP 0
            coco_dt = coco_from_dataset(
                {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                 "annotations": []}, backend)
        kwargs = {"print_function": lambda *a, **k: None} if backend == "faster_coco_eval" else {}
        coco_eval = eval_cls(coco_gt, coco_dt, iouType="bbox", **kwargs)
        # like the reference, evaluate only the images that were seen (a partial pass, e.g. a
        # quick run with few steps, is then scored on its own images)
        coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = np.asarray(coco_eval.stats, dtype=np.float64)[: len(METRIC_NAMES)]
    metrics: dict[str, Any] = {name: float(v) for name, v in zip(METRIC_NAMES, stats)}
    if per_category:
        metrics["per_category"] = _per_category_ap(coco_eval, cat_names)
    logger.info("COCO bbox (%s, %d images, %d detections, %.1fs): %s", backend, len(img_ids), len(anns),
                time.perf_counter() - t0,
                " ".join(f"{k} {metrics[k]:.3f}" for k in AP_NAMES))
    return metrics


def _per_category_ap(coco_eval, cat_names: Mapping[int, str]) -> dict[str, float]:
    """AP @[.50:.95], all areas, 100 detections per category; -1 for a category without ground
    truth in the evaluated images (COCOeval's mark for undefined)."""
    # precision is indexed [IoU threshold, recall threshold, category, area range, max dets]
    precision = np.asarray(coco_eval.eval["precision"])
    cat_ids = list(coco_eval.params.catIds)
    out = {}
    for cat_id, name in cat_names.items():
        if cat_id not in cat_ids:
            out[name] = -1.0
            continue
        p = precision[:, :, cat_ids.index(cat_id), 0, -1]
        valid = p[p > -1]
        out[name] = float(valid.mean()) if valid.size else -1.0
    return out


def evaluate_detections(coco_gt, detections_by_image: Mapping[int, Mapping], backend: str = "faster_coco_eval",
                        per_category: bool = False) -> dict:
    """COCO box metrics of detections given per image id as PostProcess dicts (xyxy boxes) in one
    call, without the accumulate API; the images evaluated are the keys given."""
    gt = load_ground_truth(coco_gt, backend)
    dets = {}
    for image_id, det in detections_by_image.items():
        image_id = int(image_id)
        if image_id not in gt.imgs:
            raise DatasetError(f"detections of image id {image_id}, which is not in the COCO ground truth")
        dets[image_id] = convert_detections(det)
    return run_cocoeval(gt, dets, backend, per_category)
