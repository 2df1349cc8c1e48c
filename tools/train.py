#!/usr/bin/env python
"""Train DETR (with or without iRPE); see --help, or detr_irpe/engine/launch.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detr_irpe.cli import run_main  # noqa: E402
from detr_irpe.engine.launch import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_main(train_main))
