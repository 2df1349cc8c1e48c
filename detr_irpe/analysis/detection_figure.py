"""Detections drawn on images as one figure, a panel per image; the images come from files or the val split.

Figures are drawn on the Agg canvas (detr_irpe.analysis.figures); the numbers behind them come from
functions that return arrays, so they can be tested and reused."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import UsageError
from ..inference.drawing import colour_of, name_of
from .figures import hwc, new_figure
from ..inference.predict import Prediction, Predictor, read_image

log = logging.getLogger(__name__)


@dataclass
class DetectionPanel:
    """One image of a predictions figure: detections (already thresholded) and optional ground truth
    boxes (xyxy pixels) with their category ids."""

    image: torch.Tensor
    det: Prediction
    title: str
    gt_boxes: torch.Tensor | None = None
    gt_labels: torch.Tensor | None = None


def predictions_figure(panels: Sequence[DetectionPanel], names: Mapping[int, str], title: str = "",
                       columns: int = 4):
    """A grid of images with their detections (solid boxes, ``name score``) and, where given, the
    ground truth (dashed white boxes)."""
    from matplotlib.patches import Rectangle

    if not panels:
        raise UsageError("no images to draw")
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(4.0 * cols, 4.0 * rows + (0.4 if title else 0))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, panel in zip(axes.flat, panels):
        ax.imshow(hwc(panel.image))
        ax.set_title(panel.title, fontsize=9)
        h, w = panel.image.shape[-2:]
        fontsize = 8
        if panel.gt_boxes is not None:
            for box in panel.gt_boxes.tolist():
                ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                       edgecolor="white", linestyle="--", linewidth=1.2))
        det = panel.det
        for i in torch.argsort(det.scores, stable=True).tolist():  # the best boxes on top
            x0, y0, x1, y1 = det.boxes[i].tolist()
            colour = tuple(c / 255 for c in colour_of(det.labels[i]))
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))
            ax.text(x0, y0, f"{name_of(names, det.labels[i])} {float(det.scores[i]):.2f}", fontsize=fontsize,
                    color="white", va="bottom", ha="left", clip_on=True,
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1.0, alpha=0.85))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def detection_panels(predictor: Predictor, items: Sequence[tuple[str, torch.Tensor, dict | None]],
                     score_threshold: float) -> list[DetectionPanel]:
    """Run ``predictor`` on ``(title, uint8 CHW image, target or None)`` items; a target's ``boxes``
    (xyxy pixels) and ``labels`` are drawn as ground truth."""
    panels = []
    for title, image, target in items:
        det = predictor(image).above(score_threshold)
        gt_boxes = gt_labels = None
        if target is not None and "boxes" in target:
            gt_boxes = torch.as_tensor(target["boxes"]).reshape(-1, 4).float()
            gt_labels = target.get("labels")
        panels.append(DetectionPanel(image, det, f"{title} ({len(det.scores)} det. >= {score_threshold:g})",
                                     gt_boxes, gt_labels))
    return panels


def file_items(files: Sequence[Path], limit: int) -> list[tuple[str, torch.Tensor, None]]:
    """Up to ``limit`` readable images of ``files`` as ``(file name, uint8 CHW image, None)``;
    unreadable files are skipped with a warning."""
    items = []
    for path in files:
        if len(items) == limit:
            log.warning("drawing the first %d of %d images (--max-images)", limit, len(files))
            break
        try:
            items.append((path.name, read_image(path), None))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path, str(exc).splitlines()[0].replace(f"{path}: ", ""))
    if not items:
        raise UsageError(f"none of the {len(files)} image file(s) could be read")
    return items


def val_items(loaded, count: int, start: int = 0) -> list[tuple[str, torch.Tensor, dict]]:
    """``count`` images of the config's val split from index ``start`` (uint8 CHW, target with xyxy
    boxes and category ids), titled by file name."""
    from ..data.build import build_dataset

    val = build_dataset(loaded.cfg, "val", transforms=False).base
    if not 0 <= start < len(val):
        raise UsageError(f"val image index {start} is out of range: the val split has {len(val)} images")
    items = []
    for i in range(start, min(len(val), start + count)):
        image, target = val[i]
        items.append((val.image_path(i).name, image.as_subclass(torch.Tensor),
                      {"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"]}))
    return items
