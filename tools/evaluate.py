#!/usr/bin/env python
"""Evaluate a checkpoint (this project's or a released DETR / iRPE-DETR one) with COCO box AP.

  python tools/evaluate.py --checkpoint outputs/tiny_abs/checkpoint_best.pth
  python tools/evaluate.py --checkpoint detr-r50-e632da11.pth data.dataset=coco data.root=/data/coco
  torchrun --nproc_per_node 8 tools/evaluate.py --checkpoint ... --output-dir outputs/eval_r50

Without --config the model comes from the checkpoint itself (this project's stored config, or the
reference code's ``args``); the data section then comes from --config or overrides. Writes the
detections as a COCO results JSON and the metrics (with the evaluation batch size, which changes AP
slightly) as JSON into --output-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detr_irpe.cli import run_main, setup_logging  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pth)")
    parser.add_argument("--config", help="YAML config; without it the checkpoint's own configuration is used")
    parser.add_argument("--output-dir", help="where results.json and metrics.json go (default: beside the checkpoint)")
    parser.add_argument("--backend", choices=["faster_coco_eval", "pycocotools"], help="COCO evaluation implementation")
    parser.add_argument("--batch-size", type=int, help="images per process per batch (eval.batch_size)")
    parser.add_argument("--per-category", action="store_true", help="also print AP per category")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=/data/coco")
    return parser.parse_args(argv)


def build_eval_config(args):
    """The config to evaluate with: the checkpoint's model, the user's data and eval settings."""
    from detr_irpe.checkpoint import config_of_checkpoint, load_checkpoint
    from detr_irpe.config import apply_overrides, load_config

    ckpt = load_checkpoint(args.checkpoint)
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        cfg = apply_overrides(config_of_checkpoint(ckpt), args.overrides, f"checkpoint {args.checkpoint}")
        if "config" not in ckpt:  # a reference checkpoint: the class count is in its head
            cfg.model.num_classes = int(ckpt["model"]["class_embed.weight"].shape[0]) - 1
    if args.backend:
        cfg.eval.backend = args.backend
    if args.batch_size:
        cfg.eval.batch_size = args.batch_size
    if args.per_category:
        cfg.eval.per_category = True
    cfg.model.backbone.weights = "none"  # the checkpoint holds the backbone
    return cfg, ckpt


def main(argv=None) -> int:
    args = parse_args(argv)
    from detr_irpe.checkpoint import load_state_dict
    from detr_irpe.data.build import build_dataset, build_loader
    from detr_irpe.engine.distributed import cleanup, init_distributed
    from detr_irpe.engine.evaluation import evaluate
    from detr_irpe.engine.evaluator import format_metrics_table, format_per_category, write_metrics
    from detr_irpe.models import build_model

    cfg, ckpt = build_eval_config(args)
    info = init_distributed(cfg.train.device)
    out = Path(args.output_dir) if args.output_dir else Path(args.checkpoint).resolve().parent
    setup_logging(info.is_main)
    try:
        val = build_dataset(cfg, "val")
        model, _, post = build_model(cfg, num_classes=val.num_classes)
        load_state_dict(model, ckpt["model"], source=f"checkpoint {args.checkpoint}")
        model.to(info.device)
        loader = build_loader(val, cfg, train=False, world_size=info.world_size, rank=info.rank)
        results_path = out / "results.json"
        metrics = evaluate(model, post["bbox"], loader, val.coco, info.device, cfg.train.amp, cfg.eval.backend,
                           cfg.eval.per_category, progress=sys.stderr.isatty(), results_path=results_path)
        if info.is_main:
            extra = {"checkpoint": str(args.checkpoint), "eval_batch_size": cfg.eval.batch_size * info.world_size,
                     "eval_batch_size_per_process": cfg.eval.batch_size, "world_size": info.world_size,
                     "backend": cfg.eval.backend, "images": metrics.get("eval_images"),
                     "irpe": str(cfg.model.irpe) if cfg.model.irpe else None}
            write_metrics(out / "metrics.json", {k: v for k, v in metrics.items() if k != "per_category"}, extra)
            print(format_metrics_table(metrics))
            if cfg.eval.per_category and "per_category" in metrics:
                print(format_per_category(metrics))
            print(json.dumps({"eval_batch_size": extra["eval_batch_size"], "results": str(results_path),
                              "metrics": str(out / "metrics.json")}))
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
