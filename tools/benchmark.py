#!/usr/bin/env python
"""Benchmarks that print figures (Markdown tables, or JSON with --json).

  encoder   iRPE attention cost in DETR-R50's encoder shape (forward, forward + backward, memory)
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per variant (median reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encoder", help="iRPE attention cost in the encoder")
    enc.add_argument("--batch", type=int, default=2)
    enc.add_argument("--height", type=int, default=25)
    enc.add_argument("--width", type=int, default=34)
    enc.add_argument("--layers", type=int, default=6)
    enc.add_argument("--kernel", default="auto", choices=["auto", "plain", "fused", "sdpa"])
    enc.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "encoder":
        from detr_irpe.benchmark import encoder

        encoder.run(args.batch, args.height, args.width, layers=args.layers, device=args.device,
                    repeats=args.repeats, memory=not args.no_memory, as_json=args.json, kernel=args.kernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
