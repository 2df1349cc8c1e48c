"""``detr-irpe train``: train DETR (with or without iRPE) from a config plus key=value overrides."""

from __future__ import annotations

from .cli import Parser, add_overrides_argument, parse_command_line

USAGE = """Train DETR (with or without iRPE) from a config file plus key=value overrides.

  detr-irpe train --config tiny/abs_irpe train.output_dir=outputs/tiny
  torchrun --nproc_per_node 8 -m detr_irpe train --config detr_r50_irpe_product_150e \\
      data.root=/data/coco train.output_dir=outputs/irpe150
  detr-irpe train --config ... --resume                  # continue an interrupted run (= --resume auto)
  detr-irpe train --config ... --init-from detr-r50      # fine-tune from a model source's weights
  detr-irpe train --config ... --resume --eval-only      # evaluate the run's newest checkpoint

A config is a path or the name of a shipped config (e.g. tiny/abs_irpe, detr_r50_150e). The same
entry point runs on one CPU, one GPU, torchrun (one or many nodes) and SLURM (detr-irpe submit).
Exit status: 0 done, 2 bad input, 3 interrupted (state saved; --resume continues).
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--config", "--config-file", dest="config", help="YAML config: a path or a shipped config's "
                                                                          "name (defaults apply without one)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="PATH|auto",
                        help="continue a run from a checkpoint; bare or 'auto': the newest valid one in "
                             "train.output_dir")
    parser.add_argument("--init-from", metavar="SOURCE",
                        help="start from these weights only (fine-tuning): a checkpoint, URL, zoo name or "
                             "Hugging Face folder; a class head of another size is re-initialised")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the model (its --resume or --init-from weights) on the val split and stop")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    """Parse the command line, join the process group described by the environment, train."""
    args = parse_command_line(build_parser(), argv)
    from ..config import load_config
    from ..core.runtime import cleanup, init_distributed
    from ..engine.interrupt import TrainingInterrupted
    from ..engine.trainer import Trainer
    from ..core.logs import setup_logging

    cfg = load_config(args.config, args.overrides)
    info = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    setup_logging(info.is_main)
    try:
        trainer = Trainer(cfg, resume=args.resume, init_from=args.init_from, dist_info=info,
                          eval_only=args.eval_only)
        if args.eval_only:
            trainer.evaluate_only()
        else:
            trainer.train()
    except TrainingInterrupted:
        return 3
    finally:
        cleanup()
    return 0
