"""``detr-irpe zoo``: the released DETR, iRPE-DETR, Conditional DETR and DAB-DETR models, with the
command that evaluates each."""

from __future__ import annotations

from .cli import Parser, parse_command_line

USAGE = """The released DETR, iRPE-DETR, Conditional DETR and DAB-DETR models (COCO val2017 box AP as
published). A zoo name is a model source for every command (evaluate, predict, visualize, export,
train --init-from): a DETR or iRPE-DETR file is downloaded once into the torch hub cache and checked
against its hash where one is known; Conditional DETR's and DAB-DETR's are on cloud drives and are
downloaded by hand (the error names the page and where to put the file), or given by path.

  detr-irpe zoo
  detr-irpe zoo --markdown
  detr-irpe evaluate --checkpoint detr-r50 data.dataset=coco data.root=/data/coco
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (as in the README)")
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..hub.zoo import ZOO_COLUMNS, format_zoo_table, zoo_table

    if not args.markdown:
        print(format_zoo_table())
        return 0
    print("| " + " | ".join(ZOO_COLUMNS) + " |")
    print("|" + "---|" * len(ZOO_COLUMNS))
    for row in zoo_table():
        print("| " + " | ".join([*row[:-1], f"`{row[-1]}`"]) + " |")
    return 0
