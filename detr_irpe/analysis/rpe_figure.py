"""The learned iRPE tables of every encoder layer over relative offsets, as arrays and as a figure.

Figures are drawn on the Agg canvas (detr_irpe.analysis.figures); the numbers behind them come from
functions that return arrays, so they can be tested and reused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import UsageError
from .figures import new_figure


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
