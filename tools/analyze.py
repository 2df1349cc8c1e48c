#!/usr/bin/env python
"""Error analysis of detections: per-class AP, PR curves, confusions, error types (= `detr-irpe analyze`; see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from detr_irpe.commands import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("analyze"))
