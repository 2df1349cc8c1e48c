"""``detr-irpe analyze``: error analysis of detections, one model or several side by side."""

from __future__ import annotations

from .cli import (Parser, add_device_argument, add_output_dir_argument, add_overrides_argument, add_source_argument,
                  check_output_dir, parse_command_line)
from .naming import default_label, file_stem

#: where analysis.json and the figures go without --output-dir
OUTPUT_DIR = "outputs/analysis"

USAGE = """Error analysis of a detector, or of several side by side on the same ground truth: per-class
AP (AP, AP50, AP75, by size), precision-recall curves per class, a confusion matrix between the
classes and background at IoU 0.5, and the errors in TIDE's types (classification, localisation,
both, duplicate, background, missed) with the AP50 each would add if fixed.

  detr-irpe analyze --results results.json --annotations instances_val.json
  detr-irpe analyze --checkpoint outputs/tiny_abs/checkpoint.pth --checkpoint outputs/tiny_abs_irpe/checkpoint.pth \\
      --labels abs abs+iRPE --output-dir outputs/analysis
  detr-irpe analyze --checkpoint a.pth data.dataset=coco data.root=/data/coco --output-dir outputs/analysis_a

A checkpoint (or any model source) is run on the val split of the first one's config (key=value
overrides change it); its detections are written as <label>_results.json. Writes analysis.json and
per_class_ap.png, pr_curves.png, confusion.png, errors.png into --output-dir (default outputs/analysis).
Without --labels a model is named after its source: the file's stem, the run folder's name for a
run's checkpoint*.pth, or the zoo name.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--results", action="append", default=[], metavar="FILE",
                        help="COCO results JSON (repeat for models side by side); needs --annotations")
    parser.add_argument("--annotations", metavar="FILE", help="the ground truth (COCO JSON) of --results")
    add_source_argument(parser, multiple=True, required=False)
    parser.add_argument("--labels", nargs="+", help="one name per model, in the order given")
    add_output_dir_argument(parser, OUTPUT_DIR, "folder for analysis.json, the figures and each model's detections")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="detections below this score are left out of the confusion matrix (default 0.3)")
    add_device_argument(parser, "where checkpoints run")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import json
    import logging

    from ..analysis.error_analysis import SCORE_THRESHOLD, ResultsError, check_results, read_results
    from ..analysis.error_report import analyse, summary_lines, to_json, write_figures
    from ..core.errors import UsageError
    from ..core.io import atomic_write_json
    from ..core.logs import setup_logging

    setup_logging()
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # one INFO line per evaluation step
    if bool(args.results) == bool(args.checkpoint):
        raise UsageError("analyze: give either --results files (with --annotations) or --checkpoint sources")
    if args.results and not args.annotations:
        raise UsageError("analyze: --results needs --annotations (the ground truth the detections are scored on)")
    sources = args.results or args.checkpoint
    labels = args.labels or [default_label(s) for s in sources]
    if len(labels) != len(sources):
        raise UsageError(f"analyze: --labels names {len(labels)} models, {len(sources)} were given")
    if len(set(labels)) != len(labels):
        labels = [f"{i + 1}:{label}" for i, label in enumerate(labels)]
    threshold = SCORE_THRESHOLD if args.score_threshold is None else args.score_threshold
    if not 0 <= threshold <= 1:
        raise UsageError(f"analyze: --score-threshold must be in [0, 1], got {threshold}")
    out = check_output_dir(args.output_dir)

    if args.results:
        from ..data.coco_json import read_coco_json

        gt = read_coco_json(args.annotations)
        results = [read_results(p) for p in args.results]
    else:
        gt, results = detections_of_models(args.checkpoint, labels, args.overrides, args.device, out)
    for label, res, src in zip(labels, results, sources):
        check_results(gt, res, str(src))
    if not gt.get("annotations"):
        raise ResultsError("analyze: the ground truth has no annotations to score against")

    analyses = [analyse(label, gt, res, threshold) for label, res in zip(labels, results)]
    atomic_write_json(out / "analysis.json", {"sources": [str(s) for s in sources], "models": to_json(analyses)},
                      indent=1)
    for path in write_figures(analyses, out):
        print(f"figure: {path}")
    print("\n".join(summary_lines(analyses)))
    print(json.dumps({"analysis": str(out / "analysis.json")}))
    return 0


def detections_of_models(sources, labels, overrides, device, out):
    """Run each model source on the val split of the first one's config; returns the ground truth
    (a COCO dict) and each model's detections (COCO results, also written into ``out``). A model's
    detections of class ids the dataset has no category for are left out, as COCO evaluation
    ignores them (a sigmoid decoder's top-k may name any class id of its head)."""
    import logging
    import sys

    from ..analysis.error_analysis import read_results
    from ..data.build import build_dataset, build_loader
    from ..evaluation.loop import evaluate
    from ..hub.loader import load_model

    loaded = [load_model(s, overrides, device=device) for s in sources]
    cfg = loaded[0].cfg
    val = build_dataset(cfg, "val")
    loader = build_loader(val, cfg, train=False)
    categories = {c["id"] for c in val.coco.dataset.get("categories", [])}
    results = []
    for label, m in zip(labels, loaded):
        path = out / f"{file_stem(label)}_results.json"
        evaluate(m.model, m.postprocess, loader, m.cfg, m.device, progress=sys.stderr.isatty(), results_path=path)
        found = read_results(path)
        kept = [r for r in found if r["category_id"] in categories]
        if dropped := len(found) - len(kept):
            logging.getLogger(__name__).info("%s: %d detection(s) of class ids without a category left out", label,
                                             dropped)
        results.append(kept)
    return val.coco.dataset, results
