#!/usr/bin/env python
"""Speed and memory benchmarks that print figures (= `detr-irpe benchmark`; see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from detr_irpe.commands import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("benchmark"))
