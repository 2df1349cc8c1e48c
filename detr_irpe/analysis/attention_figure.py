"""The encoder self-attention of one pixel's token, per layer and head (as in the DETR paper), as arrays and as a figure.

Figures are drawn on the Agg canvas (detr_irpe.analysis.figures); the numbers behind them come from
functions that return arrays, so they can be tested and reused."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UsageError
from .figures import hwc, new_figure
from ..inference.predict import Predictor


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
        img = hwc(image)
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
