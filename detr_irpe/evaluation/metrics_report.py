"""COCO metrics reported: the metrics file (with how the numbers were made) and text tables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from ..core.io import atomic_write_json
from ..core.names import METRIC_NAMES


def write_metrics(path: str | os.PathLike, metrics: Mapping, extra: Mapping | None = None) -> Path:
    """Write ``{"metrics": metrics, **extra}`` as JSON atomically; ``extra`` records how the
    numbers were made (evaluation batch size, backend, checkpoint, ...), which a reported AP
    needs (the evaluation batch size changes it slightly)."""
    extra = dict(extra or {})
    if "metrics" in extra:
        raise ValueError("write_metrics: 'extra' must not contain the key 'metrics'")
    return atomic_write_json(path, {"metrics": dict(metrics), **extra})


def _cell(value: float, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value < 0:
        return "-"  # COCOeval's -1: undefined (no ground truth of that kind)
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def format_metrics_table(metrics: Mapping, percent: bool = True) -> str:
    """The 12 COCO numbers as a two-block text table (percent by default; '-' = undefined)."""
    lines = []
    for names in (METRIC_NAMES[:6], METRIC_NAMES[6:]):
        cells = [_cell(metrics.get(n, -1.0), percent) for n in names]
        widths = [max(len(n), len(c), 5) for n, c in zip(names, cells)]
        lines.append("  ".join(n.rjust(w) for n, w in zip(names, widths)))
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def format_per_category(metrics: Mapping, percent: bool = True) -> str:
    """A per-category AP table (category, AP), in the order the categories were given."""
    per_cat = metrics.get("per_category")
    if not per_cat:
        return "(no per-category AP; evaluate with per_category=True)"
    width = max(len("category"), *(len(str(n)) for n in per_cat))
    lines = [f"{'category'.ljust(width)}  {'AP':>6}", f"{'-' * width}  {'-' * 6}"]
    lines += [f"{str(name).ljust(width)}  {_cell(ap, percent):>6}" for name, ap in per_cat.items()]
    return "\n".join(lines)
