"""COCO boxes as the loader keeps them: XYXY, clipped to the image, with the reason each dropped
box is dropped."""

from __future__ import annotations

import numpy as np


def clean_boxes(xywh: np.ndarray, width, height) -> tuple[np.ndarray, np.ndarray]:
    """COCO ``[x, y, w, h]`` boxes as XYXY clipped to the image, and the reason each box is dropped:
    "" (kept), "nonfinite" (NaN or infinite), "empty" (width or height <= 0 as annotated) or
    "outside" (nothing left inside the image after clipping). ``width``/``height`` may be per box."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(xywh).all(axis=1)
    positive = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    with np.errstate(invalid="ignore"):  # inf - inf in non-finite boxes, which are dropped anyway
        x1 = np.clip(xywh[:, 0], 0, width)
        y1 = np.clip(xywh[:, 1], 0, height)
        x2 = np.clip(xywh[:, 0] + xywh[:, 2], 0, width)
        y2 = np.clip(xywh[:, 1] + xywh[:, 3], 0, height)
        inside = (x2 > x1) & (y2 > y1)
    reason = np.full(len(xywh), "", dtype=object)
    reason[~inside] = "outside"
    reason[~positive] = "empty"
    reason[~finite] = "nonfinite"
    return np.stack([x1, y1, x2, y2], axis=1), reason
