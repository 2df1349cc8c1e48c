"""Detections as the COCO tools take them. Detections arrive as
:class:`~detr_irpe.models.postprocess.PostProcess` gives them: per image a dict with ``scores``
(N,), ``labels`` (N,) and ``boxes`` (N, 4) in absolute xyxy pixels of the original image; they are
stored as COCO xywh arrays and written as COCO results entries. DETR's class indices are COCO
category ids, so ``category_id = label``. All detections are kept (no NMS, no score threshold),
as the reference does; COCOeval itself keeps the 100 best per image."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..core.io import atomic_write_json

#: one image's detections as stored: (boxes xywh float64 (N, 4), scores float64 (N,), labels int64 (N,))
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def convert_detections(det: Mapping) -> Detections:
    """PostProcess output (xyxy) -> stored arrays (COCO xywh)."""
    try:
        scores = _to_numpy(det["scores"]).astype(np.float64).reshape(-1)
        labels = _to_numpy(det["labels"]).astype(np.int64).reshape(-1)
        boxes = _to_numpy(det["boxes"]).astype(np.float64).reshape(-1, 4)
    except KeyError as exc:
        raise KeyError(f"a detection dict needs 'scores', 'labels' and 'boxes'; {exc} is missing") from None
    if not len(scores) == len(labels) == len(boxes):
        raise ValueError(f"detections of one image disagree in length: {len(scores)} scores, "
                         f"{len(labels)} labels, {len(boxes)} boxes")
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    return xywh, scores, labels


def results_entries(dets_by_image: Mapping[int, Detections]) -> list[dict]:
    """COCO results entries built fresh on every call: the COCO tools' loadRes writes into the
    dicts it is given (id, area, segmentation), so they must not be shared between runs."""
    out: list[dict] = []
    for image_id, (xywh, scores, labels) in dets_by_image.items():
        image_id = int(image_id)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            out.append({"image_id": image_id, "category_id": label, "bbox": box, "score": score})
    return out


def results_json(detections_by_image: Mapping[int, Mapping]) -> list[dict]:
    """The COCO results list ({image_id, category_id, bbox [x, y, w, h], score}) of detections
    given per image id as PostProcess dicts (xyxy boxes)."""
    return results_entries({int(i): convert_detections(d) for i, d in detections_by_image.items()})


def write_results(path: str | os.PathLike, results) -> Path:
    """Write a COCO results JSON atomically. ``results`` is a results list (see
    :func:`results_json`) or detections per image id as PostProcess dicts."""
    if isinstance(results, Mapping):
        results = results_json(results)
    return atomic_write_json(path, list(results))
