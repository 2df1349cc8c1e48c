"""``detr-irpe attention``: how far the encoder attends, per layer and head, for one or more models."""

from __future__ import annotations

from .cli import (Parser, add_device_argument, add_output_dir_argument, add_overrides_argument, add_source_argument,
                  check_output_dir, parse_command_line)
from .naming import default_label

#: where the figures and the JSON go without --output-dir
OUTPUT_DIR = "outputs/attention"

USAGE = """The mean attention distance (feature-map cells, attention-weighted) per encoder layer and head
over N validation images, and the attention mass as a function of the relative offset (dr, dc),
for one model or several side by side; dashed lines give the distance of uniform attention.

  detr-irpe attention --checkpoint outputs/tiny_abs/checkpoint.pth --checkpoint outputs/tiny_abs_irpe/checkpoint.pth \\
      --labels abs abs+iRPE --images 100 --output-dir outputs/attention
  detr-irpe attention --checkpoint irpe-detr-r50-9x9-300e data.dataset=coco data.root=/data/coco \\
      --output-dir outputs/attention_irpe

Every model runs on the val split of the first one's config (key=value overrides change it).
Writes attention_distance.png, attention_offsets.png and attention_distance.json into --output-dir
(default outputs/attention). Without --labels a model is named after its source: the file's stem,
the run folder's name for a run's checkpoint*.pth, or the zoo name.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    add_source_argument(parser, multiple=True)
    parser.add_argument("--labels", nargs="+", help="one name per model, in the order given")
    parser.add_argument("--images", type=int, default=100, help="validation images to average over (default 100)")
    parser.add_argument("--max-offset", type=int, default=None,
                        help="offsets up to this many cells either way are kept (default 12)")
    add_output_dir_argument(parser, OUTPUT_DIR, "folder for the figures and the JSON")
    add_device_argument(parser, "where the models run")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import json

    from ..analysis.attention_distance import MAX_OFFSET, distance_figure, measure, offset_figure, summary_lines
    from ..analysis.figures import save_png
    from ..data.build import build_dataset, build_loader
    from ..core.errors import UsageError
    from ..hub.loader import load_model
    from ..core.io import atomic_write_json
    from ..core.logs import setup_logging

    setup_logging()
    labels = args.labels or [default_label(s) for s in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        raise UsageError(f"attention: --labels names {len(labels)} models, {len(args.checkpoint)} were given")
    if args.images <= 0:
        raise UsageError(f"attention: --images must be > 0, got {args.images}")
    max_offset = MAX_OFFSET if args.max_offset is None else args.max_offset
    if max_offset <= 0:
        raise UsageError(f"attention: --max-offset must be > 0, got {max_offset}")
    out = check_output_dir(args.output_dir)
    loaded = [load_model(s, args.overrides, device=args.device) for s in args.checkpoint]
    cfg = loaded[0].cfg
    loader = build_loader(build_dataset(cfg, "val"), cfg, train=False)
    entries = [(label, measure(m.model, loader, m.device, args.images, max_offset)) for label, m in zip(labels, loaded)]
    atomic_write_json(out / "attention_distance.json",
                      {label: {"source": str(src), **d.to_json()}
                       for (label, d), src in zip(entries, args.checkpoint)}, indent=1)
    for name, fig in (("attention_distance.png", distance_figure(entries)),
                      ("attention_offsets.png", offset_figure(entries))):
        print(f"figure: {save_png(fig, out / name)}")
    print("\n".join(summary_lines(entries)))
    print(json.dumps({"attention": str(out / "attention_distance.json")}))
    return 0
