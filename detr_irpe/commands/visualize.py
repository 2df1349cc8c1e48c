"""``detr-irpe visualize``: figures of trained checkpoints, written as PNG files (matplotlib, Agg; no window is opened)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli import (Parser, add_config_argument, add_device_argument, add_output_dir_argument, add_overrides_argument,
                  add_source_argument, check_output_dir, parse_command_line)

#: where the figures go without --output-dir
OUTPUT_DIR = "outputs/figures"

USAGE = """Figures of trained checkpoints, written as PNG files (matplotlib, Agg; no window is opened).

  # detections on images: a file, a folder, or the first N images of the configured val split
  detr-irpe visualize predictions --checkpoint ck.pth --images photos/
  detr-irpe visualize predictions --checkpoint ck.pth --val 8 --score-threshold 0.5 --output-dir outputs/val

  # encoder self-attention of the token under pixel (x, y), per layer and head; two checkpoints
  # (e.g. abs-only and iRPE) side by side
  detr-irpe visualize attention --checkpoint abs.pth --checkpoint irpe.pth --image cat.jpg \\
      --x 320 --y 200 --output-dir outputs/cat
  detr-irpe visualize attention --checkpoint irpe.pth --val-index 3

  # the learned iRPE tables of every encoder layer over relative offsets
  detr-irpe visualize rpe --checkpoint irpe.pth

Each figure is written into --output-dir (default outputs/figures) as a PNG named after its kind:
predictions.png, attention.png or rpe.png; the path is printed.

The model comes from the checkpoint's stored configuration (or --config); key=value overrides
change it, e.g. data.root=/data/coco for --val, or data.val_size=800 for the resize the model sees.
"""


def _common(p: argparse.ArgumentParser, kind: str, multiple: bool = False) -> None:
    """The options every figure takes; ``kind`` names the figure and its file."""
    if multiple:
        add_source_argument(p, multiple=True, help="checkpoint file, URL, zoo name or Hugging Face folder; "
                                                   "give it twice to compare two models side by side")
    else:
        add_source_argument(p)
    add_output_dir_argument(p, OUTPUT_DIR, f"folder of the figure, {kind}.png")
    add_config_argument(p)
    add_device_argument(p, "where the models run" if multiple else "where the model runs")
    add_overrides_argument(p)


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predictions", help="detections drawn on images")
    _common(p, "predictions")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="an image file or a folder of images")
    src.add_argument("--val", type=int, metavar="N", help="the first N images of the configured val split")
    p.add_argument("--start", type=int, default=0, help="with --val: index of the first val image (default 0)")
    p.add_argument("--max-images", type=int, default=16, help="at most this many images of a folder (default 16)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw detections with score >= this (0.5)")
    p.add_argument("--annotations", help="COCO JSON whose categories name the classes "
                                         "(default: the config's val annotations, or COCO names)")
    p.add_argument("--columns", type=int, default=4, help="images per row of the figure (default 4)")

    p = sub.add_parser("attention", help="encoder self-attention of one pixel's token, per layer and head")
    _common(p, "attention", multiple=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="an image file")
    src.add_argument("--val-index", type=int, metavar="I", help="image I of the configured val split")
    p.add_argument("--x", type=float, help="pixel column in the original image (default: the centre)")
    p.add_argument("--y", type=float, help="pixel row in the original image (default: the centre)")
    p.add_argument("--labels", nargs="+", help="titles of the checkpoints (default: file name and iRPE)")

    p = sub.add_parser("rpe", help="the learned iRPE tables of each encoder layer over relative offsets")
    _common(p, "rpe")
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..core.logs import setup_logging

    setup_logging()

    from ..analysis import attention_figure, detection_figure, rpe_figure
    from ..analysis.figures import save_png
    from ..core.errors import UsageError
    from ..inference.predict import Predictor, class_names, list_inputs, read_image
    from ..hub.loader import load_model

    out = check_output_dir(args.output_dir) / f"{args.command}.png"
    if args.command == "predictions":
        if args.images:
            files, _ = list_inputs(args.images)  # before the model: a missing path is reported first
        loaded = load_model(args.checkpoint, args.overrides, args.device, args.config)
        names = class_names(loaded, args.annotations)
        if args.images:
            items = detection_figure.file_items(files, args.max_images)
        else:
            if args.val <= 0:
                raise UsageError(f"--val must be > 0, got {args.val}")
            items = detection_figure.val_items(loaded, args.val, args.start)
        panels = detection_figure.detection_panels(Predictor(loaded), items, args.score_threshold)
        fig = detection_figure.predictions_figure(panels, names, loaded.label, args.columns)
    elif args.command == "attention":
        if len(args.checkpoint) > 2:
            raise UsageError(f"attention compares at most two checkpoints, got {len(args.checkpoint)}")
        if args.labels and len(args.labels) != len(args.checkpoint):
            raise UsageError(f"--labels gives {len(args.labels)} title(s) for {len(args.checkpoint)} checkpoint(s)")
        models = [load_model(c, args.overrides, args.device, args.config) for c in args.checkpoint]
        if args.image:
            image, name = read_image(args.image), Path(args.image).name
        else:
            name, image, _ = detection_figure.val_items(models[0], 1, args.val_index)[0]
        h, w = image.shape[-2:]
        x = (w - 1) / 2 if args.x is None else args.x
        y = (h - 1) / 2 if args.y is None else args.y
        labels = args.labels or [m.label for m in models]
        entries = [(label, image, attention_figure.attention_maps(Predictor(m), image, x, y)) for label, m in zip(labels, models)]
        fig = attention_figure.attention_figure(entries, f"encoder self-attention of the token under pixel ({x:g}, {y:g}) of {name}")
    else:
        loaded = load_model(args.checkpoint, args.overrides, args.device, args.config)
        tables = rpe_figure.rpe_tables(loaded.model, f"checkpoint {args.checkpoint}")
        fig = rpe_figure.rpe_figure(tables, loaded.label)
    out = save_png(fig, out)
    width, height = fig.canvas.get_width_height()
    print(f"figure: {out}")
    print(json.dumps({"figure": str(out), "width": width, "height": height}))
    return 0
