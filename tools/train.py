#!/usr/bin/env python
"""Train DETR (with or without iRPE) from a config file plus key=value overrides.

  python tools/train.py --config configs/tiny/abs_irpe.yaml train.output_dir=outputs/tiny
  torchrun --nproc_per_node 8 tools/train.py --config configs/detr_r50_irpe_product_150e.yaml \\
      data.root=/data/coco train.output_dir=outputs/irpe150
  python tools/train.py --config ... --resume auto          # continue an interrupted run
  python tools/train.py --config ... --init-from detr-r50.pth   # fine-tune from weights

The same entry point runs on one CPU, one GPU, torchrun (one or many nodes) and SLURM
(tools/submit.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detr_irpe.cli import run_main, setup_logging  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (defaults apply without one)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue a run from a checkpoint, or 'auto': the newest valid one in train.output_dir")
    parser.add_argument("--init-from", metavar="PATH", help="start from these weights only (fine-tuning)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=50")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detr_irpe.config import load_config
    from detr_irpe.engine.distributed import cleanup, init_distributed
    from detr_irpe.engine.trainer import Trainer, TrainingInterrupted

    cfg = load_config(args.config, args.overrides)
    dist_info = init_distributed(cfg.train.device)
    setup_logging(cfg.train.output_dir, dist_info.is_main)
    try:
        trainer = Trainer(cfg, resume=args.resume, init_from=args.init_from, dist_info=dist_info)
        trainer.train()
    except TrainingInterrupted:
        return 3
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
