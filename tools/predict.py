#!/usr/bin/env python
"""Run a checkpoint on an image file or a folder of images and write COCO results.

  python tools/predict.py --checkpoint outputs/tiny_irpe/checkpoint_best.pth --input photos/ --output-dir preds
  python tools/predict.py --checkpoint detr-r50-e632da11.pth --input cat.jpg --score-threshold 0.7 --draw preds/drawn

Writes into --output-dir:
  results.json  COCO results list: {image_id, category_id, bbox [x, y, w, h] in original pixels, score}
  images.json   one entry per image read: {id, file_name, height, width, detections}, the
                file_name -> id mapping, and the skipped files with the reason
Image ids are the indices of the images in sorted file-name order (skipped files get none);
category_id is the model's class index, which is the dataset's category id. --score-threshold 0
(the default) keeps all queries of every image, as DETR's evaluation does. Files in a folder
that are not images are skipped with a warning and counted; the folder is not searched recursively.
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
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output-dir", default="predictions", help="where results.json and images.json go")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="keep detections with score >= this (default 0: all queries)")
    parser.add_argument("--draw", metavar="DIR", help="also write each image with its detections drawn into DIR")
    parser.add_argument("--annotations", help="COCO JSON whose categories name the classes in drawings "
                                              "(default: the config's val annotations, or COCO names)")
    parser.add_argument("--config", help="YAML config; without it the checkpoint's own configuration is used")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.val_size=800 (the resize the model sees)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from detr_irpe.analysis.predict import Predictor, class_names, list_inputs, load_model, predict_files, write_run

    if args.score_threshold < 0 or args.score_threshold > 1:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    files, skipped = list_inputs(args.input)  # a missing path stops here, before the model is loaded
    loaded = load_model(args.checkpoint, args.config, args.overrides, args.device)
    names = class_names(loaded.cfg, args.annotations) if args.draw else {}
    source = Path(args.input).expanduser()
    root = source if source.is_dir() else None
    run = predict_files(Predictor(loaded), files, args.score_threshold, names, args.draw, root)
    run.skipped = sorted(run.skipped + [{"file_name": p.name, "reason": why} for p, why in skipped],
                         key=lambda s: s["file_name"])
    if not run.images:
        raise ValueError(f"none of the {len(files)} image file(s) of {source} could be read")
    results, images = write_run(run, args.output_dir, checkpoint=str(args.checkpoint), input=str(source),
                                score_threshold=args.score_threshold)
    summary = {"images": len(run.images), "skipped": len(run.skipped), "detections": len(run.results),
               "results": str(results), "mapping": str(images)}
    if args.draw:
        summary["drawn"] = str(Path(args.draw).expanduser())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
