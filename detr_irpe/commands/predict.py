"""``detr-irpe predict``: run a checkpoint on an image file or a folder of images and write COCO results."""

from __future__ import annotations

import json
from pathlib import Path

from .cli import (Parser, add_config_argument, add_device_argument, add_output_dir_argument, add_overrides_argument,
                  add_source_argument, check_output_dir, parse_command_line)

#: where results.json and images.json go without --output-dir
OUTPUT_DIR = "outputs/predictions"

USAGE = """Run a checkpoint on an image file or a folder of images and write COCO results.

  detr-irpe predict --checkpoint outputs/tiny_irpe/checkpoint_best.pth --input photos/ --output-dir preds
  detr-irpe predict --checkpoint detr-r50-e632da11.pth --input cat.jpg --score-threshold 0.7 --draw preds/drawn

Writes into --output-dir (default outputs/predictions):
  results.json  COCO results list: {image_id, category_id, bbox [x, y, w, h] in original pixels, score}
  images.json   one entry per image read: {id, file_name, height, width, detections}, the
                file_name -> id mapping, and the skipped files with the reason
Image ids are the indices of the images in sorted file-name order (skipped files get none);
category_id is the model's class index, which is the dataset's category id. --score-threshold 0
(the default) keeps all queries of every image, as DETR's evaluation does. Files in a folder
that are not images are skipped with a warning and counted; the folder is not searched recursively.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    add_source_argument(parser)
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    add_output_dir_argument(parser, OUTPUT_DIR, "folder for results.json and images.json")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="keep detections with score >= this (default 0: all queries)")
    parser.add_argument("--draw", metavar="DIR", help="also write each image with its detections drawn into DIR")
    parser.add_argument("--annotations", help="COCO JSON whose categories name the classes in drawings "
                                              "(default: the config's val annotations, or COCO names)")
    add_config_argument(parser)
    add_device_argument(parser, "where the model runs")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..core.logs import setup_logging

    setup_logging()

    from ..core.errors import UsageError
    from ..inference.predict import Predictor, class_names, list_inputs, predict_files, write_run
    from ..hub.loader import load_model

    if args.score_threshold < 0 or args.score_threshold > 1:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    files, skipped = list_inputs(args.input)  # a missing path stops here, before the model is loaded
    out = check_output_dir(args.output_dir)
    if args.draw:
        check_output_dir(args.draw, "--draw")
    loaded = load_model(args.checkpoint, args.overrides, args.device, args.config)
    names = class_names(loaded, args.annotations) if args.draw else {}
    source = Path(args.input).expanduser()
    root = source if source.is_dir() else None
    run = predict_files(Predictor(loaded), files, args.score_threshold, names, args.draw, root)
    run.skipped = sorted(run.skipped + [{"file_name": p.name, "reason": why} for p, why in skipped],
                         key=lambda s: s["file_name"])
    if not run.images:
        raise UsageError(f"none of the {len(files)} image file(s) of {source} could be read")
    results, images = write_run(run, out, checkpoint=str(args.checkpoint), input=str(source),
                                score_threshold=args.score_threshold)
    summary = {"images": len(run.images), "skipped": len(run.skipped), "detections": len(run.results),
               "results": str(results), "mapping": str(images)}
    if args.draw:
        summary["drawn"] = str(Path(args.draw).expanduser())
    print(json.dumps(summary))
    return 0
