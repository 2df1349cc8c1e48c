"""``detr-irpe make-synthetic``: generate the built-in synthetic COCO-format dataset."""

from __future__ import annotations


from ..cli import Parser, parse_command_line

USAGE = """Generate the built-in synthetic COCO-format dataset (shapes on varied backgrounds).

  detr-irpe make-synthetic                       # the demo's dataset
  detr-irpe make-synthetic --difficulty 0.7 --num-train 5000 --max-objects 5

Training generates it on first use as well; this tool is for choosing parameters, looking at the
images, or generating ahead of time. It prints the folder and the overrides that select it.
Options left out keep the defaults of data.synthetic (see configs/base.yaml).
"""

#: the data.synthetic fields the options set (option --num-train sets num_train)
FIELDS = ("cache_dir", "num_train", "num_val", "image_size", "num_classes", "min_objects", "max_objects",
          "difficulty", "seed")


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--cache-dir", help="where datasets are cached")
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--num-val", type=int)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("SHORT", "LONG"))
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--min-objects", type=int)
    parser.add_argument("--max-objects", type=int)
    parser.add_argument("--difficulty", type=float,
                        help="0: flat backgrounds, colour tells the class; 1: clutter, shared colours, small rotated "
                             "objects")
    parser.add_argument("--seed", type=int)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import dataclasses

    from ..config import SyntheticConfig, config_from_dict
    from ..data.synthetic import ensure_synthetic, split_files

    chosen = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    cfg = config_from_dict({"data": {"synthetic": chosen}}, "command line").data.synthetic
    root = ensure_synthetic(cfg)
    print(f"dataset: {root}")
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        images, annotations = split_files(root, split)
        print(f"  {split + ':':<6} {images} ({count} images), {annotations}")
    defaults = dataclasses.asdict(SyntheticConfig())
    changed = [f"data.synthetic.{k}={v}".replace(" ", "") for k, v in chosen.items() if defaults[k] != v]
    print("select it with: data.dataset=synthetic " + " ".join(changed))
    return 0
