"""``detr-irpe demo``: the main job on built-in data: two tiny DETRs trained, evaluated and compared."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .cli import Parser, add_overrides_argument, parse_command_line

#: (run name, shipped config, label)
VARIANTS = (("abs", "tiny/abs", "absolute only"),
            ("abs_irpe", "tiny/abs_irpe", "absolute + iRPE (rpe-2.0-product-ctx-1-k)"))

USAGE = """The main job on built-in data: generate the synthetic dataset, train two tiny DETRs (absolute
position encoding only, and absolute + iRPE rpe-2.0-product-ctx-1-k), evaluate both, and print
their COCO AP side by side with the AP50 curve over epochs.

Runs finished earlier are reused and interrupted ones resumed, so running it again is cheap.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--epochs", type=int, help="override train.epochs of the tiny configs")
    parser.add_argument("--sequential", action="store_true",
                        help="train one model at a time with all cores (default: both at once, one core each)")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..config import find_config, load_config
    from ..data.synthetic import ensure_synthetic
    from ..engine.run_folder import RunFolder
    from ..launch.local import RunSpec, run_local
    from ..core.logs import setup_logging

    setup_logging()
    overrides = list(args.overrides) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    out = Path(args.output_dir)
    specs = []
    for name, config, _ in VARIANTS:
        cfg = load_config(config, overrides)
        specs.append(RunSpec(name, str(find_config(config)), out / name, cfg.train.epochs, overrides))
    data = ensure_synthetic(cfg.data.synthetic)  # once, before the runs start
    print(f"synthetic dataset: {data}")
    cores = os.cpu_count() or 1
    parallel = 1 if args.sequential or cores < 2 else 2
    start = time.time()
    status = run_local(specs, parallel=parallel, threads=max(1, cores // parallel))
    failed = [n for n, s in status.items() if s]
    if failed:
        print(f"error: run(s) {', '.join(failed)} failed; see console.log in {out}", file=sys.stderr)
        return 1
    rows = [(label, RunFolder(spec.output_dir).read_log()) for (_, _, label), spec in zip(VARIANTS, specs)]
    print(f"\nTiny DETR on the synthetic val split ({cfg.data.synthetic.num_val} images), "
          f"{specs[0].epochs} epochs, {time.time() - start:.0f} s for this run of the demo\n")
    print("| model | AP | AP50 | AP75 | APs | APm | train min | img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, log in rows:
        last = log[-1]
        minutes = sum(r["train_seconds"] for r in log) / 60
        speed = sum(r["train_images"] for r in log) / max(1e-9, sum(r["train_seconds"] for r in log))
        print(f"| {label} | {last['AP']:.3f} | {last['AP50']:.3f} | {last['AP75']:.3f} | {last['APs']:.3f} | "
              f"{last['APm']:.3f} | {minutes:.1f} | {speed:.1f} |")
    print("\nAP50 after each epoch:")
    for label, log in rows:
        print(f"  {label:<45} " + " ".join(f"{r.get('AP50', float('nan')):.3f}" for r in log))
    return 0
