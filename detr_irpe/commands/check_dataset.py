"""``detr-irpe check-dataset``: a COCO-format dataset checked before training."""

from __future__ import annotations

from .cli import Parser, parse_command_line

USAGE = """Check a COCO-format dataset before training: JSON structure, ids, categories, boxes and image
files. Prints a summary; exit code 0 when the dataset is usable, 1 when it has errors.

    detr-irpe check-dataset --images datasets/coco/val2017 \
        --annotations datasets/coco/annotations/instances_val2017.json
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--images", required=True, help="folder the image file_name entries are relative to")
    parser.add_argument("--annotations", required=True, help="COCO-format annotation JSON file")
    parser.add_argument("--no-decode", action="store_true",
                        help="only check that image files exist (fast); by default every image is decoded")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="model.num_classes to check category ids against (default: largest id + 1)")
    parser.add_argument("--examples", type=int, default=5, help="examples shown per kind of problem")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors for the exit code")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..data.check import check_dataset

    report = check_dataset(args.images, args.annotations, decode=not args.no_decode, num_classes=args.num_classes,
                           progress=not args.no_progress, max_examples=args.examples)
    print(report.format())
    return 0 if report.ok and not (args.strict and report.warnings) else 1
