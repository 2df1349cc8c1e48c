"""The error analysis of one or more detectors on one ground truth: the numbers (a JSON-ready
dict) and the figures, each model beside the others (per-class AP, precision-recall curves,
confusion matrices, TIDE-style error breakdown)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .error_analysis import CLASS_METRICS, SCORE_THRESHOLD, ClassReport, ConfusionMatrix, confusion_matrix, per_class
from .figures import new_figure, save_png
from .tide import ERROR_TYPES, ErrorBreakdown, error_breakdown

FIGURES = ("per_class_ap.png", "pr_curves.png", "confusion.png", "errors.png")


@dataclass
class ModelAnalysis:
    """Everything measured of one model's detections."""

    label: str
    classes: list[ClassReport]
    confusion: ConfusionMatrix
    errors: ErrorBreakdown


def analyse(label: str, gt: dict, results: list[dict], score_threshold: float = SCORE_THRESHOLD) -> ModelAnalysis:
    """Per-class metrics and curves, the confusion matrix and the error breakdown of ``results``."""
    return ModelAnalysis(label, per_class(gt, results), confusion_matrix(gt, results, score_threshold),
                         error_breakdown(gt, results))


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f}"


def _number(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def to_json(analyses: list[ModelAnalysis]) -> dict:
    """The numbers of every model (NaN, an undefined metric, becomes null)."""
    out = {}
    for a in analyses:
        out[a.label] = {
            "per_class": [{"category_id": c.category_id, "name": c.name, "ground_truth": c.ground_truth,
                           **{m: _number(v) for m, v in c.metrics.items()},
                           "pr_curve": {"iou": 0.5, "recall": c.recall, "precision": c.precision, "score": c.scores}}
                          for c in a.classes],
            "confusion": {"iou": 0.5, "score_threshold": a.confusion.score_threshold,
                          "rows": "ground-truth class, then background (unmatched detections)",
                          "columns": "predicted class, then missed (unmatched objects)",
                          "names": a.confusion.names, "counts": a.confusion.counts.tolist()},
            "errors": {**{k: _number(v) for k, v in asdict(a.errors).items() if k != "delta_ap50"},
                       "delta_ap50": {k: _number(v) for k, v in a.errors.delta_ap50.items()}},
        }
    return out


def per_class_figure(analyses: list[ModelAnalysis]):
    """One panel per metric (AP, AP50, AP75, APs, APm, APl): a bar per class and model."""
    fig = new_figure(12, 6.5)
    axes = fig.subplots(2, 3)
    names = [c.name for c in analyses[0].classes]
    width = 0.8 / len(analyses)
    x = np.arange(len(names))
    for ax, metric in zip(axes.flat, CLASS_METRICS):
        for i, a in enumerate(analyses):
            values = [100 * c.metrics[metric] if not math.isnan(c.metrics[metric]) else 0 for c in a.classes]
            ax.bar(x + (i - (len(analyses) - 1) / 2) * width, values, width, label=a.label)
        ax.set_xticks(x, names, fontsize=8, rotation=30 if len(names) > 6 else 0)
        ax.set_title(metric, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].set_ylabel("%")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("per-class AP (COCO definitions; a missing bar: no object of that size)")
    return fig


def pr_figure(analyses: list[ModelAnalysis]):
    """Precision against recall at IoU 0.5, one panel per class, a curve per model."""
    classes = len(analyses[0].classes)
    cols = min(4, classes)
    rows = math.ceil(classes / cols)
    fig = new_figure(3.2 * cols, 2.9 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k >= classes:
            ax.set_axis_off()
            continue
        for a in analyses:
            c = a.classes[k]
            ax.plot(c.recall, c.precision, label=f"{a.label} (AP50 {_pct(c.metrics['AP50'])})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=analyses[0].classes[k].name)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("precision-recall curves at IoU 0.5")
    return fig


def confusion_figure(analyses: list[ModelAnalysis]):
    """The confusion matrix of each model side by side, rows normalised to fractions (counts in
    the cells)."""
    k = len(analyses[0].confusion.names)
    fig = new_figure(0.55 * k * len(analyses) + 2.5, 0.55 * k + 1.8)
    axes = np.atleast_1d(fig.subplots(1, len(analyses), squeeze=False)).ravel()
    for ax, a in zip(axes, analyses):
        counts = a.confusion.counts
        rows = counts.sum(axis=1, keepdims=True)
        frac = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(counts):
            if v:
                ax.text(c, r, str(v), ha="center", va="center", fontsize=7, color="white" if frac[r, c] > 0.5 else "black")
        names = a.confusion.names
        ax.set_xticks(range(k), names[:-1] + ["missed"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(f"{a.label} (score >= {a.confusion.score_threshold:g})", fontsize=9)
    fig.suptitle("confusion at IoU 0.5 (class-agnostic matching)", fontsize=10)
    return fig


def errors_figure(analyses: list[ModelAnalysis]):
    """Per error type: how many there are, and the AP50 fixing them alone would add."""
    fig = new_figure(11, 4.5)
    ax_count, ax_delta = fig.subplots(1, 2)
    x = np.arange(len(ERROR_TYPES))
    width = 0.8 / len(analyses)
    for i, a in enumerate(analyses):
        off = x + (i - (len(analyses) - 1) / 2) * width
        ax_count.bar(off, [a.errors.counts[t] for t in ERROR_TYPES], width, label=a.label)
        ax_delta.bar(off, [100 * a.errors.delta_ap50[t] for t in ERROR_TYPES], width,
                     label=f"{a.label} (AP50 {100 * a.errors.ap50:.1f})")
    for ax, title in ((ax_count, "errors (count)"), (ax_delta, "AP50 added if fixed (points)")):
        ax.set_xticks(x, [t.replace("classification", "class.").replace("localisation", "local.") for t in ERROR_TYPES],
                      fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("error breakdown at IoU 0.5 (TIDE's types: background below IoU 0.1)", fontsize=10)
    return fig


def write_figures(analyses: list[ModelAnalysis], out_dir: str | Path) -> list[Path]:
    """The four figures (FIGURES) in ``out_dir``."""
    out = Path(out_dir)
    makers = (per_class_figure, pr_figure, confusion_figure, errors_figure)
    return [save_png(make(analyses), out / name) for make, name in zip(makers, FIGURES)]


def summary_lines(analyses: list[ModelAnalysis]) -> list[str]:
    """A few lines per model for the terminal."""
    lines = []
    for a in analyses:
        e = a.errors
        lines.append(f"{a.label}: AP50 {100 * e.ap50:.1f}, {e.true_positives} of {e.ground_truth} objects found, "
                     f"{e.detections} detections")
        lines.append("  errors: " + ", ".join(f"{t} {e.counts[t]} (+{100 * e.delta_ap50[t]:.1f})" for t in ERROR_TYPES))
        lines.append("  per-class AP: " + ", ".join(f"{c.name} {_pct(c.metrics['AP'])}" for c in a.classes))
    return lines
