"""``detr-irpe evaluate``: COCO box AP of a model source."""

from __future__ import annotations

from .cli import (Parser, add_config_argument, add_device_argument, add_output_dir_argument, add_overrides_argument,
                  add_source_argument, check_output_dir, parse_command_line)

USAGE = """Evaluate a model with COCO box AP. The model source is any of: a checkpoint of this project,
of the reference DETR / iRPE-DETR code, or weights only; an http(s) URL; a zoo name (detr-irpe zoo);
a Hugging Face DetrForObjectDetection folder.

  detr-irpe evaluate --checkpoint outputs/tiny_abs/checkpoint_best.pth
  detr-irpe evaluate --checkpoint detr-r50 data.dataset=coco data.root=/data/coco
  detr-irpe evaluate --checkpoint detr-r50-e632da11.pth data.dataset=coco data.root=/data/coco
  torchrun --nproc_per_node 8 -m detr_irpe evaluate --checkpoint irpe-detr-r50-9x9-300e \\
      data.dataset=coco data.root=/data/coco --output-dir outputs/eval_irpe

Without --config the model comes from the source itself (a stored config, the reference code's
``args``, or the architecture read from the weights); the data section then comes from --config or
overrides. Writes the detections as a COCO results JSON and the metrics (with the evaluation batch
size, which changes AP slightly) as JSON into --output-dir.
"""


def build_parser() -> Parser:
    from ..core.names import BACKENDS

    parser = Parser(description=USAGE)
    add_source_argument(parser)
    add_config_argument(parser)
    add_output_dir_argument(parser, None, "folder for results.json and metrics.json (default: beside a checkpoint "
                                          "file, else outputs/eval/<source>)")
    parser.add_argument("--backend", choices=BACKENDS, help="COCO evaluation implementation")
    parser.add_argument("--batch-size", type=int, help="images per process per batch (eval.batch_size)")
    parser.add_argument("--per-category", action="store_true", help="also print AP per category")
    parser.add_argument("--raw-weights", action="store_true",
                        help="a run with model EMA (train.ema): its raw weights instead of the EMA ones")
    add_device_argument(parser, "where the model runs (train.device)")
    add_overrides_argument(parser)
    return parser


def eval_overrides(args) -> list[str]:
    """The command line's options as config overrides (before the user's own, which win)."""
    out = [f"train.device={args.device}"]
    if args.backend:
        out.append(f"eval.backend={args.backend}")
    if args.batch_size:
        out.append(f"eval.batch_size={args.batch_size}")
    if args.per_category:
        out.append("eval.per_category=true")
    return out + list(args.overrides)


def output_folder(args, src):
    """Where the results go: --output-dir, else beside a checkpoint file, else outputs/eval/<name>."""
    from pathlib import Path

    if args.output_dir:
        return Path(args.output_dir)
    if src.path is not None and src.path.is_file() and src.label == str(src.path):
        return src.path.resolve().parent
    name = Path(str(src.label).rstrip("/")).name or "model"
    return Path("outputs") / "eval" / name


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import json
    import sys

    from ..hub.checkpoint import load_state_dict
    from ..data.build import build_dataset, build_loader
    from ..core.runtime import cleanup, init_distributed
    from ..evaluation.loop import evaluate
    from ..evaluation.metrics_report import format_metrics_table, format_per_category, write_metrics
    from ..hub.loader import open_source, source_config
    from ..models import build_model
    from ..core.logs import setup_logging

    src = open_source(args.checkpoint, raw_weights=args.raw_weights)
    cfg = source_config(src, args.config, eval_overrides(args))
    info = init_distributed(cfg.train.device)
    out = check_output_dir(output_folder(args, src), "--output-dir" if args.output_dir else "output folder")
    setup_logging(info.is_main)
    try:
        val = build_dataset(cfg, "val")
        model, _, post = build_model(cfg)
        load_state_dict(model, src.state, source=f"model source {src.label}")
        model.to(info.device)
        loader = build_loader(val, cfg, train=False, world_size=info.world_size, rank=info.rank)
        results_path = out / "results.json"
        metrics = evaluate(model, post["bbox"], loader, cfg, info.device, progress=sys.stderr.isatty(),
                           results_path=results_path)
        if info.is_main:
            extra = {"checkpoint": str(args.checkpoint), "eval_batch_size": cfg.eval.batch_size * info.world_size,
                     "eval_batch_size_per_process": cfg.eval.batch_size, "world_size": info.world_size,
                     "backend": cfg.eval.backend, "images": metrics.get("eval_images"),
                     "irpe": str(cfg.model.irpe) if cfg.model.irpe else None, "source_kind": src.kind}
            write_metrics(out / "metrics.json", {k: v for k, v in metrics.items() if k != "per_category"}, extra)
            print(format_metrics_table(metrics))
            if cfg.eval.per_category and "per_category" in metrics:
                print(format_per_category(metrics))
            print(json.dumps({"eval_batch_size": extra["eval_batch_size"], "results": str(results_path),
                              "metrics": str(out / "metrics.json")}))
    finally:
        cleanup()
    return 0
