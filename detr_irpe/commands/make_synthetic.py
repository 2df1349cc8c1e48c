"""``detr-irpe make-synthetic``: generate the built-in synthetic COCO-format dataset."""

from __future__ import annotations

from .cli import Parser, add_overrides_argument, parse_command_line

#: the config section this command reads
SECTION = "data.synthetic"

USAGE = f"""Generate the built-in synthetic COCO-format dataset (shapes on varied backgrounds).

  detr-irpe make-synthetic                       # the demo's dataset
  detr-irpe make-synthetic {SECTION}.difficulty=0.7 {SECTION}.num_train=5000 {SECTION}.max_objects=5
  detr-irpe make-synthetic --config tiny/base    # the dataset a config trains on

Training generates it on first use as well; this tool is for choosing parameters, looking at the
images, or generating ahead of time. It prints the folder and the overrides that select it. The
parameters are the {SECTION} fields of the config (see configs/base.yaml), set as key=value.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--config", "--config-file", dest="config",
                        help="YAML config (path or shipped name) whose data.synthetic section to use")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import dataclasses

    from ..config import SyntheticConfig, load_config
    from ..core.errors import UsageError
    from ..data.synthetic import ensure_synthetic, split_files

    other = [o for o in args.overrides if not o.startswith(f"{SECTION}.")]
    if other:
        raise UsageError(f"make-synthetic: {other[0]} is not a {SECTION}.* setting; this command only makes the "
                         f"dataset")
    cfg = load_config(args.config, args.overrides).data.synthetic
    root = ensure_synthetic(cfg)
    print(f"dataset: {root}")
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        images, annotations = split_files(root, split)
        print(f"  {split + ':':<6} {images} ({count} images), {annotations}")
    defaults, chosen = dataclasses.asdict(SyntheticConfig()), dataclasses.asdict(cfg)
    changed = [f"{SECTION}.{k}={v}".replace(" ", "") for k, v in chosen.items() if defaults[k] != v]
    print("select it with: data.dataset=synthetic " + " ".join(changed))
    return 0
