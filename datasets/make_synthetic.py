#!/usr/bin/env python
"""Generate the built-in synthetic COCO-format dataset (shapes on varied backgrounds).

  python datasets/make_synthetic.py                       # the demo's dataset
  python datasets/make_synthetic.py --difficulty 0.7 --num-train 5000 --max-objects 5

Training generates it on first use as well; this tool is for choosing parameters, looking at the
images, or generating ahead of time. It prints the folder and the overrides that select it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from detr_irpe.config import ConfigError, SyntheticConfig, config_from_dict
    from detr_irpe.data.synthetic import ensure_synthetic

    d = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=d.cache_dir, help="where datasets are cached")
    parser.add_argument("--num-train", type=int, default=d.num_train)
    parser.add_argument("--num-val", type=int, default=d.num_val)
    parser.add_argument("--image-size", type=int, nargs=2, default=d.image_size, metavar=("SHORT", "LONG"))
    parser.add_argument("--num-classes", type=int, default=d.num_classes)
    parser.add_argument("--min-objects", type=int, default=d.min_objects)
    parser.add_argument("--max-objects", type=int, default=d.max_objects)
    parser.add_argument("--difficulty", type=float, default=d.difficulty,
                        help="0: flat backgrounds, colour tells the class; 1: clutter, shared colours, small rotated objects")
    parser.add_argument("--seed", type=int, default=d.seed)
    a = parser.parse_args(argv)
    synthetic = {"cache_dir": a.cache_dir, "num_train": a.num_train, "num_val": a.num_val,
                 "image_size": list(a.image_size), "num_classes": a.num_classes, "min_objects": a.min_objects,
                 "max_objects": a.max_objects, "difficulty": a.difficulty, "seed": a.seed}
    try:
        cfg = config_from_dict({"data": {"synthetic": synthetic}}, "command line")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = ensure_synthetic(cfg.data.synthetic)
    print(f"dataset: {root}")
    print(f"  train: {root / 'train'} ({a.num_train} images), {root / 'annotations' / 'instances_train.json'}")
    print(f"  val:   {root / 'val'} ({a.num_val} images), {root / 'annotations' / 'instances_val.json'}")
    defaults = {f"data.synthetic.{k}": v for k, v in vars(SyntheticConfig()).items()}
    chosen = {f"data.synthetic.{k}": v for k, v in synthetic.items()}
    changed = [f"{k}={v}".replace(" ", "") for k, v in chosen.items() if defaults[k] != v]
    print("select it with: data.dataset=synthetic " + " ".join(changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
