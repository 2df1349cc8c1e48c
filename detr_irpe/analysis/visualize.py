"""Figures of a trained model: detections on images, the encoder self-attention of one pixel's token
(per layer and head, as in the DETR paper), and the learned iRPE tables over relative offsets.

Figures are ``matplotlib.figure.Figure`` objects drawn on the Agg canvas (no pyplot state, never a
window); :func:`save_figure` writes them as PNG. The numbers behind each figure come from functions
that return arrays (:func:`attention_maps`, :func:`rpe_tables`), so they can be tested and reused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .drawing import colour_of, name_of
from .predict import Prediction, Predictor, read_image
from ..errors import UsageError

log = logging.getLogger(__name__)

DPI = 100


def new_figure(width: float, height: float):
    """A Figure on the Agg canvas (inches), with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG (the folder is created); returns the path."""
    from ..utils.io import atomic_write

    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise UsageError(f"--out {path}: figures are written as PNG; give a file name ending in .png")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path


def _hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 CHW tensor -> HWC numpy array for imshow."""
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())


# ---------------------------------------------------------------------------------------------
# detections


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
        ax.imshow(_hwc(panel.image))
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


# ---------------------------------------------------------------------------------------------
# encoder attention


@dataclass
class AttentionMaps:
    """The encoder self-attention of the token under one pixel.

    ``maps``: (layers, heads, H, W) attention weights over the original image, upsampled bilinearly
    from the feature map (the padded part cut off); ``grid``: the same weights on the unpadded
    feature cells (layers, heads, h, w); ``token``: (row, col) of the pixel's cell; ``point``: (x, y)."""

    maps: np.ndarray
    grid: np.ndarray
    token: tuple[int, int]
    point: tuple[float, float]
    feature_shape: tuple[int, int]


