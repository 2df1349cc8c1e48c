#!/usr/bin/env python
"""Mean attention distance per encoder layer and head, attention by relative offset (= `detr-irpe attention`; see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from detr_irpe.commands import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("attention"))
