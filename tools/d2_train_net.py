#!/usr/bin/env python
"""Train and evaluate DETR-iRPE with detectron2's trainer, data loaders and COCOEvaluator
(detectron2 must be installed: see docs/detectron2.md).

  python tools/d2_train_net.py --config-file configs/detectron2/detr_irpe_tiny_synthetic.yaml
  python tools/d2_train_net.py --num-gpus 8 --config-file configs/detectron2/detr_r50_irpe_product_150e_coco.yaml
  python tools/d2_train_net.py --config-file configs/detectron2/detr_irpe_tiny_synthetic.yaml --eval-only \
      MODEL.WEIGHTS outputs/d2_tiny_irpe/model_final.pth

MODEL.WEIGHTS may also name a checkpoint of this project or of the reference DETR / iRPE-DETR code;
it is converted on load. Checkpoints the other way:
python -m detr_irpe.integrations.detectron2.convert to-project model_final.pth detr.pth
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def setup(args):
    """The frozen detectron2 config of the command line, with the DETR-iRPE keys."""
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup

    from detr_irpe.integrations.detectron2 import add_detr_irpe_config

    cfg = add_detr_irpe_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.eval_only:
        cfg.MODEL.DETR_IRPE.BACKBONE.WEIGHTS = "none"  # MODEL.WEIGHTS holds the backbone too
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """Train (or, with --eval-only, evaluate MODEL.WEIGHTS); returns the evaluation results."""
    from detr_irpe.integrations.detectron2 import DetrIrpeCheckpointer, DetrIrpeTrainer, register_synthetic

    cfg = setup(args)
    register_synthetic(cfg)  # in every process: launch() starts one per GPU
    if args.eval_only:
        model = DetrIrpeTrainer.build_model(cfg)
        DetrIrpeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return DetrIrpeTrainer.test(cfg, model)
    trainer = DetrIrpeTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    return getattr(trainer, "_last_eval_results", None)


def cli(argv=None) -> int:
    try:
        import detr_irpe.integrations.detectron2  # noqa: F401  (its error says how to install detectron2)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from detectron2.engine import default_argument_parser, launch

    args = default_argument_parser(epilog=__doc__).parse_args(argv)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
