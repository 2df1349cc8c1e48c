"""Entry points of training, shared by tools/train.py, torchrun and SLURM jobs (tools/submit.py)."""

from __future__ import annotations

import argparse

TRAIN_USAGE = """Train DETR (with or without iRPE) from a config file plus key=value overrides.

  python tools/train.py --config configs/tiny/abs_irpe.yaml train.output_dir=outputs/tiny
  torchrun --nproc_per_node 8 tools/train.py --config configs/detr_r50_irpe_product_150e.yaml \\
      data.root=/data/coco train.output_dir=outputs/irpe150
  python tools/train.py --config ... --resume auto          # continue an interrupted run
  python tools/train.py --config ... --init-from detr-r50.pth   # fine-tune from weights

The same entry point runs on one CPU, one GPU, torchrun (one or many nodes) and SLURM
(tools/submit.py). Exit status: 0 done, 2 bad input, 3 interrupted (state saved; --resume auto).
"""


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=TRAIN_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (defaults apply without one)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue a run from a checkpoint, or 'auto': the newest valid one in train.output_dir")
    parser.add_argument("--init-from", metavar="PATH", help="start from these weights only (fine-tuning)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=50")
    return parser


def train_main(argv=None) -> int:
    """Parse the command line, join the process group described by the environment, train."""
    from ..cli import setup_logging
    from ..config import load_config
    from .distributed import cleanup, init_distributed
    from .trainer import Trainer, TrainingInterrupted

    args = train_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    info = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    setup_logging(info.is_main)
    try:
        Trainer(cfg, resume=args.resume, init_from=args.init_from, dist_info=info).train()
    except TrainingInterrupted:
        return 3
    finally:
        cleanup()
    return 0


class TrainTask:
    """A picklable training job; ``checkpoint`` makes submitit requeue it, resuming automatically."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)

    def __call__(self) -> int:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR, ...
        argv = self.argv if "--resume" in self.argv else self.argv + ["--resume", "auto"]
        status = train_main(argv)
        if status not in (0, 3):
            raise RuntimeError(f"training failed with exit status {status}")
        return status

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.argv))
