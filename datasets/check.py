#!/usr/bin/env python
"""Check a COCO-format dataset before training: JSON structure, ids, categories, boxes and image
files. Prints a summary; exit code 0 when the dataset is usable, 1 when it has errors.

    python datasets/check.py --images datasets/coco/val2017 \
        --annotations datasets/coco/annotations/instances_val2017.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detr_irpe.data.check import check_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder the image file_name entries are relative to")
    parser.add_argument("--annotations", required=True, help="COCO-format annotation JSON file")
    parser.add_argument("--no-decode", action="store_true",
                        help="only check that image files exist (fast); by default every image is decoded")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="model.num_classes to check category ids against (default: largest id + 1)")
    parser.add_argument("--examples", type=int, default=5, help="examples shown per kind of problem")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors for the exit code")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    report = check_dataset(args.images, args.annotations, decode=not args.no_decode, num_classes=args.num_classes,
                           progress=not args.no_progress, max_examples=args.examples)
    print(report.format())
    return 0 if report.ok and not (args.strict and report.warnings) else 1


if __name__ == "__main__":
    sys.exit(main())