def attention_maps(predictor: Predictor, image: torch.Tensor, x: float, y: float) -> AttentionMaps:
    """Run the model on ``image`` (uint8 CHW) and take, in every encoder layer and head, the
    attention of the token that covers pixel (x, y) (original image pixels) over all tokens."""
    h0, w0 = int(image.shape[-2]), int(image.shape[-1])
    if not (0 <= x < w0 and 0 <= y < h0):
        raise UsageError(f"pixel (x={x:g}, y={y:g}) is outside the image of {w0} x {h0} pixels")
    pred = predictor(image, need_weights=True)
    weights = pred.outputs["encoder_attention"]
    if not weights:
        raise UsageError(f"checkpoint {predictor.loaded.source} has no encoder layers (model.enc_layers=0)")
    fh, fw = pred.outputs["feature_shape"]
    (hr, wr), (hp, wp) = pred.input_size, pred.padded_size
    sy, sx = hp / fh, wp / fw  # feature stride in resized-image pixels
    vh, vw = math.ceil(hr / sy), math.ceil(wr / sx)  # the unpadded feature cells
    # the pixel's centre in the resized image, then its feature cell
    row = min(int((y + 0.5) * hr / h0 // sy), vh - 1)
    col = min(int((x + 0.5) * wr / w0 // sx), vw - 1)
    token = row * fw + col
    att = torch.stack([w[0, :, token, :] for w in weights]).float().cpu()  # (layers, heads, L)
    layers, heads = att.shape[:2]
    att = att.reshape(layers * heads, 1, fh, fw)
    up = F.interpolate(att, size=(hp, wp), mode="bilinear", align_corners=False)[..., :hr, :wr]
    up = F.interpolate(up, size=(h0, w0), mode="bilinear", align_corners=False)
    grid = att.reshape(layers, heads, fh, fw)[..., :vh, :vw]
    return AttentionMaps(up.reshape(layers, heads, h0, w0).numpy(), grid.numpy(), (row, col), (float(x), float(y)),
                         (fh, fw))


def attention_figure(entries: Sequence[tuple[str, torch.Tensor, AttentionMaps]], title: str = ""):
    """For each ``(label, image, maps)`` a block of columns: the image with a marker at the pixel on
    top, then per encoder layer a row of per-head heat maps overlaid on the image (each map scaled
    to its own maximum, which the panel title gives). Two entries (two checkpoints) sit side by side."""
    if not entries:
        raise UsageError("no attention maps to draw")
    heads = [e[2].maps.shape[1] for e in entries]
    layers = max(e[2].maps.shape[0] for e in entries)
    gap = 1 if len(entries) > 1 else 0
    ncols = sum(heads) + gap * (len(entries) - 1)
    h0, w0 = entries[0][1].shape[-2:]
    cell = 2.2
    aspect = h0 / w0
    fig = new_figure(max(4.0, cell * ncols), cell * aspect * (layers + 1.5) + 0.6)
    grid = fig.add_gridspec(layers + 1, ncols, height_ratios=[1.5] + [1] * layers)
    start = 0
    for (label, image, maps), nh in zip(entries, heads):
        img = _hwc(image)
        grey = img.mean(axis=2)
        top = fig.add_subplot(grid[0, start:start + nh])
        top.imshow(img)
        x, y = maps.point
        top.plot([x], [y], marker="o", markersize=9, markerfacecolor="red", markeredgecolor="white",
                 markeredgewidth=1.5)
        top.set_title(f"{label}\npixel (x={x:g}, y={y:g}) -> feature cell (row {maps.token[0]}, col {maps.token[1]}) "
                      f"of {maps.feature_shape[0]} x {maps.feature_shape[1]}", fontsize=8)
        top.set_axis_off()
        for layer in range(maps.maps.shape[0]):
            for head in range(nh):
                ax = fig.add_subplot(grid[layer + 1, start + head])
                m = maps.maps[layer, head]
                ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
                ax.imshow(m, cmap="inferno", alpha=0.65, vmin=0, vmax=max(float(m.max()), 1e-12))
                ax.plot([x], [y], marker="+", markersize=6, color="cyan")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"head {head} (max {float(maps.grid[layer, head].max()):.2f})", fontsize=7)
                if head == 0:
                    ax.set_ylabel(f"layer {layer}", fontsize=8)
        start += nh + gap
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------
# iRPE tables


@dataclass
class RPETable:
    """One side (q, k or v) of one encoder layer's iRPE, reduced to a number per bucket and head:
    the scalar (bias mode) or the L2 norm of the bucket's vector (contextual mode).

    ``values``: (heads', 2B+1, 2B+1) for product (rows = row offset bucket, cols = column offset
    bucket), (heads', B+1) over the reachable distance buckets for euc / quant, and for cross a
    dict with ``rows`` and ``cols``, each (heads', 2B+1)."""

    layer: int
    side: str
    spec: object
    values: np.ndarray | dict

    @property
    def quantity(self) -> str:
        return "bias" if self.spec.mode == "bias" else "L2 norm"


def _per_bucket(table: torch.Tensor, side: str, mode: str) -> np.ndarray:
    """(heads', K): the scalar per bucket, or the L2 norm of the bucket's vector."""
    t = table.detach().float().cpu()
    if mode == "bias":
        return t.numpy()
    return t.norm(dim=-1 if side == "v" else 1).numpy()  # v: (H', K, D); q/k: (H', D, K)


def rpe_tables(model: torch.nn.Module, source: str = "model") -> list[RPETable]:
    """The iRPE tables of every encoder layer and side; ValueError for a model without iRPE."""
    tables = []
    for n, layer in enumerate(model.transformer.encoder.layers):
        attn = layer.self_attn
        spec = attn.rpe
        if spec is None:
            continue
        B = spec.half_width
        for side in spec.rpe_on:
            enc = getattr(attn, f"rpe_{side}")
            if spec.method == "cross":
                values = {part: _per_bucket(getattr(enc, f"rp_{part}").table(), side, spec.mode)
                          for part in ("rows", "cols")}
            elif spec.method == "product":
                values = _per_bucket(enc.table(), side, spec.mode).reshape(-1, 2 * B + 1, 2 * B + 1)
            else:  # euc / quant: a distance is >= 0, so only buckets B..2B are ever used
                values = _per_bucket(enc.table(), side, spec.mode)[:, B:]
            tables.append(RPETable(n, side, spec, values))
    if not tables:
        raise UsageError(f"{source} has no iRPE in its encoder (model.irpe is null): there are no relative "
                         f"position tables to show")
    return tables


def _ranges(values: torch.Tensor, buckets: torch.Tensor, lo_end: int, hi_end: int) -> dict[int, str]:
    """Bucket -> the range of (integer) values it covers, as a tick label."""
    out = {}
    for b in torch.unique(buckets).tolist():
        v = values[buckets == b]
        lo, hi = int(v.min()), int(v.max())
        if lo == hi:
            out[b] = f"{lo}"
        elif hi == hi_end:
            out[b] = f"≥{lo}"
        elif lo == lo_end:
            out[b] = f"≤{hi}"
        else:
            out[b] = f"{lo}..{hi}"
    return out


def offset_labels(spec, limit: int = 200) -> list[str]:
    """Tick labels of the 2B+1 offset buckets of product / cross: the integer offsets (in feature
    cells) each bucket covers, e.g. ``-1``, ``3..5``, ``≥9``."""
    from ..models.irpe import piecewise_index

    offsets = torch.arange(-limit, limit + 1)
    buckets = piecewise_index(offsets, spec.alpha, spec.beta, spec.gamma)
    ranges = _ranges(offsets, buckets, -limit, limit)
    B = spec.half_width
    return [ranges.get(b, "-") for b in range(-B, B + 1)]


def distance_labels(spec, limit: int = 200) -> list[str]:
    """Tick labels of the B+1 distance buckets of euc (rounded Euclidean distance in feature cells)
    and quant (squared distance)."""
    from ..models.irpe import piecewise_index

    values = torch.arange(0, limit * limit + 1 if spec.method == "quant" else limit + 1)
    buckets = piecewise_index(values, spec.alpha, spec.beta, spec.gamma)
    ranges = _ranges(values, buckets, 0, int(values[-1]))
    return [ranges.get(b, "-") for b in range(0, spec.half_width + 1)]


def _offset_axis_name(side: str, axis: str) -> str:
    # the k and v sides index by (query - key), the q side by (key - query)
    return f"{axis} offset ({'key - query' if side == 'q' else 'query - key'})"


def rpe_figure(tables: Sequence[RPETable], title: str = ""):
    """One row per (layer, side). Product: a (2B+1) x (2B+1) map per head; cross: the rows and cols
    tables as two line plots (one line per head); euc / quant: one line plot over distance buckets."""
    spec = tables[0].spec
    B = spec.half_width
    if spec.method == "product":
        ncols = max(t.values.shape[0] for t in tables)
        width = max(3.2 * ncols + 1.0, 7.0)  # room for the title with a single shared table
        row_height = 3.0
    elif spec.method == "cross":
        ncols, width, row_height = 2, 10.0, 2.8
    else:
        ncols, width, row_height = 1, 7.0, 2.8
    fig = new_figure(max(width, 5.0), row_height * len(tables) + 0.6)
    axes = fig.subplots(len(tables), ncols, squeeze=False)
    what = "learned bias per bucket" if spec.mode == "bias" else "L2 norm of each bucket's vector"
    for row, table in zip(axes, tables):
        name = f"layer {table.layer}, rpe_{table.side}"
        if spec.method == "product":
            labels = offset_labels(spec)
            vals = table.values
            vmin, vmax = float(vals.min()), float(vals.max())
            for head, ax in enumerate(row):
                if head >= vals.shape[0]:
                    ax.set_axis_off()
                    continue
                im = ax.imshow(vals[head], cmap="viridis", vmin=vmin, vmax=vmax)
                ax.set_xticks(range(2 * B + 1), labels, fontsize=6, rotation=90)
                ax.set_yticks(range(2 * B + 1), labels, fontsize=6)
                ax.set_xlabel(_offset_axis_name(table.side, "column"), fontsize=7)
                ax.set_ylabel(_offset_axis_name(table.side, "row"), fontsize=7)
                heads = "shared" if spec.shared_head else f"head {head}"
                ax.set_title(f"{name}, {heads}", fontsize=8)
            fig.colorbar(im, ax=list(row), shrink=0.8, label=table.quantity)
        elif spec.method == "cross":
            labels = offset_labels(spec)
            for ax, part, axis in zip(row, ("rows", "cols"), ("row", "column")):
                vals = table.values[part]
                for head in range(vals.shape[0]):
                    ax.plot(range(2 * B + 1), vals[head], marker="o", markersize=3,
                            label="shared" if spec.shared_head else f"head {head}")
                ax.set_xticks(range(2 * B + 1), labels, fontsize=6)
                ax.set_xlabel(_offset_axis_name(table.side, axis), fontsize=7)
                ax.set_ylabel(table.quantity, fontsize=7)
                ax.set_title(f"{name}, {part} table", fontsize=8)
                ax.grid(alpha=0.3)
                if vals.shape[0] > 1:
                    ax.legend(fontsize=6, ncol=2)
        else:
            ax = row[0]
            labels = distance_labels(spec)
            vals = table.values
            for head in range(vals.shape[0]):
                ax.plot(range(B + 1), vals[head], marker="o", markersize=3,
                        label="shared" if spec.shared_head else f"head {head}")
            ax.set_xticks(range(B + 1), labels, fontsize=7)
            unit = "squared distance (cells²)" if spec.method == "quant" else "Euclidean distance (cells, rounded)"
            ax.set_xlabel(f"distance bucket: {unit}", fontsize=7)
            ax.set_ylabel(table.quantity, fontsize=7)
            ax.set_title(name, fontsize=8)
            ax.grid(alpha=0.3)
            if vals.shape[0] > 1:
                ax.legend(fontsize=6, ncol=2)
    fig.suptitle((title + "\n" if title else "") + f"iRPE {spec} ({spec.method}, {what}; B = {B})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# entry points of tools/visualize.py


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
