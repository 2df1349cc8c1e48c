"""``detr-irpe compare``: runs compared: tables with seed-paired intervals and verdicts, plots."""

from __future__ import annotations

from .cli import Parser, parse_command_line

USAGE = """Compare runs: a table per variant (mean ± std over seeds of AP, AP50, AP75, APs, APm, APl, the
seed-paired AP difference to a baseline with its 95% interval, parameters, iRPE parameters,
seconds per epoch, inference images/s), the verdicts (better, worse, or no difference detected
at this number of seeds, for AP, AP50 and AP75), the seeds a +-1 AP interval needs, and plots
(AP against epoch, training losses, final AP and paired differences with 95% intervals).

  detr-irpe compare outputs/ablations/tiny_position
  detr-irpe compare outputs/run_a outputs/run_b --baseline run_a --markdown table.md --csv table.csv

Reads only what the runs wrote (log.jsonl, run_info.json, variant.json): runs trained elsewhere
compare the same way. Percentages in the table; fractions in the CSV.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("paths", nargs="+", help="study folders or run folders")
    parser.add_argument("--baseline", help="variant the AP difference is measured against (default: the study's, "
                                           "else the first)")
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    parser.add_argument("--csv", help="also write the numbers as CSV to this file")
    parser.add_argument("--half-width", type=float, default=1.0,
                        help="AP points either side that the seed estimate aims at (default 1)")
    parser.add_argument("--plots", help="folder for the PNG plots (default: the first path)")
    parser.add_argument("--no-plots", action="store_true")
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)

    from ..analysis.compare import (StudyError, aggregate, discover_runs, plot, seed_advice, table, to_csv,
                                    to_markdown, to_terminal, verdict_table)
    from ..core.io import atomic_write_text

    runs, study_baseline = discover_runs(args.paths)
    baseline = args.baseline or study_baseline
    names = list(dict.fromkeys(r.variant for r in runs))
    if baseline and baseline not in names:
        raise StudyError(f"--baseline {baseline!r} is not one of the variants found: {', '.join(names)}")
    rows = aggregate(runs, baseline)
    head, body = table(rows, baseline or names[0])
    print(to_terminal(head, body))
    half_width = args.half_width / 100
    verdicts = verdict_table(rows, half_width)
    advice = seed_advice(rows, half_width)
    if verdicts[1]:
        print(to_terminal(*verdicts))
        print("\n".join(advice) + "\n")
    if args.markdown:
        text = to_markdown(head, body)
        if verdicts[1]:
            text += "\n" + to_markdown(*verdicts) + "\n" + "".join(f"- {line}\n" for line in advice)
        atomic_write_text(args.markdown, text)
    if args.csv:
        atomic_write_text(args.csv, to_csv(rows))
    if not args.no_plots:
        for path in plot(rows, args.plots or args.paths[0]):
            print(f"plot: {path}")
    return 0
