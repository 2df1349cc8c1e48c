"""Figures for the analysis tools: matplotlib ``Figure`` objects on the Agg canvas (no pyplot
state, never a window), written as PNG atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 100


def new_figure(width: float, height: float, layout: str = "constrained"):
    """A Figure of ``width`` x ``height`` inches on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (the folder is created); returns the path."""
    from ..core.io import atomic_write

    path = Path(path).expanduser()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path


def hwc(image) -> np.ndarray:
    """A uint8 CHW tensor as an HWC numpy array for imshow."""
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
